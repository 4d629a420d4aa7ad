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
	dc, err := StartDev(t.TempDir(), 3, off, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, n := range dc.Nodes {
			n.Drain(context.Background())
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
	st := dc.Nodes[0].cluster.Status()
	if len(st) != 3 {
		t.Fatalf("status lists %d members; want 3", len(st))
	}
}
