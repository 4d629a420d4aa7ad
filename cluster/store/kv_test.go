package store

import (
	"errors"
	"testing"
	"time"
)

// The generic KV: writes through a follower are read-your-writes, CAS gives a
// create-only lock, every node converges, and a restarted node has its keys
// before it hears from the leader.
func TestKV(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.start()
	ld := c.leader(5 * time.Second)
	f := c.follower(ld)
	ctx := ctxT(t, 10*time.Second)

	idx, err := f.s.KVPut(ctx, "certs/a.example", []byte("PEM"))
	if err != nil || idx == 0 {
		t.Fatalf("put: %d %v", idx, err)
	}
	if e, ok := f.s.KVGet("certs/a.example"); !ok || string(e.Value) != "PEM" || e.ModIndex != idx {
		t.Fatalf("get after put on the writing node: %+v %v", e, ok)
	}
	// Lock: create-only succeeds once.
	lockIdx, err := f.s.KVPutCAS(ctx, "locks/a.example", []byte("n1"), 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ld.s.KVPutCAS(ctx, "locks/a.example", []byte("n0"), 0); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("second lock: %v, want conflict", err)
	}
	if err := ld.s.KVDeleteCAS(ctx, "locks/a.example", lockIdx+1000); !errors.Is(err, ErrVersionConflict) {
		t.Fatalf("unlock with stale index: %v", err)
	}
	if err := f.s.KVDeleteCAS(ctx, "locks/a.example", lockIdx); err != nil {
		t.Fatal(err)
	}
	if _, err := f.s.KVPut(ctx, "certs/b.example", []byte("PEM2")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "kv converged", func() bool {
		for _, nd := range c.live() {
			l := nd.s.KVList("certs/")
			if len(l) != 2 || l[0].Key != "certs/a.example" || l[1].Key != "certs/b.example" {
				return false
			}
			if _, ok := nd.s.KVGet("locks/a.example"); ok {
				return false
			}
		}
		return true
	})
	// Restart: keys are there at once (local state file).
	other := f
	c.stop(other)
	s := c.open(other)
	if l := s.KVList(""); len(l) != 2 {
		t.Fatalf("restarted node kv: %+v", l)
	}
}
