// Package node builds and runs one Meridian edge node: it reads the node
// configuration, wires the data plane (edge) to its control (the gateway
// document, applied locally now and through the cluster later), and owns
// start, reload, drain and stop.
package node

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/cluster"
	"github.com/meridian-gw/meridian/cluster/certstore"
	"github.com/meridian-gw/meridian/cluster/gossip"
	"github.com/meridian-gw/meridian/cluster/store"
	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/edge/certs"
	"github.com/meridian-gw/meridian/edge/config"
	"github.com/meridian-gw/meridian/internal/atomicfile"
	"github.com/meridian-gw/meridian/internal/dirlock"
	"github.com/meridian-gw/meridian/internal/smallfile"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"
)

// Options are what a Node needs besides its configuration.
type Options struct {
	// Logger for operational messages; nil means JSON on stderr at the
	// configured level.
	Logger *slog.Logger
	// AccessLogWriter overrides where the access log goes (tests).
	AccessLogWriter io.Writer
	// ConfigPath is the file the configuration came from, re-read by
	// Reload. Empty means the embedded default (Reload re-applies it).
	ConfigPath string
	// ClusterTuning adjusts cluster settings (timings in tests).
	ClusterTuning func(*cluster.Config)
}

// Node is one running edge node.
type Node struct {
	dirLock    *os.File // flock on DataDir/node.lock while the node runs
	cfg        Config
	opts       Options
	log        *slog.Logger
	gw         *edge.Gateway
	proxy      *edge.Server
	adminSrv   *http.Server
	adminLn    net.Listener
	demo       *demoBackend
	certs      *certs.Manager
	certSt     *certstore.Storage // cluster certificate storage (nil alone or without HTTPS)
	cluster    *cluster.Cluster
	stopping   chan struct{}
	stopOnce   sync.Once
	tlsSrv     *edge.TLSServer
	token      string
	accessF    *logFile
	accessW    *flushingWriter // the access log's buffer, if any
	accessLoss *lossWatch      // the access log's failed writes, if it has a file
	// accessLost counts access log lines lost to failed writes
	// (lossWatch); registered with the gateway's metrics.
	accessLost prometheus.Counter

	applyMu  sync.Mutex // serialises Apply: versions must not interleave
	draining atomic.Bool
	// applies ends the writes through the admin API still waiting when
	// the drain closes the admin listener (endApplies).
	applies    context.Context
	endApplies context.CancelFunc
	// withCluster: the whole cluster stops together (StopsWithCluster).
	withCluster atomic.Bool
	// inStep says a cluster node has caught up with the cluster since it
	// started, or given up waiting (catchUp): it is ready only then.
	inStep atomic.Bool
	wg     sync.WaitGroup
}

// state is what the node remembers across restarts, in DataDir.
type state struct {
	Version  uint64 `json:"version"`
	Hash     string `json:"hash"`
	Source   string `json:"source"`    // "file" or "admin"
	FileHash string `json:"file_hash"` // hash of the file's document when last started
}

// RouteStandardLog sends what libraries print through Go's standard logger
// (net/http's HTTP/2 client says so of an upstream's protocol errors) to l,
// as WARN lines with source go rather than bare text among the JSON ones,
// each distinct message at most once in stdLogEvery (a failing health
// check repeats its at every interval; the next line says how many were
// held back).
func RouteStandardLog(l *slog.Logger) {
	log.SetFlags(0)
	log.SetOutput(&stdLogWriter{l: l.With("source", "go"), last: map[string]time.Time{}, held: map[string]int{}})
}

const stdLogEvery = 30 * time.Second

type stdLogWriter struct {
	l    *slog.Logger
	mu   sync.Mutex
	last map[string]time.Time // when each message last went out
	held map[string]int       // repeats held back since
}

func (w *stdLogWriter) Write(p []byte) (int, error) {
	msg := strings.TrimSpace(string(p))
	now := time.Now()
	w.mu.Lock()
	if t, ok := w.last[msg]; ok && now.Sub(t) < stdLogEvery {
		w.held[msg]++
		w.mu.Unlock()
		return len(p), nil
	}
	if len(w.last) >= 1024 {
		clear(w.last) // messages that vary (addresses in them): forget, do not grow
		clear(w.held)
	}
	held := w.held[msg]
	delete(w.held, msg)
	w.last[msg] = now
	w.mu.Unlock()
	if held > 0 {
		w.l.Warn(msg, "repeated", held)
	} else {
		w.l.Warn(msg)
	}
	return len(p), nil
}

// New prepares a node from a parsed file; nothing listens until Start.
func New(f *File, opts Options) (*Node, error) {
	cfg, err := f.Node.withDefaults()
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, opts: opts, log: opts.Logger, stopping: make(chan struct{})}
	n.applies, n.endApplies = context.WithCancel(context.Background())
	ownLog := n.log == nil
	if ownLog {
		n.log = slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: parseLevel(cfg.Log.Level)}))
	}
	n.log = n.log.With("node", cfg.Name)
	if ownLog {
		RouteStandardLog(n.log)
	}
	var trusted []netip.Prefix
	for _, p := range cfg.TrustedProxies {
		pp, _ := parsePrefix(p)
		trusted = append(trusted, pp)
	}
	var access *slog.Logger
	if cfg.AccessLog.Enabled == nil || *cfg.AccessLog.Enabled {
		w := opts.AccessLogWriter
		if w == nil {
			switch cfg.AccessLog.Path {
			case "", "stdout":
				w = os.Stdout
			case "stderr":
				w = os.Stderr
			default:
				fh, err := openLogFile(cfg.AccessLog.Path)
				if err != nil {
					return nil, fmt.Errorf("access log: %w", err)
				}
				n.accessF = fh
				w = fh
			}
		}
		n.accessLost = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "meridian_access_log_lines_lost_total",
			Help: "Access log lines lost to failed writes (a full disk, an unwritable file); the node's log says why.",
		})
		n.accessLoss = &lossWatch{w: w, lost: n.accessLost, log: n.log}
		w = n.accessLoss
		if fi := cfg.AccessLog.FlushInterval; fi == nil || *fi > 0 {
			interval := time.Second
			if fi != nil {
				interval = *fi
			}
			n.accessW = newFlushingWriter(w, interval)
			w = n.accessW
		}
		access = slog.New(newAccessLogHandler(w))
	}
	n.gw = edge.New(edge.Options{
		Logger:          n.log,
		AccessLog:       access,
		Region:          cfg.Region,
		TrustedProxies:  trusted,
		MaxHeaderCount:  cfg.Limits.MaxHeaderCount,
		MaxRequestBody:  int64(cfg.Limits.MaxRequestBody),
		SendTimeout:     cfg.Limits.SendTimeout,
		ReadBodyTimeout: cfg.Limits.ReadBodyTimeout,
		Underscores:     edge.UnderscorePolicy(cfg.Limits.HeadersWithUnderscores),
	})
	if n.accessLost != nil {
		n.gw.Registerer().MustRegister(n.accessLost)
	}
	return n, nil
}

func parseLevel(s string) slog.Level {
	switch strings.ToLower(s) {
	case "debug":
		return slog.LevelDebug
	case "warn":
		return slog.LevelWarn
	case "error":
		return slog.LevelError
	}
	return slog.LevelInfo
}

// Gateway returns the node's data plane (for tests and embedding).
func (n *Node) Gateway() *edge.Gateway { return n.gw }

// Logger is the node's log.
func (n *Node) Logger() *slog.Logger { return n.log }

// ProxyAddr is the bound client-facing address (after Start).
func (n *Node) ProxyAddr() string { return n.proxy.Addr().String() }

// AdminAddr is the bound admin address, or "" if the admin API is off.
func (n *Node) AdminAddr() string {
	if n.adminLn == nil {
		return ""
	}
	return n.adminLn.Addr().String()
}

// AdminToken is the bearer token for admin writes.
func (n *Node) AdminToken() string { return n.token }

// Start applies the initial gateway document (from the file, or what was
// last applied through the admin API if the file has not changed since),
// binds the listeners and serves. It returns once everything listens.
func (n *Node) Start(f *File, fileRaw []byte) error {
	if err := os.MkdirAll(n.cfg.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	lock, err := lockDataDir(n.cfg.DataDir)
	if err != nil {
		return err
	}
	n.dirLock = lock
	started := false
	defer func() {
		if !started {
			n.unlockDataDir()
		}
	}()
	if err := claimDataDir(n.cfg.DataDir, n.cfg.Name); err != nil {
		return err
	}
	if n.cfg.Admin.Listen != "off" { // no admin API, no token to make
		tok, err := n.loadToken()
		if err != nil {
			return err
		}
		n.token = tok
	}
	if n.cfg.Demo {
		d, err := startDemo()
		if err != nil {
			return fmt.Errorf("demo backends: %w", err)
		}
		n.demo = d
		n.log.Info("demo backends started", "addr", d.addr())
	}
	if n.cfg.Cluster != nil {
		if err := n.startCluster(); err != nil {
			n.stopDemo()
			return err
		}
	}
	if err := n.applyInitial(f, fileRaw); err != nil {
		n.stopCluster()
		n.stopDemo()
		return err
	}
	if err := n.startTLS(); err != nil {
		n.gw.Close()
		n.stopCluster()
		n.stopDemo()
		return err
	}
	lo := n.listenerOptions(n.cfg.Listen.HTTP)
	lo.Handler = n.plainHandler()
	srv, err := n.gw.Listen(lo)
	if err != nil {
		n.stopTLS()
		n.gw.Close()
		n.stopCluster()
		n.stopDemo()
		return fmt.Errorf("listen %s: %w", n.cfg.Listen.HTTP, err)
	}
	n.proxy = srv
	if n.cfg.Admin.Listen != "off" {
		ln, err := net.Listen("tcp", n.cfg.Admin.Listen)
		if err != nil {
			srv.Shutdown(context.Background())
			n.stopTLS()
			n.gw.Close()
			n.stopCluster()
			n.stopDemo()
			return fmt.Errorf("admin listen %s: %w", n.cfg.Admin.Listen, err)
		}
		n.adminLn = ln
		ao := edge.AdminOptions{
			Control:   n,
			Token:     n.token,
			OpenReads: isLoopback(ln.Addr()),
			Cluster:   n.ClusterStatus,
		}
		if n.cluster != nil {
			ao.RemoveMember = n.RemoveMember
		}
		n.adminSrv = &http.Server{
			Handler:           n.gw.AdminHandler(ao),
			ReadHeaderTimeout: 10 * time.Second,
			// A whole request, an 8 MiB document included: a client
			// trickling a body cannot hold a connection for longer.
			ReadTimeout: 2 * time.Minute,
			IdleTimeout: 60 * time.Second,
		}
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			if err := n.adminSrv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				n.log.Error("admin server stopped", "err", err)
			}
		}()
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := srv.Serve(); err != nil {
			n.log.Error("proxy server stopped", "err", err)
		}
	}()
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		releaseIdleMemory(n.stopping, idleMemoryLook)
	}()
	if n.cluster != nil {
		n.wg.Add(1)
		go func() {
			defer n.wg.Done()
			n.catchUp()
		}()
	}
	n.announce()
	s := n.gw.Current()
	n.log.Info("meridian serving", "http", srv.Addr().String(), "https", n.HTTPSAddr(), "admin", n.AdminAddr(), "config_version", s.Version, "config_hash", s.Hash[:12], "routes", len(s.Doc.Routes), "data_dir", n.cfg.DataDir)
	started = true
	return nil
}

// releaseMemoryAfterLargeDocument returns to the OS, in the background, the
// memory that parsing (and compiling, if it got that far) a large document
// took, applied or refused: with GOGC=400 the heap of an idle node that
// applied 20,000 routes otherwise stays at hundreds of MB of RSS for a
// live heap of tens, and one that refused a 10 MB document at 700 MB.
// Small documents leave it to the runtime.
func releaseMemoryAfterLargeDocument(raw []byte) {
	if len(raw) > 1<<20 {
		go debug.FreeOSMemory()
	}
}

// lockDataDir takes an exclusive, non-blocking lock on dir/node.lock for the
// node's life: a second node on the same data dir would overwrite its state
// (the applied document, the version) and fails to start instead.
func lockDataDir(dir string) (*os.File, error) {
	f, err := dirlock.Lock(filepath.Join(dir, "node.lock"))
	if errors.Is(err, dirlock.ErrInUse) {
		return nil, fmt.Errorf("data dir %s is in use by another meridian node; give each node its own data_dir", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	return f, nil
}

// claimDataDir records the node's name in its data dir (node-name) and
// refuses a data dir that holds another node's Raft state: the Raft log
// and seat are the other name's, and a node started on them joined as a
// new voter while the old name's seat stayed, a ghost counted against
// the quorum (an outside check). A data dir without Raft state may change
// hands (a single node renamed).
func claimDataDir(dir, name string) error {
	path := filepath.Join(dir, "node-name")
	b, err := smallfile.Read(path, smallfile.MaxToken)
	if err == nil {
		owner := strings.TrimSpace(string(b))
		if owner == name {
			return nil
		}
		if _, err := os.Stat(filepath.Join(dir, "raft")); err == nil && owner != "" {
			return fmt.Errorf("data dir %s holds the cluster state of node %q, and this node is %q: give each node its own data_dir "+
				"(to rename a node, drain it with remove_on_leave: true and start it under the new name on an empty data_dir)", dir, owner, name)
		}
	}
	return atomicfile.Write(path, []byte(name+"\n"), 0o600)
}

func (n *Node) unlockDataDir() {
	if n.dirLock != nil {
		n.dirLock.Close() // releases the flock
		n.dirLock = nil
	}
}

func isLoopback(a net.Addr) bool {
	ta, ok := a.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}

// stopCluster closes the cluster membership without a leave (start
// failures).
func (n *Node) stopCluster() {
	n.signalStop()
	if n.cluster != nil {
		n.cluster.Close()
	}
	n.wg.Wait()
}

// signalStop tells the node's background loops to end.
func (n *Node) signalStop() { n.stopOnce.Do(func() { close(n.stopping) }) }

// leaveCluster departs gracefully: gossip announces the leave; a voter
// configured with remove_on_leave also gives up its Raft seat.
func (n *Node) leaveCluster() {
	if n.cluster == nil {
		return
	}
	if n.cfg.Cluster.RemoveOnLeave {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := n.cluster.Leave(ctx); err != nil {
			n.log.Warn("leaving the Raft configuration failed", "err", err)
		}
		return
	}
	if n.withCluster.Load() {
		// Every peer is stopping too: there is no one to hand
		// leadership to or to tell of the leave (each would wait on
		// peers already gone).
		n.cluster.Close()
		return
	}
	// The seat stays; leadership does not (writes would wait for an
	// election timeout).
	n.cluster.Store.HandOverLeadership()
	n.cluster.Members.Leave(5 * time.Second)
	n.cluster.Close()
}

// StopsWithCluster says that every node of the cluster is about to be
// drained at once (meridian dev's Ctrl-C): the drain then keeps its seat
// without handing leadership over or announcing a leave, and Raft's and
// gossip's complaints about peers going are debug lines. Called before Drain, on
// every node first.
func (n *Node) StopsWithCluster() {
	if n.cluster == nil {
		return
	}
	n.withCluster.Store(true)
	n.cluster.Store.Quiet()
	n.cluster.Members.Quiet()
}

func (n *Node) stopTLS() {
	if n.tlsSrv != nil {
		n.tlsSrv.Shutdown(context.Background())
	}
	if n.certs != nil {
		n.certs.Close()
	}
	if n.certSt != nil {
		n.certSt.Close()
	}
}

func (n *Node) stopDemo() {
	if n.demo != nil {
		n.demo.close()
	}
}

// loadToken finds the admin token: configured, from a file, or created.
func (n *Node) loadToken() (string, error) {
	switch {
	case n.cfg.Admin.Token != "":
		return n.cfg.Admin.Token, nil
	case n.cfg.Admin.TokenFile != "":
		return readTokenFile(n.cfg.Admin.TokenFile)
	}
	path := filepath.Join(n.cfg.DataDir, "admin-token")
	if b, err := smallfile.Read(path, smallfile.MaxToken); err == nil && len(strings.TrimSpace(string(b))) >= 16 {
		return strings.TrimSpace(string(b)), nil
	}
	var buf [24]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return "", err
	}
	tok := hex.EncodeToString(buf[:])
	if err := atomicfile.Write(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	n.log.Info("created admin token", "path", path)
	return tok, nil
}

// applyInitial installs the first snapshot.
func (n *Node) applyInitial(f *File, fileRaw []byte) error {
	raw, err := GatewayYAML(fileRaw)
	if err != nil {
		return err
	}
	if n.cluster != nil {
		// Raft holds the versions. Until the cluster has a document this
		// node serves the one it installed last (its Raft log lost, say),
		// or else its file's, unversioned (0), and the first leader
		// proposes what it serves: a cluster whose every log was lost
		// starts again from its last document, not from a file's that
		// the cluster replaced long ago (versions start again at 1).
		seed := &f.Gateway
		if n.gw.Current() == nil {
			if doc, kept, ok := n.serveKeptClusterDoc(); ok {
				seed, raw = doc, kept
			} else {
				snap, err := n.compile(&f.Gateway, raw, 0, nil)
				if err != nil {
					return err
				}
				n.gw.Swap(snap)
			}
		}
		n.wg.Add(1)
		go n.seedCluster(seed, raw)
		return nil
	}
	fileHash := f.Gateway.Hash()
	st := n.loadState()
	doc, src := &f.Gateway, "file"
	if st.Source == "admin" && st.FileHash == fileHash {
		// The file has not changed since the admin API replaced its
		// document: the later admin write wins.
		if d, b, err := n.storedAdminDocument(st.Hash); err == nil {
			doc, raw, src = d, b, "admin"
			n.log.Info("serving the gateway document last applied through the admin API: the file's has not changed since",
				"path", n.statePath(appliedFile))
		} else {
			n.log.Warn("the document last applied through the admin API cannot be used; serving the file's", "err", err.Error())
		}
	}
	version := st.Version
	if doc.Hash() != st.Hash || version == 0 {
		version++
	}
	snap, err := n.compile(doc, raw, version, nil)
	if err != nil {
		return err
	}
	n.gw.Swap(snap)
	return n.saveState(state{Version: version, Hash: snap.Hash, Source: src, FileHash: fileHash}, raw)
}

// compile rewrites demo targets and compiles doc.
func (n *Node) compile(doc *config.Document, raw []byte, version uint64, prev *edge.Snapshot) (*edge.Snapshot, error) {
	hash := doc.Hash()
	run := doc
	if n.demo != nil {
		cp := *doc
		cp.Services = make([]config.Service, len(doc.Services))
		for i, s := range doc.Services {
			s.Targets = append([]config.Target(nil), s.Targets...)
			for j, t := range s.Targets {
				if u, err := url.Parse(t.URL); err == nil && u.Host == demoHost {
					u.Host = n.demo.addr()
					s.Targets[j].URL = u.String()
				}
			}
			cp.Services[i] = s
		}
		run = &cp
	}
	return n.gw.Compile(run, edge.CompileInput{Version: version, Raw: raw, Hash: hash, Prev: prev})
}

// Apply parses, validates, compiles and installs a gateway document. It
// implements edge.Control for the admin API.
func (n *Node) Apply(ctx context.Context, raw []byte, o edge.ApplyOptions) (*edge.Snapshot, error) {
	defer releaseMemoryAfterLargeDocument(raw)
	ifVersion := o.IfVersion
	if o.IfAbsent {
		ifVersion = store.NoDocument
	}
	doc, err := config.Parse(raw)
	if err != nil {
		n.gw.RecordRejected()
		return nil, err
	}
	if len(doc.Routes) == 0 && !o.AllowNoRoutes {
		n.gw.RecordRejected()
		return nil, edge.ErrNoRoutes
	}
	if n.cluster != nil {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		defer context.AfterFunc(n.applies, cancel)()
		s, err := n.applyCluster(ctx, doc, raw, ifVersion)
		if err != nil && n.applies.Err() != nil && errors.Is(err, edge.ErrUnavailable) {
			err = fmt.Errorf("%w: the node is shutting down; send the document to another node", edge.ErrUnavailable)
		}
		return s, err
	}
	return n.install(doc, raw, ifVersion, "admin")
}

func (n *Node) install(doc *config.Document, raw []byte, ifVersion uint64, source string) (*edge.Snapshot, error) {
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	cur := n.gw.Current()
	var curVersion uint64
	if cur != nil {
		curVersion = cur.Version
	}
	switch {
	case ifVersion == store.NoDocument && cur != nil:
		return nil, fmt.Errorf("%w: you asked for no document to be applied yet, the node serves version %d", edge.ErrVersionConflict, curVersion)
	case ifVersion != 0 && ifVersion != store.NoDocument && ifVersion > curVersion:
		return nil, conflictError(fmt.Sprintf("version %d was never applied: the node serves version %d", ifVersion, curVersion))
	case ifVersion != 0 && ifVersion != store.NoDocument && curVersion != ifVersion:
		return nil, fmt.Errorf("%w: you named version %d, the node serves version %d", edge.ErrVersionConflict, ifVersion, curVersion)
	}
	var version uint64 = 1
	if cur != nil {
		version = cur.Version + 1
	}
	snap, err := n.compile(doc, raw, version, cur)
	if err != nil {
		n.gw.RecordRejected()
		return nil, config.WithLines(raw, err, "")
	}
	st := n.loadState()
	st.Version, st.Hash, st.Source = version, snap.Hash, source
	if source == "file" {
		st.FileHash = snap.Hash
	}
	if err := n.saveState(st, raw); err != nil {
		// Persisting failed: do not serve a version that a restart would
		// forget, or the version could go backwards.
		n.gw.RecordRejected()
		return nil, fmt.Errorf("storing the document: %w", err)
	}
	n.gw.Swap(snap)
	n.manageHosts(doc)
	n.log.Info("configuration applied", "version", version, "hash", snap.Hash[:12], "source", source, "routes", len(doc.Routes), "services", len(doc.Services))
	return snap, nil
}

// ReopenLogs opens the access log file anew at its path (SIGUSR1, as
// nginx's), after what was buffered is written to the old one: logrotate
// moves the file away, then signals. Without a log file it does nothing.
func (n *Node) ReopenLogs() error {
	if n.accessF == nil {
		return nil
	}
	if n.accessW != nil {
		n.accessW.Flush()
	}
	if err := n.accessF.reopen(); err != nil {
		n.log.Error("reopening the access log failed; writing on to the file open before", "path", n.accessF.path, "error", err)
		return err
	}
	n.log.Info("access log reopened", "path", n.accessF.path)
	return nil
}

// Reload re-reads the configuration file (SIGHUP): it loads the file's
// tls.certificates (their files read again) and applies its gateway
// document. Other changes to the node section need a restart and are
// reported.
func (n *Node) Reload() (*edge.Snapshot, error) {
	snap, err := n.reload()
	if err != nil {
		n.log.Error("reload refused; the running configuration is unchanged", "source", "file", "error", err.Error())
	}
	return snap, err
}

func (n *Node) reload() (snap *edge.Snapshot, err error) {
	raw := DefaultConfig
	if n.opts.ConfigPath != "" {
		b, err := ReadFile(n.opts.ConfigPath)
		if err != nil {
			n.gw.RecordRejected()
			return nil, err
		}
		raw = b
		defer releaseMemoryAfterLargeDocument(raw)
	}
	f, err := ParseFile(raw)
	if err != nil {
		n.gw.RecordRejected()
		return nil, err
	}
	// The file's certificates are loaded now and served only once its
	// document is applied: a reload is refused, or applied, whole.
	var certSet *certs.StaticSet
	certList := f.Node.TLS.Certificates
	if n.certs != nil && (len(certList) > 0 || len(n.cfg.TLS.Certificates) > 0) {
		set, err := certs.LoadStatic(staticFiles(certList))
		if err != nil {
			n.gw.RecordRejected()
			return nil, fmt.Errorf("node.tls.%w", err)
		}
		certSet = set
		// Hosts the new certificates hold are not to be ordered while
		// the document is applied; if it is refused, they are the
		// running set's business again.
		n.certs.ExpectStatic(set)
		defer func() {
			n.certs.ExpectStatic(nil)
			if snap == nil {
				if cur := n.gw.Current(); cur != nil {
					n.manageHosts(cur.Doc)
				}
			}
		}()
	}
	if nc, err := f.Node.withDefaults(); err != nil || !sameNode(nc, n.cfg) {
		changed := "?"
		if err == nil {
			changed = strings.Join(nodeChanges(n.cfg, nc), ", ")
		}
		n.log.Warn("the node section changed; apart from tls.certificates it takes effect only after a restart: until then the node runs as before",
			"changed", changed)
	}
	doc, err := GatewayYAML(raw)
	if err != nil {
		return nil, err
	}
	if cur := n.gw.Current(); len(f.Gateway.Routes) == 0 && cur != nil && len(cur.Doc.Routes) > 0 {
		// As PUT /config without allow_empty: a file that lost its
		// gateway section (or its routes) by mistake would take every
		// route down on a signal.
		n.gw.RecordRejected()
		return nil, fmt.Errorf("the file's gateway document has no routes, and applying it would answer every request with a 404; to empty the gateway on purpose, PUT /config?allow_empty=true")
	}
	if n.cluster != nil {
		snap, err = n.applyCluster(context.Background(), &f.Gateway, doc, 0)
	} else {
		snap, err = n.install(&f.Gateway, doc, 0, "file")
	}
	if certSet != nil && err == nil {
		n.useCertificates(certSet, certList)
	}
	return snap, err
}

// conflictError is an edge.ErrVersionConflict said in words of its own
// (edge.ErrVersionConflict's would not fit).
type conflictError string

func (e conflictError) Error() string        { return string(e) }
func (e conflictError) Is(target error) bool { return target == edge.ErrVersionConflict }

// nodeChanges names the fields in which two node sections differ (by their
// YAML names, dotted; lists and deeper structures as a whole), but for
// tls.certificates, which a reload applies.
func nodeChanges(a, b Config) []string {
	a.TLS.Certificates, b.TLS.Certificates = nil, nil
	var ma, mb map[string]any
	ya, _ := yaml.Marshal(a)
	yb, _ := yaml.Marshal(b)
	yaml.Unmarshal(ya, &ma)
	yaml.Unmarshal(yb, &mb)
	var out []string
	var walk func(prefix string, x, y map[string]any, depth int)
	walk = func(prefix string, x, y map[string]any, depth int) {
		keys := map[string]bool{}
		for k := range x {
			keys[k] = true
		}
		for k := range y {
			keys[k] = true
		}
		for _, k := range slices.Sorted(maps.Keys(keys)) {
			xv, yv := x[k], y[k]
			xm, xok := xv.(map[string]any)
			ym, yok := yv.(map[string]any)
			switch {
			case xok && yok && depth < 3:
				walk(prefix+k+".", xm, ym, depth+1)
			case !reflect.DeepEqual(xv, yv):
				out = append(out, prefix+k)
			}
		}
	}
	walk("", ma, mb, 0)
	return out
}

// sameNode reports whether two node sections are the same but for
// tls.certificates, which a reload applies.
func sameNode(a, b Config) bool {
	a.TLS.Certificates, b.TLS.Certificates = nil, nil
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return string(ja) == string(jb)
}

// Ready reports whether the node takes traffic.
func (n *Node) Ready() bool {
	return !n.draining.Load() && n.gw.Current() != nil &&
		(n.cluster == nil || !n.cluster.NameConflict() && n.inStep.Load())
}

// NotReadyReason says why the node is not ready ("" when it is), for
// /readyz.
func (n *Node) NotReadyReason() string {
	switch {
	case n.draining.Load():
		return "the node is draining"
	case n.gw.Current() == nil:
		return "the node has no configuration yet"
	case n.cluster != nil && n.cluster.NameConflict():
		return "another node is alive under this node's name: give it a unique node.name"
	case n.cluster != nil && !n.inStep.Load():
		return "the node is catching up with the cluster since its start"
	}
	return ""
}

// catchUpWait bounds how long a cluster node stays not ready after its
// start while it cannot catch up with the cluster (no leader reachable: no
// quorum, a partition): it is then ready with what it has, as Envoy serves
// what it has after its initial fetch timeout.
const catchUpWait = 15 * time.Second

// catchUp makes a cluster node ready once it has applied everything the
// cluster had committed when it started (a read index from the leader),
// or after catchUpWait. Before, a restarted node serves the document it
// had, which the cluster may have replaced: a load balancer should not
// take it for the cluster's.
func (n *Node) catchUp() {
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), catchUpWait)
	defer cancel()
	go func() {
		select {
		case <-n.stopping:
			cancel()
		case <-ctx.Done():
		}
	}()
	err := n.cluster.Store.CatchUp(ctx)
	select {
	case <-n.stopping:
		return
	default:
	}
	var version uint64
	if s := n.gw.Current(); s != nil {
		version = s.Version
	}
	took := time.Since(start).Round(time.Millisecond).String()
	switch cv := n.cluster.Store.Current().Version; {
	case err != nil:
		n.log.Warn("could not catch up with the cluster; ready with the configuration this node has",
			"version", version, "waited", took, "err", err)
	case version < cv:
		// Applied, but not installed here (a file it names missing on
		// this machine: logged when it came). Ready as a running node
		// that cannot install a document stays ready, on what it serves.
		n.log.Warn("caught up with the cluster, but its current version cannot be installed on this node; ready with the one it serves",
			"version", version, "cluster_version", cv, "took", took)
	default:
		n.log.Info("caught up with the cluster", "version", version, "took", took)
	}
	n.inStep.Store(true)
}

// Drain stops the node gracefully: readiness goes false, the listener stops
// accepting, in-flight requests get until ctx ends (or the configured drain
// timeout), then everything is closed. It returns an error if requests had
// to be cut off.
func (n *Node) Drain(ctx context.Context) error {
	n.draining.Store(true)
	if n.cluster != nil {
		n.cluster.Members.UpdateMeta(func(m *gossip.Meta) { m.Draining = true })
	}
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Limits.DrainTimeout)
	defer cancel()
	n.log.Info("draining", "deadline", n.cfg.Limits.DrainTimeout.String())
	var tlsErr error
	var tlsDone chan struct{}
	if n.tlsSrv != nil {
		tlsDone = make(chan struct{})
		go func() {
			defer close(tlsDone)
			tlsErr = n.tlsSrv.Shutdown(ctx)
		}()
	}
	err := n.proxy.Shutdown(ctx)
	if tlsDone != nil {
		<-tlsDone
		if err == nil {
			err = tlsErr
		}
	}
	if n.certs != nil {
		n.certs.Close()
	}
	if n.certSt != nil {
		// Locks held by certificate work just cancelled are let go now,
		// while Raft is up, not left to their lease (hours in a CA
		// outage), which would keep other nodes from the name.
		rctx, rcancel := context.WithTimeout(context.Background(), 3*time.Second)
		n.certSt.ReleaseAll(rctx)
		rcancel()
		n.certSt.Close()
	}
	if n.adminSrv != nil {
		// A write still waiting (for a leader, say) is answered now,
		// within the admin server's last second, rather than cut with
		// its connection.
		n.endApplies()
		actx, acancel := context.WithTimeout(context.Background(), time.Second)
		n.adminSrv.Shutdown(actx)
		acancel()
	}
	n.gw.Close()
	n.stopDemo()
	n.signalStop()
	n.leaveCluster()
	n.wg.Wait()
	if n.accessW != nil {
		n.accessW.Close() // the lines of the last requests
	}
	if n.accessLoss != nil {
		n.accessLoss.Close() // and any loss not said yet
	}
	if n.accessF != nil {
		n.accessF.Close()
	}
	n.unlockDataDir()
	if err != nil {
		n.log.Warn("drain deadline reached; remaining requests were cut off", "err", err)
		return err
	}
	n.log.Info("drained")
	return nil
}

func (n *Node) statePath(name string) string { return filepath.Join(n.cfg.DataDir, name) }

func (n *Node) loadState() state {
	var st state
	// Data dir files are read as config files are (smallfile): a FIFO or
	// a link to a device there must not hold the start (an outside check
	// saw a FIFO hang it, /dev/zero grow it by a GB a second).
	b, err := smallfile.Read(n.statePath("state.json"), smallfile.MaxToken)
	if err != nil {
		// A first start has none; a data dir that served a document
		// through the admin API had one (an outside check removed it:
		// versions went back to 1 without a word).
		if _, aerr := os.Stat(n.statePath(appliedFile)); !errors.Is(err, os.ErrNotExist) || aerr == nil {
			n.log.Warn("state.json missing or unreadable in a data dir that served before; starting versions afresh, and serving the file's document rather than one applied through the admin API", "err", err)
		}
		return st
	}
	if err := json.Unmarshal(b, &st); err != nil {
		n.log.Warn("state.json unreadable; starting versions afresh, and serving the file's document rather than one applied through the admin API", "err", err)
		return state{}
	}
	return st
}

func (n *Node) saveState(st state, raw []byte) error {
	// The document and the state naming its hash are two files: the
	// document goes beside the one in use until the state is written, so
	// that a failure in between leaves the pair as it was (an outside
	// check saw a refused write replace the stored document, and the
	// next start drop the last one the admin API had applied).
	next, statePath := n.statePath(appliedFile+".new"), n.statePath("state.json")
	if err := atomicfile.Write(next, raw, 0o600); err != nil {
		return err
	}
	prev, prevErr := smallfile.Read(statePath, smallfile.MaxToken)
	b, _ := json.MarshalIndent(st, "", "  ")
	if err := atomicfile.Write(statePath, b, 0o600); err != nil {
		os.Remove(next)
		return err
	}
	if err := os.Rename(next, n.statePath(appliedFile)); err != nil {
		// The state goes back to naming the document in use (a crash
		// before this leaves it naming the ".new" one, which a start
		// also looks for: storedAdminDocument).
		switch {
		case prevErr == nil:
			err = errors.Join(err, atomicfile.Write(statePath, prev, 0o600))
		case errors.Is(prevErr, os.ErrNotExist):
			err = errors.Join(err, os.Remove(statePath))
		}
		os.Remove(next)
		return err
	}
	return nil
}

// appliedFile is the gateway document last applied, in the data dir.
const appliedFile = "gateway-applied"

// storedAdminDocument returns the stored document whose hash is want: the
// one in use, or one left beside it by a save that stopped after writing
// the state.
func (n *Node) storedAdminDocument(want string) (*config.Document, []byte, error) {
	var why error
	for _, name := range []string{appliedFile, appliedFile + ".new"} {
		b, err := smallfile.Read(n.statePath(name), MaxFileBytes)
		if err != nil {
			if why == nil {
				why = err
			}
			continue
		}
		d, err := config.Parse(b)
		switch {
		case err != nil:
			why = fmt.Errorf("%s: %w", name, err)
		case d.Hash() != want:
			why = fmt.Errorf("%s holds a document of hash %s, the state names %s", name, d.Hash(), want)
		default:
			return d, b, nil
		}
	}
	return nil, nil, why
}
