package certstore

import (
	"context"
	"errors"
	"fmt"
	"github.com/meridian-gw/meridian/internal/testutil"
	"io/fs"
	"log/slog"
	"net"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/cluster/pki"
	"github.com/meridian-gw/meridian/cluster/store"
)

// --- harness: a real Raft cluster on 127.0.0.x with mutual TLS ----------------

type syncBuffer = testutil.SyncBuffer

type tnode struct {
	id   string
	s    *store.Store
	logs *syncBuffer
}

func checkGoroutines(t *testing.T) {
	t.Helper()
	base := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(10 * time.Second)
		var n int
		for time.Now().Before(deadline) {
			if n = runtime.NumGoroutine(); n <= base+2 {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		t.Errorf("goroutines: %d after cleanup, baseline %d\n%s", n, base, buf)
	})
}

// newCluster starts n voters (127.0.0.1..n) and waits for a leader known to all.
func newCluster(t *testing.T, n int) []*tnode {
	t.Helper()
	checkGoroutines(t)
	caDir := filepath.Join(t.TempDir(), "ca")
	if err := pki.CreateCA(caDir); err != nil {
		t.Fatal(err)
	}
	var nodes []*tnode
	t.Cleanup(func() {
		for _, nd := range nodes {
			if nd.s != nil {
				nd.s.Close()
			}
		}
		if t.Failed() {
			for _, nd := range nodes {
				t.Logf("---- log of %s ----\n%s", nd.id, nd.logs.String())
			}
		}
	})
	var servers []store.Server
	for i := 0; i < n; i++ {
		id, ip := fmt.Sprintf("n%d", i), fmt.Sprintf("127.0.0.%d", i+1)
		out := filepath.Join(t.TempDir(), "certs-"+id)
		if err := pki.IssueNodeCert(caDir, id, []net.IP{net.ParseIP(ip)}, nil, out); err != nil {
			t.Fatal(err)
		}
		tc, err := pki.LoadMutualTLS(filepath.Join(caDir, pki.CACertFile), filepath.Join(out, id+".crt"), filepath.Join(out, id+".key"))
		if err != nil {
			t.Fatal(err)
		}
		logs := &syncBuffer{}
		s, err := store.Open(store.Config{
			ID: id, BindAddr: ip + ":0", DataDir: filepath.Join(t.TempDir(), id), TLS: tc,
			Logger:           slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
			HeartbeatTimeout: 150 * time.Millisecond, ElectionTimeout: 150 * time.Millisecond,
			LeaderLeaseTimeout: 100 * time.Millisecond, CommitTimeout: 20 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		nodes = append(nodes, &tnode{id: id, s: s, logs: logs})
		servers = append(servers, store.Server{ID: id, Addr: s.Addr(), Voter: true})
	}
	for _, nd := range nodes {
		if err := nd.s.BootstrapCluster(servers); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 10*time.Second, "a leader known to every node", func() bool {
		leaders := 0
		var lid string
		for _, nd := range nodes {
			if nd.s.State() == "Leader" {
				leaders++
				lid = nd.id
			}
		}
		if leaders != 1 {
			return false
		}
		for _, nd := range nodes {
			if id, _ := nd.s.Leader(); id != lid {
				return false
			}
		}
		return true
	})
	return nodes
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// countingKV counts lock attempts (KVPutCAS calls and KVGet of lock keys).
type countingKV struct {
	KV
	lockReads atomic.Int64
}

func (c *countingKV) KVGet(key string) (store.KVEntry, bool) {
	if strings.HasPrefix(key, DefaultLockPrefix) {
		c.lockReads.Add(1)
	}
	return c.KV.KVGet(key)
}

func newStorage(t *testing.T, kv KV, id string, ttl time.Duration) *Storage {
	s := New(kv, Options{NodeID: id, LockTTL: ttl, PollInterval: 20 * time.Millisecond})
	t.Cleanup(s.Close)
	return s
}

// --- tests ----------------------------------------------------------------------

// Store on one node; Load/Exists/Stat/List on others once replicated (and at once
// on the writer: read-your-writes); ErrNotExist semantics; Delete of a key and of a
// directory; the size bound.
func TestStorageReplicated(t *testing.T) {
	nodes := newCluster(t, 3)
	ctx := ctxT(t, 20*time.Second)
	a := newStorage(t, nodes[0].s, "n0", 0)
	b := newStorage(t, nodes[1].s, "n1", 0)
	c := newStorage(t, nodes[2].s, "n2", 0)

	// Missing keys: fs.ErrNotExist everywhere certmagic checks it.
	if _, err := b.Load(ctx, "certificates/x/x.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load missing: %v, want fs.ErrNotExist", err)
	}
	if _, err := b.Stat(ctx, "certificates/x/x.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat missing: %v", err)
	}
	if _, err := b.List(ctx, "certificates", true); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("List missing: %v", err)
	}
	if b.Exists(ctx, "certificates/x/x.crt") {
		t.Fatal("Exists on a missing key")
	}
	if err := b.Delete(ctx, "certificates/x/x.crt"); err != nil {
		t.Fatalf("Delete missing: %v, want nil", err)
	}

	before := time.Now()
	files := map[string]string{
		"certificates/acme-v02/api.example/api.example.crt":  "CERT",
		"certificates/acme-v02/api.example/api.example.key":  "KEY",
		"certificates/acme-v02/api.example/api.example.json": `{"sans":["api.example"]}`,
		"certificates/acme-v02/www.example/www.example.crt":  "CERT2",
		"acme/acme-v02/users/x/x.json":                       "{}",
		"certificatesX/unrelated":                            "u", // not under "certificates" by component
	}
	for k, v := range files {
		if err := a.Store(ctx, k, []byte(v)); err != nil {
			t.Fatal(err)
		}
		// Read-your-writes on the writer.
		if got, err := a.Load(ctx, k); err != nil || string(got) != v {
			t.Fatalf("Load on writer right after Store %q: %q %v", k, got, err)
		}
	}
	crt := "certificates/acme-v02/api.example/api.example.crt"
	waitFor(t, 5*time.Second, "keys replicated to n1 and n2", func() bool {
		for _, s := range []*Storage{b, c} {
			for k, v := range files {
				if got, err := s.Load(ctx, k); err != nil || string(got) != v {
					return false
				}
			}
		}
		return true
	})
	for _, s := range []*Storage{a, b, c} {
		ki, err := s.Stat(ctx, crt)
		if err != nil || !ki.IsTerminal || ki.Size != 4 || ki.Key != crt || ki.Modified.Before(before.Add(-time.Second)) || ki.Modified.After(time.Now()) {
			t.Fatalf("Stat %q: %+v %v", crt, ki, err)
		}
		ki, err = s.Stat(ctx, "certificates/acme-v02")
		if err != nil || ki.IsTerminal || ki.Modified.IsZero() {
			t.Fatalf("Stat directory: %+v %v", ki, err)
		}
		if !s.Exists(ctx, crt) || !s.Exists(ctx, "certificates") || s.Exists(ctx, "certificates/acme") {
			t.Fatal("Exists: want true for a key and a directory, false for a partial component")
		}
	}
	// List, with FileStorage's semantics.
	got, err := b.List(ctx, "certificates", false)
	if want := []string{"certificates/acme-v02"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("List non-recursive: %q %v, want %q", got, err, want)
	}
	got, err = b.List(ctx, "certificates/acme-v02", false)
	if want := []string{"certificates/acme-v02/api.example", "certificates/acme-v02/www.example"}; err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("List non-recursive: %q %v, want %q", got, err, want)
	}
	got, err = c.List(ctx, "certificates/", true)
	want := []string{
		"certificates/acme-v02",
		"certificates/acme-v02/api.example",
		"certificates/acme-v02/api.example/api.example.crt",
		"certificates/acme-v02/api.example/api.example.json",
		"certificates/acme-v02/api.example/api.example.key",
		"certificates/acme-v02/www.example",
		"certificates/acme-v02/www.example/www.example.crt",
	}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("List recursive: %q %v\nwant %q", got, err, want)
	}
	if _, err := b.Load(ctx, "certificates/acme-v02"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a directory: %v, want fs.ErrNotExist", err)
	}

	// Overwrite from another node, then Delete a key and a directory.
	if err := c.Store(ctx, crt, []byte("CERT-RENEWED")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "overwrite replicated to n0", func() bool {
		v, err := a.Load(ctx, crt)
		return err == nil && string(v) == "CERT-RENEWED"
	})
	if err := b.Delete(ctx, "certificates/acme-v02/www.example/www.example.crt"); err != nil {
		t.Fatal(err)
	}
	if b.Exists(ctx, "certificates/acme-v02/www.example") {
		t.Fatal("directory still exists after deleting its only key")
	}
	if err := b.Delete(ctx, "certificates"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "deletes replicated", func() bool {
		for _, s := range []*Storage{a, b, c} {
			if s.Exists(ctx, "certificates") || !s.Exists(ctx, "certificatesX/unrelated") || !s.Exists(ctx, "acme/acme-v02/users/x/x.json") {
				return false
			}
		}
		return true
	})
	if _, err := a.Load(ctx, crt); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load after Delete: %v", err)
	}

	// Values are bounded.
	if err := a.Store(ctx, "big", make([]byte, DefaultMaxValueSize+1)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Store of an oversized value: %v", err)
	}
	// Nothing was written outside the prefix but the lock space.
	for _, e := range nodes[0].s.KVList("") {
		if !strings.HasPrefix(e.Key, DefaultPrefix) {
			t.Fatalf("key outside the prefix: %q", e.Key)
		}
	}
}

// Two nodes contend for one lock: the second blocks while the first holds it, even
// past several TTLs (the holder refreshes it), and gets it once the first unlocks.
// A second Lock from the same node blocks too.
func TestLockMutualExclusion(t *testing.T) {
	nodes := newCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	const ttl = 600 * time.Millisecond
	a := newStorage(t, nodes[0].s, "n0", ttl)
	bkv := &countingKV{KV: nodes[1].s}
	b := newStorage(t, bkv, "n1", ttl)

	if err := a.Lock(ctx, "issue_cert_api.example"); err != nil {
		t.Fatal(err)
	}
	first, _ := nodes[0].s.KVGet(DefaultLockPrefix + "issue_cert_api.example")

	var got atomic.Bool
	errc := make(chan error, 1)
	go func() {
		err := b.Lock(ctx, "issue_cert_api.example")
		got.Store(true)
		errc <- err
	}()
	// B polls (every 20ms) for more than 3 TTLs: it must never get the lock, because A
	// refreshes it (an unrefreshed lock would expire after one TTL and be taken over).
	start := time.Now()
	waitFor(t, 15*time.Second, "n1 to poll the held lock for 3 TTLs", func() bool {
		if got.Load() {
			t.Fatalf("n1 got the lock while n0 held it (after %v)", time.Since(start))
		}
		return bkv.lockReads.Load() >= 10 && time.Since(start) > 3*ttl
	})
	if got.Load() {
		t.Fatal("n1 got the lock while n0 held it")
	}
	cur, ok := nodes[0].s.KVGet(DefaultLockPrefix + "issue_cert_api.example")
	if !ok || cur.ModIndex <= first.ModIndex {
		t.Fatalf("lock entry not refreshed: first index %d, now %+v", first.ModIndex, cur)
	}

	// Another Lock from n0 itself blocks as well (locks are per acquisition, not per node).
	ctxShort, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err := a.Lock(ctxShort, "issue_cert_api.example")
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second Lock on the holding node: %v, want it to block until its context ends", err)
	}

	if err := a.Unlock(ctx, "issue_cert_api.example"); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("n1 did not get the lock after n0 unlocked")
	}
	// Unlocking what we do not hold is refused, and leaves n1's lock alone.
	if err := a.Unlock(ctx, "issue_cert_api.example"); !errors.Is(err, ErrLockLost) {
		t.Fatalf("Unlock of a lock not held: %v", err)
	}
	if _, ok := nodes[1].s.KVGet(DefaultLockPrefix + "issue_cert_api.example"); !ok {
		t.Fatal("n1's lock entry vanished")
	}
	if err := b.Unlock(ctx, "issue_cert_api.example"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "lock entry gone everywhere", func() bool {
		for _, nd := range nodes {
			if _, ok := nd.s.KVGet(DefaultLockPrefix + "issue_cert_api.example"); ok {
				return false
			}
		}
		return true
	})
	// TryLock: one attempt.
	if ok, err := a.TryLock(ctx, "storage_clean"); !ok || err != nil {
		t.Fatalf("TryLock free: %v %v", ok, err)
	}
	waitFor(t, 5*time.Second, "n1 sees the lock", func() bool {
		_, ok := nodes[1].s.KVGet(DefaultLockPrefix + "storage_clean")
		return ok
	})
	if ok, err := b.TryLock(ctx, "storage_clean"); ok || err != nil {
		t.Fatalf("TryLock held: %v %v", ok, err)
	}
	if err := a.Unlock(ctx, "storage_clean"); err != nil {
		t.Fatal(err)
	}
}

// A node dies holding a lock: once the lock's expiry passes, another node takes it
// over (compare-and-set on its index); the dead holder's late Unlock does not
// release the new holder's lock.
func TestLockTakeoverFromDeadHolder(t *testing.T) {
	nodes := newCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	const ttl = 600 * time.Millisecond
	// The holder must not be the leader, so the two survivors keep a quorum without
	// an election (it would work too, only slower).
	var holder, other *tnode
	for _, nd := range nodes {
		if nd.s.State() != "Leader" {
			if holder == nil {
				holder = nd
			} else {
				other = nd
			}
		}
	}
	h := newStorage(t, holder.s, holder.id, ttl)
	o := newStorage(t, other.s, other.id, ttl)
	if err := h.Lock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "lock replicated", func() bool {
		_, ok := other.s.KVGet(DefaultLockPrefix + "issue_cert_x")
		return ok
	})
	// The holder's node dies: its store closes, its refresher can no longer write.
	holder.s.Close()
	died := time.Now()
	if err := o.Lock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(died); waited > ttl+5*time.Second {
		t.Fatalf("takeover took %v (ttl %v)", waited, ttl)
	}
	e, ok := other.s.KVGet(DefaultLockPrefix + "issue_cert_x")
	if !ok || !strings.Contains(string(e.Value), `"holder":"`+other.id+`"`) {
		t.Fatalf("lock entry after takeover: %s", e.Value)
	}
	// The dead holder's Unlock (its store is closed) must not release the new lock.
	if err := h.Unlock(context.Background(), "issue_cert_x"); err == nil {
		t.Fatal("Unlock on the dead holder succeeded")
	}
	if e2, ok := other.s.KVGet(DefaultLockPrefix + "issue_cert_x"); !ok || e2.ModIndex < e.ModIndex {
		t.Fatal("new holder's lock disturbed")
	}
	if err := o.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
}

// A lock that expired and was taken over while its holder was merely slow: the old
// holder's Unlock finds it is no longer its own and leaves it (CAS on the index).
func TestUnlockAfterTakeover(t *testing.T) {
	nodes := newCluster(t, 3)
	ctx := ctxT(t, 20*time.Second)
	a := newStorage(t, nodes[0].s, "n0", time.Hour)
	b := newStorage(t, nodes[1].s, "n1", time.Hour)
	if err := a.Lock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
	// Simulate expiry: rewrite the entry as expired (as a holder that stopped
	// refreshing would leave it), keeping a's token.
	e, _ := nodes[0].s.KVGet(DefaultLockPrefix + "l")
	expired := strings.Replace(string(e.Value), `"expires":"`, `"expires":"2000-01-01T00:00:00Z","x":"`, 1)
	if _, err := nodes[0].s.KVPutCAS(ctx, DefaultLockPrefix+"l", []byte(expired), e.ModIndex); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "expired lock replicated", func() bool {
		e, ok := nodes[1].s.KVGet(DefaultLockPrefix + "l")
		return ok && strings.Contains(string(e.Value), "2000-01-01")
	})
	if ok, err := b.TryLock(ctx, "l"); !ok || err != nil {
		t.Fatalf("takeover of an expired lock: %v %v", ok, err)
	}
	if err := a.Unlock(ctx, "l"); !errors.Is(err, ErrLockLost) {
		t.Fatalf("old holder's Unlock: %v, want ErrLockLost", err)
	}
	if _, ok := nodes[1].s.KVGet(DefaultLockPrefix + "l"); !ok {
		t.Fatal("old holder's Unlock removed the new holder's lock")
	}
	if err := b.Unlock(ctx, "l"); err != nil {
		t.Fatal(err)
	}
}

// ReleaseAll (a draining node) lets go of held locks at once, so that
// another node takes the name without waiting for the lock's TTL or lease;
// the cancelled work's own Unlock afterwards is not an error.
func TestReleaseAllLetsOthersTakeTheLock(t *testing.T) {
	nodes := newCluster(t, 3)
	ctx := ctxT(t, 30*time.Second)
	const ttl = time.Hour // a release, not an expiry, must free it
	h := newStorage(t, nodes[0].s, nodes[0].id, ttl)
	o := newStorage(t, nodes[1].s, nodes[1].id, ttl)
	if err := h.Lock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
	h.ReleaseAll(ctx)
	lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := o.Lock(lctx, "issue_cert_x"); err != nil {
		t.Fatalf("another node could not take the released lock: %v", err)
	}
	if err := h.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Errorf("the released lock's holder's Unlock: %v; want nil", err)
	}
	if e, ok := nodes[1].s.KVGet(DefaultLockPrefix + "issue_cert_x"); !ok || !strings.Contains(string(e.Value), `"holder":"`+nodes[1].id+`"`) {
		t.Errorf("the new holder's lock was disturbed: %s", e.Value)
	}
	if err := o.Unlock(ctx, "issue_cert_x"); err != nil {
		t.Fatal(err)
	}
}
