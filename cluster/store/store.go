// Package store keeps the gateway document in a Raft cluster
// (hashicorp/raft, raft-boltdb log and stable store, file snapshots) that every
// Meridian node joins, voters and non-voters alike.
//
// One TCP listener per node carries both Raft RPCs and a small forwarding
// protocol: after the (mutual) TLS handshake the dialer writes one byte, 'R'
// for Raft or 'F' for forwarding. Writes (Apply, membership changes) work on
// any node: a follower forwards them to the leader, and Apply returns only
// once the calling node's own state machine has applied the entry
// (read-your-writes). Versions are assigned by the state machine (previous+1),
// so every node agrees on them, and optimistic concurrency (ifVersion) is
// checked there too, deterministically.
//
// Every applied entry also rewrites a small local state file under
// DataDir/raft, so a node that restarts serves its last applied document at
// once (before it hears from a leader) and never goes back to an older one.
package store

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"go.etcd.io/bbolt"

	"github.com/meridian-gw/meridian/internal/dirlock"
)

// Errors. Test with errors.Is: the returned errors wrap these with detail.
var (
	// ErrNotLeader: a leader-only operation reached a node that is not (or no
	// longer) the leader. Store methods retry it internally; it surfaces only
	// from the forwarding protocol.
	ErrNotLeader = errors.New("store: not the cluster leader")
	// ErrNoLeader: no leader could be reached before the context ended: the
	// node is cut off from a quorum (minority side of a partition, or too many
	// voters down). Writes are refused; reads (Current) keep serving the last
	// applied document.
	ErrNoLeader = errors.New("store: no cluster leader reachable (no quorum?)")
	// ErrVersionConflict: Apply named a version that is no longer current.
	ErrVersionConflict = errors.New("store: version conflict")
	// ErrUnknownOutcome: the write was sent but its result was lost (leader
	// lost leadership or connection broke mid-request); it may or may not
	// become visible. Re-read Current before retrying; use ifVersion to make
	// the retry safe.
	ErrUnknownOutcome = errors.New("store: write outcome unknown")
	// ErrNotApplied: the write was committed (it stands, and every node
	// will apply it) but this node had not applied it when ctx ended.
	ErrNotApplied = errors.New("store: committed, not yet applied on this node")
	// ErrClosed: the store is closed.
	ErrClosed = errors.New("store: closed")
)

// Config configures a Store. ID, BindAddr and DataDir are required.
type Config struct {
	ID            string // Raft server ID (the node name); stable across restarts
	BindAddr      string // cluster TCP listen address, e.g. 127.0.0.2:7001 (port 0: see Addr)
	AdvertiseAddr string // address peers dial; default: the bound address
	DataDir       string // Raft state lives in DataDir/raft
	// TLS secures Raft and forwarding (mutual TLS, see cluster/pki). Nil means
	// plaintext: only for tests and development; Open logs a warning.
	TLS    *tls.Config
	Logger *slog.Logger // default slog.Default()
	// ClusterID, if set, returns the id of the cluster this node belongs
	// to ("": not known yet). With TLS, connections to and from the
	// cluster port carry it, and a node refuses those of another
	// cluster (mux.go).
	ClusterID func() string
	// PeerKnown, if set, reports whether gossip knows a node of this name
	// (alive or suspect). With TLS, Raft's connections and forwarded
	// requests (but has_state, which a new node asks) are taken only from
	// a certificate named for a node in Raft's configuration or known to
	// gossip: any certificate of the cluster CA, under any name, could
	// otherwise commit documents and change the voters (an outside check).
	PeerKnown func(name string) bool

	// Raft timing. Zero values take hashicorp/raft's defaults (heartbeat and
	// election 1s, leader lease 500ms, commit 50ms), suited to LAN and to
	// inter-region round trips up to a few hundred milliseconds. Tests shorten
	// them.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	// Snapshots: after SnapshotThreshold new entries, checked every
	// SnapshotInterval; TrailingLogs entries are kept after a snapshot so a
	// briefly absent follower catches up from the log. Zero: raft defaults
	// (8192, 120s, 10240).
	SnapshotThreshold uint64
	SnapshotInterval  time.Duration
	TrailingLogs      uint64
	// TransportTimeout bounds Raft RPC I/O (default 10s).
	TransportTimeout time.Duration
}

// Server is one member of the Raft configuration.
type Server struct {
	ID    string
	Addr  string
	Voter bool
}

// Applied is the result of a write: the document version the state machine
// assigned, the Raft index of the entry and the document's hash.
type Applied struct {
	Version uint64
	Index   uint64
	Hash    string
}

// Document is an applied gateway document.
type Document struct {
	Version uint64
	Hash    string
	Raw     []byte
}

// Current is the latest document applied on this node.
type Current struct {
	Applied
	Raw []byte
}

// Store is one node's handle on the cluster's Raft store.
type Store struct {
	cfg     Config
	log     *slog.Logger
	addr    string
	fsm     *fsm
	logs    *raftboltdb.BoltStore // the log and stable store
	lock    *os.File
	raft    *raft.Raft
	trans   *raft.NetworkTransport
	snaps   raft.SnapshotStore
	mux     *mux
	closing chan struct{}
	quiet   atomic.Bool // see Quiet
	// raftDown is closed once raft.Shutdown has returned: a future raft has
	// not answered by then never will be (see releaseOnShutdown).
	raftDown chan struct{}

	closeOnce sync.Once
	closeErr  error
}

// Open starts this node's Raft instance: it recovers state from DataDir,
// listens on BindAddr and takes part in the cluster it finds there. A brand
// new node waits until BootstrapCluster is called on it (or on a node that
// then adds it as a voter or non-voter).
func Open(cfg Config) (*Store, error) {
	if cfg.ID == "" || cfg.BindAddr == "" || cfg.DataDir == "" {
		return nil, errors.New("store: Config.ID, BindAddr and DataDir are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	// The caller's logger already names the node.
	if cfg.TLS == nil {
		log.Warn("cluster: Raft and forwarding run in PLAINTEXT without authentication (Config.TLS is nil); use only for tests and development")
	}
	if cfg.TransportTimeout == 0 {
		cfg.TransportTimeout = 10 * time.Second
	}

	raftDir := filepath.Join(cfg.DataDir, "raft")
	if err := os.MkdirAll(raftDir, 0o700); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}

	s := &Store{cfg: cfg, log: log, closing: make(chan struct{}), raftDown: make(chan struct{})}
	var cleanup []func()
	fail := func(err error) (*Store, error) {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
		return nil, err
	}

	var err error
	s.fsm, err = newFSM(raftDir, func(err error) {
		log.Error("cluster: cannot persist local state file (state stays in Raft)", "error", err)
	})
	if err != nil {
		return nil, err
	}
	lock, err := lockDir(raftDir)
	if err != nil {
		return nil, err
	}
	s.lock = lock
	cleanup = append(cleanup, func() { lock.Close() })
	// The log and stable store: raft-boltdb (a bbolt file), as Consul
	// keeps it. (raft-wal, before, lost a node for good at the first
	// truncation of its log's tail, an ordinary leader change: its
	// segment was marked sealed without its index, and the log could not
	// be read again; hashicorp/raft-wal#31, fixed after its last release.)
	if err := migrateWAL(raftDir, log); err != nil {
		return fail(err)
	}
	w, err := openLogStore(raftDir)
	if err != nil {
		return fail(fmt.Errorf("store: open the Raft log: %w", err))
	}
	s.logs = w
	cleanup = append(cleanup, func() { w.Close() })

	snaps, err := raft.NewFileSnapshotStoreWithLogger(raftDir, 2, newHclog(log, "raft-snapshot", s.isClosing, s.quiet.Load))
	if err != nil {
		return fail(fmt.Errorf("store: snapshot store: %w", err))
	}
	s.snaps = snaps

	ln, err := net.Listen("tcp", cfg.BindAddr)
	if err != nil {
		return fail(fmt.Errorf("store: listen: %w", err))
	}
	cleanup = append(cleanup, func() { ln.Close() })
	adv := cfg.AdvertiseAddr
	if adv == "" {
		a := ln.Addr().(*net.TCPAddr)
		if a.IP.IsUnspecified() {
			return fail(fmt.Errorf("store: BindAddr %s is unspecified; set AdvertiseAddr", cfg.BindAddr))
		}
		adv = a.String()
	}
	advAddr, err := net.ResolveTCPAddr("tcp", adv)
	if err != nil {
		return fail(fmt.Errorf("store: AdvertiseAddr: %w", err))
	}
	if advAddr.IP == nil || advAddr.IP.IsUnspecified() {
		return fail(fmt.Errorf("store: AdvertiseAddr %s is not an address peers can dial", adv))
	}
	s.addr = advAddr.String()

	s.mux = newMux(ln, advAddr, cfg.TLS, log)
	s.mux.clusterID = func() string {
		if e, ok := s.KVGet(ClusterIDKey); ok && len(e.Value) > 0 {
			return string(e.Value)
		}
		if cfg.ClusterID != nil {
			return cfg.ClusterID()
		}
		return ""
	}
	cleanup = append(cleanup, s.mux.close)
	stream := &streamLayer{m: s.mux, shut: make(chan struct{})}
	s.trans = raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 3,
		// No pipelining: its replication goroutines can deadlock in
		// raft's transport (the pipeline's response decoder blocked on a
		// channel nobody reads once the pipeline is being torn down),
		// holding Shutdown for ever (an outside check saw a drain hang 10
		// minutes after a flapping link). Config writes are few: each
		// request synchronous costs nothing that matters.
		MaxRPCsInFlight: 1,
		Timeout:         cfg.TransportTimeout,
		Logger:          newHclog(log, "raft-net", s.isClosing, s.quiet.Load),
	})
	cleanup = append(cleanup, func() { s.trans.Close() })

	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = newHclog(log, "raft", s.isClosing, s.quiet.Load)
	rc.NoLegacyTelemetry = true
	setDur(&rc.HeartbeatTimeout, cfg.HeartbeatTimeout)
	setDur(&rc.ElectionTimeout, cfg.ElectionTimeout)
	setDur(&rc.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout)
	setDur(&rc.CommitTimeout, cfg.CommitTimeout)
	setDur(&rc.SnapshotInterval, cfg.SnapshotInterval)
	if cfg.SnapshotThreshold != 0 {
		rc.SnapshotThreshold = cfg.SnapshotThreshold
	}
	if cfg.TrailingLogs != 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if rc.LeaderLeaseTimeout > rc.HeartbeatTimeout {
		rc.LeaderLeaseTimeout = rc.HeartbeatTimeout
	}
	if err := raft.ValidateConfig(rc); err != nil {
		return fail(fmt.Errorf("store: raft config: %w", err))
	}
	if recovered, err := recoverIfAsked(rc, raftDir, w, snaps, s.trans, cfg.ID, log); err != nil {
		return fail(err)
	} else if recovered {
		// The recovery replayed the log into a state machine of its own,
		// over the same state file: this one starts again from that.
		if s.fsm, err = newFSM(raftDir, s.fsm.persistErr); err != nil {
			return fail(err)
		}
	}
	if s.fsm, err = checkStateAgainstLog(raftDir, s.fsm, w, snaps, log); err != nil {
		return fail(err)
	}
	s.raft, err = raft.NewRaft(rc, s.fsm, w, w, snaps, s.trans)
	if err != nil {
		return fail(fmt.Errorf("store: start raft: %w", err))
	}
	s.mux.allowRaft = s.peerAllowed
	s.mux.start(s.serveForward)
	st := s.fsm.current()
	log.Info("cluster: raft store open", "addr", s.addr, "tls", cfg.TLS != nil,
		"version", st.Version, "applied_index", st.Index)
	return s, nil
}

// checkStateAgainstLog returns f, or a new empty state machine if f's
// state file says entries were applied that neither the log nor a
// snapshot holds: the log was lost or replaced (raft.db removed, or
// restored from an older copy), and its entries, numbered from where it
// now ends, are not the ones the state file counted. Kept, the state would
// take the new entries below its index as already applied (writes refused
// as "already applied" until the log passed it, nodes serving different
// versions for the same document for good: an outside check). The state
// file is set aside (fsm-state.json.orphaned-UNIXTIME); the node serves
// what it last installed until the cluster's log brings it up to date.
func checkStateAgainstLog(dir string, f *fsm, logs raft.LogStore, snaps raft.SnapshotStore, log *slog.Logger) (*fsm, error) {
	applied := f.current().Index
	if applied == 0 {
		return f, nil
	}
	top, err := logs.LastIndex()
	if err != nil {
		return nil, fmt.Errorf("store: read the Raft log: %w", err)
	}
	metas, err := snaps.List()
	if err != nil {
		return nil, fmt.Errorf("store: list snapshots: %w", err)
	}
	if len(metas) > 0 && metas[0].Index > top {
		top = metas[0].Index
	}
	if applied <= top {
		return f, nil
	}
	aside := filepath.Join(dir, fmt.Sprintf("%s.orphaned-%d", stateFile, time.Now().Unix()))
	for i := 2; ; i++ {
		if _, err := os.Lstat(aside); errors.Is(err, os.ErrNotExist) {
			break // not one set aside within the same second
		}
		aside = filepath.Join(dir, fmt.Sprintf("%s.orphaned-%d-%d", stateFile, time.Now().Unix(), i))
	}
	if err := os.Rename(filepath.Join(dir, stateFile), aside); err != nil {
		return nil, fmt.Errorf("store: set aside a state file its Raft log does not reach: %w", err)
	}
	log.Error("cluster: the state file says Raft entries were applied that the Raft log does not hold (raft.db lost or replaced): starting from an empty state, to be brought up to date by the cluster's log; the old state file is kept aside",
		"applied_index", applied, "log_ends_at", top, "kept_as", aside)
	return newFSM(dir, f.persistErr)
}

// openLogStore opens (or creates) the log and stable store in raftDir.
func openLogStore(raftDir string) (*raftboltdb.BoltStore, error) {
	return raftboltdb.New(raftboltdb.Options{Path: filepath.Join(raftDir, "raft.db"), BoltOptions: &bbolt.Options{Timeout: time.Second}})
}

// lockDir takes an exclusive, non-blocking lock on dir/LOCK so that a second
// store (in this or another process) on the same data dir fails at once
// instead of corrupting it or blocking on the log store's own lock.
func lockDir(dir string) (*os.File, error) {
	f, err := dirlock.Lock(filepath.Join(dir, "LOCK"))
	if errors.Is(err, dirlock.ErrInUse) {
		return nil, fmt.Errorf("store: data dir %s is in use by another store", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	return f, nil
}

func setDur(dst *time.Duration, v time.Duration) {
	if v > 0 {
		*dst = v
	}
}

// Addr is the advertised cluster address of this node (the one other nodes
// put in the Raft configuration).
func (s *Store) Addr() string { return s.addr }

// peerAllowed reports whether the node named by a verified certificate
// may use Raft and forwarding (see Config.PeerKnown). Without TLS there is
// no name to go by: all are taken (development on one machine).
func (s *Store) peerAllowed(name string) bool {
	if s.cfg.TLS == nil {
		return true
	}
	if name == "" {
		return false
	}
	if s.cfg.PeerKnown != nil && s.cfg.PeerKnown(name) {
		return true
	}
	servers, err := s.Servers()
	if err != nil {
		return false
	}
	for _, sv := range servers {
		if sv.ID == name {
			return true
		}
	}
	// A store without gossip to ask (tests of the store alone), not yet
	// in any configuration, takes the leader that seats it.
	return s.cfg.PeerKnown == nil && len(servers) == 0
}

// Probe connects to a peer's cluster address as Raft would, completing
// the TLS handshake both ways, and returns the name its certificate is
// for ("" without TLS).
func (s *Store) Probe(ctx context.Context, addr string) (string, error) {
	return s.mux.probe(ctx, addr)
}

// HasState reports whether this node has Raft state (a log, a snapshot or
// a term): bootstrapped, or joined, before.
func (s *Store) HasState() bool {
	has, err := raft.HasExistingState(s.logs, s.logs, s.snaps)
	return err == nil && has
}

// BootstrapCluster writes the initial Raft configuration. Call it on one node
// (or on all initial nodes with the same list). It is a no-op returning nil
// when this node already has Raft state.
func (s *Store) BootstrapCluster(servers []Server) error {
	has, err := raft.HasExistingState(s.logs, s.logs, s.snaps)
	if err != nil {
		return fmt.Errorf("store: bootstrap: %w", err)
	}
	if has {
		return nil
	}
	var c raft.Configuration
	for _, sv := range servers {
		sfx := raft.Nonvoter
		if sv.Voter {
			sfx = raft.Voter
		}
		c.Servers = append(c.Servers, raft.Server{Suffrage: sfx, ID: raft.ServerID(sv.ID), Address: raft.ServerAddress(sv.Addr)})
	}
	err = s.raft.BootstrapCluster(c).Error()
	if errors.Is(err, raft.ErrCantBootstrap) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("store: bootstrap: %w", err)
	}
	return nil
}

// Apply replaces the gateway document with raw (already validated by the
// caller); its hash is the hex SHA-256 of raw. See ApplyWithHash.
func (s *Store) Apply(ctx context.Context, raw []byte, ifVersion uint64) (Applied, error) {
	sum := sha256.Sum256(raw)
	return s.ApplyWithHash(ctx, raw, hex.EncodeToString(sum[:]), ifVersion)
}

// NoDocument, given as ifVersion to Apply and ApplyWithHash, applies the
// document only if the cluster has none yet. (A node of a release before it
// reads it as a version never reached, and refuses rather than replace.)
const NoDocument = ^uint64(0)

// ApplyWithHash replaces the gateway document with raw, recording the
// caller's hash (for example a hash of the canonical form). It works on any
// node: a follower forwards the write to the leader. It returns once the entry
// is committed AND applied on this node, with the version the state machine
// assigned. ifVersion != 0 makes the write conditional: if the current version
// is another, nothing changes and the error wraps ErrVersionConflict. When no
// leader is reachable before ctx ends, the error wraps ErrNoLeader.
func (s *Store) ApplyWithHash(ctx context.Context, raw []byte, hash string, ifVersion uint64) (Applied, error) {
	body, err := json.Marshal(docCommand{Raw: raw, Hash: hash, IfVersion: ifVersion})
	if err != nil {
		return Applied{}, err
	}
	cmd := append([]byte{opSetDocument}, body...)
	resp, err := s.submit(ctx, &fwdRequest{Op: opApply, Cmd: cmd})
	a := Applied{Version: resp.Version, Index: resp.Index, Hash: resp.Hash}
	if resp.Index > 0 {
		// Committed (even a conflict is a committed no-op): wait for our own
		// FSM so the caller reads its write (or the version that won). A
		// cancellation no longer stops the wait (the write stands: it was
		// meant to stop a wait for a leader that would never come), only
		// ctx's deadline.
		wctx := context.WithoutCancel(ctx)
		if dl, ok := ctx.Deadline(); ok {
			var cancel context.CancelFunc
			wctx, cancel = context.WithDeadline(wctx, dl)
			defer cancel()
		}
		if werr := s.waitApplied(wctx, resp.Index); werr != nil {
			if err == nil {
				err = fmt.Errorf("%w: committed at index %d (version %d): %w", ErrNotApplied, resp.Index, resp.Version, werr)
			}
		}
	}
	return a, err
}

// waitApplied blocks until this node's FSM has applied index.
func (s *Store) waitApplied(ctx context.Context, index uint64) error {
	for {
		cur, ch := s.fsm.waitCh()
		if cur >= index {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return ErrClosed
		}
	}
}

// Current returns the latest document applied on this node (Version 0 and no
// Raw before the first write). It never blocks on the cluster, so it keeps
// serving on the minority side of a partition.
func (s *Store) Current() Current {
	st := s.fsm.current()
	return Current{Applied: Applied{Version: st.Version, Index: st.Index, Hash: st.Hash}, Raw: st.Raw}
}

// Subscribe registers fn to receive every document applied on this node, in
// apply order, from the FSM goroutine (restores from snapshots included). If
// the node already holds a document (recovered on startup, or applied
// earlier), fn is first called with it before Subscribe returns, so a
// restarted node sees its last version before serving. fn must be quick
// (it delays the FSM) and must not call Subscribe.
func (s *Store) Subscribe(fn func(Document)) { s.fsm.subscribe(fn) }

// KVEntry is one key of the replicated key/value space.
type KVEntry struct {
	Key      string
	Value    []byte
	ModIndex uint64 // Raft index of the write that set it
}

// KVPut sets key to value (unconditionally) through the leader and returns
// once applied on this node, with the entry's new ModIndex.
func (s *Store) KVPut(ctx context.Context, key string, value []byte) (uint64, error) {
	return s.kv(ctx, kvCommand{Key: key, Value: value})
}

// KVPutCAS sets key only if its ModIndex is still modIndex (0: only if the
// key does not exist); otherwise the error wraps ErrVersionConflict. This is
// the building block for locks.
func (s *Store) KVPutCAS(ctx context.Context, key string, value []byte, modIndex uint64) (uint64, error) {
	return s.kv(ctx, kvCommand{Key: key, Value: value, CAS: true, IfIndex: modIndex})
}

// KVDelete removes key (no error if absent).
func (s *Store) KVDelete(ctx context.Context, key string) error {
	_, err := s.kv(ctx, kvCommand{Key: key, Delete: true})
	return err
}

// KVDeleteCAS removes key only if its ModIndex is still modIndex.
func (s *Store) KVDeleteCAS(ctx context.Context, key string, modIndex uint64) error {
	_, err := s.kv(ctx, kvCommand{Key: key, Delete: true, CAS: true, IfIndex: modIndex})
	return err
}

func (s *Store) kv(ctx context.Context, c kvCommand) (uint64, error) {
	if c.Key == "" {
		return 0, errors.New("store: empty key")
	}
	body, err := json.Marshal(c)
	if err != nil {
		return 0, err
	}
	resp, err := s.submit(ctx, &fwdRequest{Op: opApply, Cmd: append([]byte{opKV}, body...)})
	if resp.Index > 0 {
		if werr := s.waitApplied(ctx, resp.Index); werr != nil && err == nil {
			err = fmt.Errorf("store: committed at index %d but not yet applied on this node: %w", resp.Index, werr)
		}
	}
	return resp.Version, err
}

// KVGet reads key from this node's applied state.
func (s *Store) KVGet(key string) (KVEntry, bool) {
	st := s.fsm.current()
	it, ok := st.KV[key]
	if !ok {
		return KVEntry{}, false
	}
	return KVEntry{Key: key, Value: it.Value, ModIndex: it.ModIndex}, true
}

// KVList returns the entries whose key starts with prefix, sorted by key.
func (s *Store) KVList(prefix string) []KVEntry {
	st := s.fsm.current()
	var out []KVEntry
	for k, it := range st.KV {
		if strings.HasPrefix(k, prefix) {
			out = append(out, KVEntry{Key: k, Value: it.Value, ModIndex: it.ModIndex})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// AddVoter adds (or promotes) a voting member. Works from any node. ctx
// ends the wait (a closing caller's), which is bounded by
// membershipTimeout anyway.
func (s *Store) AddVoter(ctx context.Context, id, addr string) error {
	return s.membership(ctx, &fwdRequest{Op: opAddVoter, ID: id, Addr: addr})
}

// AddNonvoter adds a member that receives the log but does not vote.
func (s *Store) AddNonvoter(ctx context.Context, id, addr string) error {
	return s.membership(ctx, &fwdRequest{Op: opAddNonvoter, ID: id, Addr: addr})
}

// DemoteVoter makes a voter a non-voter (it keeps receiving the log).
func (s *Store) DemoteVoter(ctx context.Context, id string) error {
	return s.membership(ctx, &fwdRequest{Op: opDemoteVoter, ID: id})
}

// RemoveServer removes a member from the Raft configuration.
func (s *Store) RemoveServer(ctx context.Context, id string) error {
	return s.membership(ctx, &fwdRequest{Op: opRemoveServer, ID: id})
}

// membershipTimeout bounds the wait for a membership change.
const membershipTimeout = 30 * time.Second

func (s *Store) membership(ctx context.Context, req *fwdRequest) error {
	ctx, cancel := context.WithTimeout(ctx, membershipTimeout)
	defer cancel()
	_, err := s.submit(ctx, req)
	return err
}

// Servers returns the current Raft configuration as this node knows it.
func (s *Store) Servers() ([]Server, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, fmt.Errorf("store: configuration: %w", err)
	}
	var out []Server
	for _, sv := range f.Configuration().Servers {
		out = append(out, Server{ID: string(sv.ID), Addr: string(sv.Address), Voter: sv.Suffrage == raft.Voter})
	}
	return out, nil
}

// Leader returns the current leader's ID and address as this node knows them
// ("" when unknown).
func (s *Store) Leader() (id, addr string) {
	a, i := s.raft.LeaderWithID()
	return string(i), string(a)
}

// State is this node's Raft role: "Leader", "Follower", "Candidate" or
// "Shutdown".
func (s *Store) State() string { return s.raft.State().String() }

// ClusterIDKey is the key of the cluster's id in the store (made by the
// first leader, see cluster.idLoop).
const ClusterIDKey = "cluster/id"

// CatchUp waits until this node has applied everything the cluster had
// committed when it was called: it asks the leader (a read index, confirmed
// by a barrier through the log) for the last entry applied there, then
// waits for its own state machine to apply it. It fails while no leader can
// be reached, as long as ctx lasts.
func (s *Store) CatchUp(ctx context.Context) error {
	resp, err := s.submit(ctx, &fwdRequest{Op: opReadIndex})
	if err != nil {
		return err
	}
	return s.waitApplied(ctx, resp.Index)
}

// AppliedIndex is the Raft index of the last entry applied to this node's
// state machine.
func (s *Store) AppliedIndex() uint64 {
	idx, _ := s.fsm.waitCh()
	return idx
}

// Leave removes this node from the Raft configuration through the leader
// (handing leadership over first when it is the leader), then closes the
// store. The store is closed even if the removal fails.
func (s *Store) Leave(ctx context.Context) error {
	s.HandOverLeadership()
	_, err := s.submit(ctx, &fwdRequest{Op: opRemoveServer, ID: s.cfg.ID})
	if err != nil {
		err = fmt.Errorf("store: leave: %w", err)
	} else {
		s.log.Info("cluster: left the raft configuration")
	}
	return errors.Join(err, s.Close())
}

// HandOverLeadership, on the leader of a cluster with other voters, hands
// leadership to one of them before this node goes, so that writes wait
// for a transfer rather than an election timeout.
func (s *Store) HandOverLeadership() {
	if s.raft.State() != raft.Leader {
		return
	}
	if servers, _ := s.Servers(); countVoters(servers, s.cfg.ID) > 0 {
		if err := s.raft.LeadershipTransfer().Error(); err != nil {
			s.log.Warn("cluster: leadership transfer before leaving failed", "error", err)
		}
	}
}

func countVoters(servers []Server, except string) int {
	n := 0
	for _, sv := range servers {
		if sv.Voter && sv.ID != except {
			n++
		}
	}
	return n
}

// Close shuts Raft down and closes the transport, the listener and every
// cluster connection; all of the store's goroutines have ended when it
// returns. The data dir keeps the state for the next Open.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.closing)
		// The connections go first: raft's goroutines blocked in an RPC
		// to a peer that does not answer (a dial or a read to one cut
		// off, up to the transport's timeout each) end now rather than
		// hold Shutdown (a cut-off voter took 6-19 s to exit, its data
		// dir locked meanwhile). Nothing raft does on the way down needs
		// the network.
		s.trans.CloseStreams()
		s.trans.Close()
		s.mux.close()
		err := s.raft.Shutdown().Error()
		close(s.raftDown)
		s.closeErr = errors.Join(err, s.logs.Close(), s.lock.Close())
		s.log.Info("cluster: raft store closed")
	})
	return s.closeErr
}

// isClosing reports whether Close has begun.
// Quiet says that the whole cluster is stopping together (meridian dev's
// Ctrl-C): Raft's warnings and errors about peers that went, expected
// from then on, are logged at debug level.
func (s *Store) Quiet() { s.quiet.Store(true) }

func (s *Store) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}
