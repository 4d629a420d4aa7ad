// Package certstore is a certmagic.Storage kept in the cluster's Raft store, so
// that one node obtains a certificate and every node serves it.
//
// Every certmagic key is one entry of the store's replicated key/value space,
// under Options.Prefix ("certmagic/"). Its value is a small header (format
// byte, modification time) followed by certmagic's bytes. Writes go through
// the Raft leader from any node (the store forwards them) and return once this
// node has applied them, so a node reads its own writes; reads (Load, Exists,
// List, Stat) are served from this node's applied state and never block on the
// cluster (another node sees a write once it has replicated, normally within a
// commit interval). "Directories" are implicit, as certmagic expects: a key is
// a directory when other keys extend it by "/".
//
// Locks are entries under Options.LockPrefix ("certmagic-locks/") holding the
// holder (node ID and a per-Lock token) and an expiry. Lock creates the entry
// with a create-only compare-and-set; when it exists and its expiry has passed
// (its holder died or was cut off), Lock takes it over with a compare-and-set
// on the entry's index, so exactly one contender wins; otherwise Lock polls
// until the entry is gone or expired, or ctx ends. While held, a lock is
// refreshed every LockTTL/3 (a goroutine that Unlock ends), so long
// operations keep it. Unlock deletes the entry only if it is still ours
// (compare-and-set on the index of our last refresh). Expiries are compared
// with the local clock: node clocks must agree to well within LockTTL (NTP).
// Certmagic tolerates the rare double issuance such a lock can allow.
package certstore

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/meridian-gw/meridian/cluster/store"
)

// KV is the part of *store.Store this package uses.
type KV interface {
	KVPut(ctx context.Context, key string, value []byte) (uint64, error)
	KVPutCAS(ctx context.Context, key string, value []byte, modIndex uint64) (uint64, error)
	KVDelete(ctx context.Context, key string) error
	KVDeleteCAS(ctx context.Context, key string, modIndex uint64) error
	KVGet(key string) (store.KVEntry, bool)
	KVList(prefix string) []store.KVEntry
}

var _ KV = (*store.Store)(nil)

// Defaults.
const (
	DefaultPrefix       = "certmagic/"
	DefaultLockPrefix   = "certmagic-locks/"
	DefaultLockTTL      = 30 * time.Second
	DefaultPollInterval = 250 * time.Millisecond
	// DefaultMaxValueSize bounds one stored value. Certmagic stores PEM
	// certificates and keys and small JSON documents (a few KB); every value
	// lives in every node's memory, Raft log and state file.
	DefaultMaxValueSize = 64 << 10
	// DefaultWriteTimeout bounds a write whose context has no deadline.
	DefaultWriteTimeout = 30 * time.Second
)

// ErrTooLarge: Store was given a value above Options.MaxValueSize.
var ErrTooLarge = errors.New("certstore: value too large")

// ErrLockLost: Unlock found the lock held by someone else (it expired and was
// taken over) or gone.
var ErrLockLost = errors.New("certstore: lock no longer held")

// Options configure a Storage.
type Options struct {
	// NodeID names this node in lock entries (diagnostics). Required.
	NodeID string
	// Prefix of certmagic's keys in the store; default DefaultPrefix.
	Prefix string
	// LockPrefix of lock entries; default DefaultLockPrefix.
	LockPrefix string
	// LockTTL is how long a lock outlives its last refresh; default
	// DefaultLockTTL. Held locks are refreshed every LockTTL/3.
	LockTTL time.Duration
	// PollInterval is how often a blocked Lock looks again; default
	// DefaultPollInterval.
	PollInterval time.Duration
	// MaxValueSize bounds a stored value; default DefaultMaxValueSize.
	MaxValueSize int
	// WriteTimeout bounds writes whose context has no deadline; default
	// DefaultWriteTimeout.
	WriteTimeout time.Duration
	// Logger; nil discards.
	Logger *slog.Logger
	// Now is the clock; nil = time.Now.
	Now func() time.Time
}

// Storage is a certmagic.Storage (and TryLocker, LockLeaseRenewer) on the
// cluster's replicated key/value space. Safe for concurrent use.
type Storage struct {
	kv   KV
	opts Options
	log  *slog.Logger

	mu   sync.Mutex
	held map[string]*heldLock // by lock name
	// released: names ReleaseAll let go of, whose holder's Unlock is due
	released map[string]bool
}

var (
	_ certmagic.Storage          = (*Storage)(nil)
	_ certmagic.TryLocker        = (*Storage)(nil)
	_ certmagic.LockLeaseRenewer = (*Storage)(nil)
)

// New returns a Storage on kv (normally the node's *store.Store).
func New(kv KV, opts Options) *Storage {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	if opts.LockPrefix == "" {
		opts.LockPrefix = DefaultLockPrefix
	}
	if opts.LockTTL <= 0 {
		opts.LockTTL = DefaultLockTTL
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = DefaultPollInterval
	}
	if opts.MaxValueSize <= 0 {
		opts.MaxValueSize = DefaultMaxValueSize
	}
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = DefaultWriteTimeout
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Storage{kv: kv, opts: opts, log: log.With("component", "certstore"), held: map[string]*heldLock{}, released: map[string]bool{}}
}

// String identifies the storage in certmagic's logs.
func (s *Storage) String() string { return "raft-kv:" + s.opts.Prefix }

// --- values -----------------------------------------------------------------

// A stored value: format byte, modification time (Unix nanoseconds, big
// endian), then the bytes certmagic gave.
const (
	valueFormat = 1
	headerLen   = 9
)

func encodeValue(mod time.Time, v []byte) []byte {
	b := make([]byte, headerLen+len(v))
	b[0] = valueFormat
	binary.BigEndian.PutUint64(b[1:headerLen], uint64(mod.UnixNano()))
	copy(b[headerLen:], v)
	return b
}

func decodeValue(b []byte) (mod time.Time, v []byte, err error) {
	if len(b) < headerLen || b[0] != valueFormat {
		return time.Time{}, nil, errors.New("certstore: malformed stored value")
	}
	return time.Unix(0, int64(binary.BigEndian.Uint64(b[1:headerLen]))), b[headerLen:], nil
}

// cleanKey normalises a certmagic key (no leading or trailing slash).
func cleanKey(key string) string {
	key = strings.Trim(key, "/")
	if key == "" {
		return ""
	}
	return strings.TrimPrefix(path.Clean(key), "/")
}

func (s *Storage) kvKey(key string) string { return s.opts.Prefix + key }

func (s *Storage) writeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, s.opts.WriteTimeout)
}

// --- certmagic.Storage --------------------------------------------------------

// Store puts value at key, through Raft; on return this node reads it.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	k := cleanKey(key)
	if k == "" {
		return errors.New("certstore: empty key")
	}
	if len(value) > s.opts.MaxValueSize {
		return fmt.Errorf("%w: %q is %d bytes (limit %d)", ErrTooLarge, k, len(value), s.opts.MaxValueSize)
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	if _, err := s.kv.KVPut(ctx, s.kvKey(k), encodeValue(s.opts.Now(), value)); err != nil {
		return fmt.Errorf("certstore: store %q: %w", k, err)
	}
	return nil
}

// Load returns the value at key, or an error wrapping fs.ErrNotExist.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	k := cleanKey(key)
	e, ok := s.kv.KVGet(s.kvKey(k))
	if !ok || k == "" {
		return nil, fmt.Errorf("certstore: %q: %w", k, fs.ErrNotExist)
	}
	_, v, err := decodeValue(e.Value)
	if err != nil {
		return nil, fmt.Errorf("%w: key %q", err, k)
	}
	return v, nil
}

// Delete removes key and, if it is a directory, every key under it. A missing
// key is not an error.
func (s *Storage) Delete(ctx context.Context, key string) error {
	k := cleanKey(key)
	var keys []string
	if k == "" {
		// The whole space: allowed, as FileStorage allows removing its root.
		for _, e := range s.kv.KVList(s.opts.Prefix) {
			keys = append(keys, e.Key)
		}
	} else {
		if _, ok := s.kv.KVGet(s.kvKey(k)); ok {
			keys = append(keys, s.kvKey(k))
		}
		for _, e := range s.kv.KVList(s.kvKey(k) + "/") {
			keys = append(keys, e.Key)
		}
	}
	if len(keys) == 0 {
		return nil
	}
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	for _, kk := range keys {
		if err := s.kv.KVDelete(ctx, kk); err != nil {
			return fmt.Errorf("certstore: delete %q: %w", strings.TrimPrefix(kk, s.opts.Prefix), err)
		}
	}
	return nil
}

// Exists reports whether key is a stored key or a directory of some.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	_, err := s.Stat(ctx, key)
	return err == nil
}

// List returns the keys under dir (FileStorage semantics): non-recursive, the
// immediate children (keys and sub-directories); recursive, every descendant,
// directories included. A missing dir is an error wrapping fs.ErrNotExist.
func (s *Storage) List(ctx context.Context, dir string, recursive bool) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d := cleanKey(dir)
	base := s.opts.Prefix
	if d != "" {
		base = s.kvKey(d) + "/"
	}
	entries := s.kv.KVList(base)
	if len(entries) == 0 {
		if _, ok := s.kv.KVGet(s.kvKey(d)); ok && d != "" {
			return nil, nil // a key, not a directory: nothing under it
		}
		return nil, fmt.Errorf("certstore: list %q: %w", d, fs.ErrNotExist)
	}
	seen := map[string]bool{}
	var out []string
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, e := range entries {
		rel := strings.TrimPrefix(e.Key, base)
		parts := strings.Split(rel, "/")
		if !recursive {
			add(path.Join(d, parts[0]))
			continue
		}
		for i := range parts {
			add(path.Join(d, strings.Join(parts[:i+1], "/")))
		}
	}
	sort.Strings(out)
	return out, nil
}

// Stat describes key: a stored key (IsTerminal, Size, Modified as stored) or
// a directory (Modified: its newest key's). Missing: fs.ErrNotExist.
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if err := ctx.Err(); err != nil {
		return certmagic.KeyInfo{}, err
	}
	k := cleanKey(key)
	if k != "" {
		if e, ok := s.kv.KVGet(s.kvKey(k)); ok {
			mod, v, err := decodeValue(e.Value)
			if err != nil {
				return certmagic.KeyInfo{}, fmt.Errorf("%w: key %q", err, k)
			}
			return certmagic.KeyInfo{Key: k, Modified: mod, Size: int64(len(v)), IsTerminal: true}, nil
		}
	}
	base := s.opts.Prefix
	if k != "" {
		base = s.kvKey(k) + "/"
	}
	entries := s.kv.KVList(base)
	if len(entries) == 0 {
		return certmagic.KeyInfo{}, fmt.Errorf("certstore: stat %q: %w", k, fs.ErrNotExist)
	}
	ki := certmagic.KeyInfo{Key: k}
	for _, e := range entries {
		if mod, _, err := decodeValue(e.Value); err == nil && mod.After(ki.Modified) {
			ki.Modified = mod
		}
	}
	return ki, nil
}

// --- locks --------------------------------------------------------------------

// lockValue is the content of a lock entry.
type lockValue struct {
	Holder  string    `json:"holder"` // node ID
	Token   string    `json:"token"`  // unique per acquisition
	Expires time.Time `json:"expires"`
}

// heldLock is a lock this Storage holds.
type heldLock struct {
	name  string
	token string

	mu         sync.Mutex
	index      uint64    // ModIndex of our latest write of the entry
	leaseUntil time.Time // RenewLockLease: keep the expiry at least this far

	stop chan struct{}
	done chan struct{}
}

func (s *Storage) lockKey(name string) string { return s.opts.LockPrefix + name }

func newToken() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Storage) lockValue(token string, expires time.Time) []byte {
	b, _ := json.Marshal(lockValue{Holder: s.opts.NodeID, Token: token, Expires: expires})
	return b
}

// Lock acquires the cluster-wide lock name, blocking until it is free or
// stale, or ctx ends. Without a reachable leader (the cluster is forming, or
// this node is cut off from a quorum) it keeps trying until ctx ends.
func (s *Storage) Lock(ctx context.Context, name string) error {
	for {
		ok, err := s.tryLock(ctx, name)
		if ok {
			return nil
		}
		if err != nil {
			if !errors.Is(err, store.ErrNoLeader) || ctx.Err() != nil {
				return err
			}
			s.log.Warn("no cluster leader to take a lock; still trying", "lock", name)
		}
		t := time.NewTimer(s.opts.PollInterval)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("certstore: lock %q: %w", name, ctx.Err())
		}
	}
}

// TryLock makes one attempt at the lock (taking over an expired one).
func (s *Storage) TryLock(ctx context.Context, name string) (bool, error) {
	return s.tryLock(ctx, name)
}

// tryLock: (true, nil) acquired; (false, nil) held by someone else.
func (s *Storage) tryLock(ctx context.Context, name string) (bool, error) {
	if name == "" {
		return false, errors.New("certstore: empty lock name")
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("certstore: lock %q: %w", name, err)
	}
	key := s.lockKey(name)
	var ifIndex uint64 // 0: create-only
	if e, ok := s.kv.KVGet(key); ok {
		var lv lockValue
		if err := json.Unmarshal(e.Value, &lv); err == nil && s.opts.Now().Before(lv.Expires) {
			return false, nil
		}
		// Expired (or unreadable): take it over, only if nobody did first.
		ifIndex = e.ModIndex
		s.log.Warn("taking over an expired lock", "lock", name, "holder", lv.Holder, "expired", lv.Expires)
	}
	token := newToken()
	wctx, cancel := s.writeCtx(ctx)
	defer cancel()
	idx, err := s.kv.KVPutCAS(wctx, key, s.lockValue(token, s.opts.Now().Add(s.opts.LockTTL)), ifIndex)
	switch {
	case errors.Is(err, store.ErrVersionConflict):
		return false, nil // someone else got there first
	case errors.Is(err, store.ErrUnknownOutcome):
		// The write may have landed: ours if the entry carries our token.
		e, ok := s.kv.KVGet(key)
		var lv lockValue
		if !ok || json.Unmarshal(e.Value, &lv) != nil || lv.Token != token {
			return false, nil
		}
		idx = e.ModIndex
	case err != nil:
		return false, fmt.Errorf("certstore: lock %q: %w", name, err)
	}
	h := &heldLock{name: name, token: token, index: idx, stop: make(chan struct{}), done: make(chan struct{})}
	s.mu.Lock()
	if old := s.held[name]; old != nil {
		// We took over our own expired lock (the refresher could not reach
		// the cluster for a whole TTL): the old acquisition is void.
		close(old.stop)
	}
	s.held[name] = h
	s.mu.Unlock()
	go s.refreshLoop(h)
	s.log.Debug("lock acquired", "lock", name, "index", idx)
	return true, nil
}

// refreshLoop extends a held lock's expiry every LockTTL/3 until stopped or
// the lock is lost.
func (s *Storage) refreshLoop(h *heldLock) {
	defer close(h.done)
	t := time.NewTicker(s.opts.LockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		err := s.refresh(h, 0)
		if errors.Is(err, ErrLockLost) {
			s.log.Error("lock lost while held (expired and taken over?)", "lock", h.name)
			return
		}
		if err != nil {
			s.log.Warn("refreshing lock failed; retrying", "lock", h.name, "err", err)
		}
	}
}

// refresh rewrites h's entry with a new expiry (at least now+lease).
func (s *Storage) refresh(h *heldLock, lease time.Duration) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := s.opts.Now()
	if until := now.Add(lease); lease > 0 && until.After(h.leaseUntil) {
		h.leaseUntil = until
	}
	exp := now.Add(s.opts.LockTTL)
	if h.leaseUntil.After(exp) {
		exp = h.leaseUntil
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.opts.LockTTL/3)
	defer cancel()
	idx, err := s.kv.KVPutCAS(ctx, s.lockKey(h.name), s.lockValue(h.token, exp), h.index)
	switch {
	case errors.Is(err, store.ErrVersionConflict):
		return ErrLockLost
	case errors.Is(err, store.ErrUnknownOutcome):
		if e, ok := s.kv.KVGet(s.lockKey(h.name)); ok {
			var lv lockValue
			if json.Unmarshal(e.Value, &lv) == nil && lv.Token == h.token {
				h.index = e.ModIndex
				return nil
			}
		}
		return err
	case err != nil:
		return err
	}
	h.index = idx
	return nil
}

// RenewLockLease keeps the held lock lockKey for at least leaseDuration from
// now (certmagic calls it between obtain retries).
func (s *Storage) RenewLockLease(ctx context.Context, lockKey string, leaseDuration time.Duration) error {
	s.mu.Lock()
	h := s.held[lockKey]
	s.mu.Unlock()
	if h == nil {
		return fmt.Errorf("certstore: renew lease of %q: %w", lockKey, ErrLockLost)
	}
	return s.refresh(h, leaseDuration)
}

// Unlock releases a lock this Storage holds: it stops the refresher and
// deletes the entry if it is still ours. A lock that was taken over in the
// meantime is left alone and reported (ErrLockLost).
func (s *Storage) Unlock(ctx context.Context, name string) error {
	s.mu.Lock()
	h := s.held[name]
	delete(s.held, name)
	released := s.released[name]
	delete(s.released, name)
	s.mu.Unlock()
	if h == nil {
		if released {
			return nil // ReleaseAll let it go, as this would have
		}
		return fmt.Errorf("certstore: unlock %q: not held by this node: %w", name, ErrLockLost)
	}
	return s.release(ctx, name, h)
}

// ReleaseAll lets go of every lock this node holds, as Unlock does, for a
// node that stops (drains) while certmagic's work holding them is being
// cancelled: otherwise the entries would stand until their TTL or lease
// (certmagic leases a lock until its next retry, hours later in a CA
// outage), and no other node could take the name meanwhile. A later
// Unlock of one of them by the work that held it returns nil.
func (s *Storage) ReleaseAll(ctx context.Context) {
	s.mu.Lock()
	held := s.held
	s.held = map[string]*heldLock{}
	for name := range held {
		s.released[name] = true
	}
	s.mu.Unlock()
	for name, h := range held {
		if err := s.release(ctx, name, h); err != nil {
			s.log.Warn("lock not released", "lock", name, "err", err)
		}
	}
}

// release stops a held lock's refresher and deletes its entry, if it is
// still the one this node wrote.
func (s *Storage) release(ctx context.Context, name string, h *heldLock) error {
	close(h.stop)
	<-h.done
	h.mu.Lock()
	idx := h.index
	h.mu.Unlock()
	ctx, cancel := s.writeCtx(ctx)
	defer cancel()
	err := s.kv.KVDeleteCAS(ctx, s.lockKey(name), idx)
	switch {
	case errors.Is(err, store.ErrVersionConflict):
		return fmt.Errorf("certstore: unlock %q: %w", name, ErrLockLost)
	case errors.Is(err, store.ErrUnknownOutcome):
		if e, ok := s.kv.KVGet(s.lockKey(name)); ok && e.ModIndex == idx {
			return fmt.Errorf("certstore: unlock %q: %w", name, err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("certstore: unlock %q: %w", name, err)
	}
	s.log.Debug("lock released", "lock", name)
	return nil
}

// Close stops the refreshers of locks still held (their entries expire after
// LockTTL). It does not release them: use certmagic.CleanUpOwnLocks or Unlock.
func (s *Storage) Close() {
	s.mu.Lock()
	held := s.held
	s.held = map[string]*heldLock{}
	s.mu.Unlock()
	for _, h := range held {
		close(h.stop)
		<-h.done
	}
}
