package node

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/testutil"
)

// `meridian dev --nodes 3` in one call: three nodes form a cluster, the
// demo document reaches all of them, and each answers the demo routes.
func TestStartDevCluster(t *testing.T) {
	off := 20000 + rand.IntN(20)*100 // away from the defaults, which a developer may be running
	for i := 1; i <= 3; i++ {
		h, a, c, g := DevPorts(i, off)
		for _, p := range []int{h, a, c, g} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				t.Skipf("port %d busy: %v", p, err)
			}
			l.Close()
		}
	}
	var logs testutil.SyncBuffer
	dc, err := StartDev(t.TempDir(), 3, off, slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	defer func() {
		for _, n := range dc.Nodes {
			if !stopped {
				n.Drain(context.Background())
			}
		}
	}()
	waitUntil(t, 30*time.Second, "version 1 on all dev nodes", func() bool {
		for _, n := range dc.Nodes {
			if s := n.Gateway().Current(); s == nil || s.Version != 1 {
				return false
			}
		}
		return true
	})
	for _, n := range dc.Nodes {
		code, body := get(t, http.DefaultClient, "http://"+n.ProxyAddr()+"/hello")
		if code != 200 || !strings.Contains(body, "Hello from the Meridian demo backend") {
			t.Errorf("%s /hello: %d %q", n.ProxyAddr(), code, body)
		}
	}
	// Every node's view of every member, its addresses and applied
	// version included, is current within a few gossip rounds (the
	// periodic full sync, every 30 s, must not be what delivers it; 15 s
	// leaves room for a loaded CI machine, where 5 s once fell short).
	var last string
	current := func() bool {
		for _, n := range dc.Nodes {
			st := n.cluster.Status()
			if len(st) != 3 {
				last = fmt.Sprintf("%s lists %d members", n.cfg.Name, len(st))
				return false
			}
			for _, m := range st {
				if m.HTTPAddr == "" || m.AdminAddr == "" || m.ConfigVersion != 1 {
					last = fmt.Sprintf("%s sees %s with http %q admin %q version %d", n.cfg.Name, m.Name, m.HTTPAddr, m.AdminAddr, m.ConfigVersion)
					return false
				}
			}
		}
		return true
	}
	for deadline := time.Now().Add(15 * time.Second); !current(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			for _, n := range dc.Nodes {
				t.Logf("%s: local %+v, gossip %+v", n.cfg.Name, n.cluster.Members.LocalMeta(), n.cluster.Members.Stats())
			}
			t.Fatalf("after 15s, not every node's status is current: %s", last)
		}
	}
	// The cluster's own log lines (Raft, gossip, bootstrap) name each key
	// once, as the single node's do (TestLogLinesAreJSONWithoutDuplicateKeys).
	for l := range strings.SplitSeq(strings.TrimSpace(logs.String()), "\n") {
		if dup, err := duplicateKey([]byte(l)); err != nil || dup != "" {
			t.Fatalf("log line %s: duplicate key %q (%v)", l, dup, err)
		}
	}
	// Ctrl-C: every node told that all stop, then all drained at once.
	// Nothing is a warning or an error (Raft's leader used to fill a
	// screen with peers it could not reach, and wait on them).
	mark := len(logs.String())
	dc.Stop()
	stopped = true
	for l := range strings.SplitSeq(logs.String()[mark:], "\n") {
		if strings.Contains(l, `"level":"WARN"`) || strings.Contains(l, `"level":"ERROR"`) {
			t.Errorf("while all stopped: %s", l)
		}
	}
}
