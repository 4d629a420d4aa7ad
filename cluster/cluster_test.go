package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/cluster/gossip"
	"github.com/meridian-gw/meridian/cluster/store"
)

// The answers a bootstrap_expect node gets from its peers before it
// bootstraps decide whether it may. The answers themselves come from real
// peers in cluster/store's tests (TestPeerHasState,
// TestPeerHasStateSilentPeer); a stall cannot be made to happen on time
// there, so they are given here.
func TestPeerMayHaveState(t *testing.T) {
	member := func(name string, st gossip.State) gossip.Member {
		m := gossip.Member{State: st}
		m.Name, m.ClusterAddr = name, name+":7001"
		return m
	}
	members := []gossip.Member{member("self", gossip.StateAlive), member("a", gossip.StateAlive), member("b", gossip.StateAlive), member("gone", gossip.StateDead)}
	for _, tc := range []struct {
		name    string
		answers map[string]error // per address; errHas: has state; nil: none
		want    bool
		logged  string
	}{
		{"no one has state", map[string]error{}, false, ""},
		{"a member has state", map[string]error{"b:7001": errHas}, true, "already has Raft state"},
		{"a member does not answer", map[string]error{"a:7001": context.DeadlineExceeded}, true, "did not answer"},
		{"an older version cannot tell", map[string]error{"a:7001": fmt.Errorf("not the leader: %w", store.ErrCannotTell)}, false, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			c := &Cluster{cfg: Config{Name: "self"}, log: slog.New(slog.NewTextHandler(&logs, nil)), ctx: context.Background()}
			var asked []string
			got := c.peerMayHaveState(members, func(_ context.Context, addr string) (bool, error) {
				asked = append(asked, addr)
				switch err := tc.answers[addr]; err {
				case errHas:
					return true, nil
				default:
					return false, err
				}
			})
			if got != tc.want {
				t.Errorf("peerMayHaveState = %v; want %v (asked %v)", got, tc.want, asked)
			}
			for _, a := range asked {
				if a == "self:7001" || a == "gone:7001" {
					t.Errorf("asked %s (itself, or a member dead in gossip)", a)
				}
			}
			if tc.logged != "" && !strings.Contains(logs.String(), tc.logged) {
				t.Errorf("log %q; want it to say %q", logs.String(), tc.logged)
			}
		})
	}
}

var errHas = errors.New("has state")
