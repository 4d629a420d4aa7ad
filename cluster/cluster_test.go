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
	noAnswer := context.DeadlineExceeded
	for _, tc := range []struct {
		name    string
		members []gossip.Member
		answers map[string]error // per address; errHas: has state; nil: none
		want    bool
		logged  string
		seated  bool // this node has state by the time it would log
	}{
		{"no one has state", []gossip.Member{member("a", gossip.StateAlive), member("b", gossip.StateAlive)}, nil, false, "", false},
		{"a member has state", []gossip.Member{member("a", gossip.StateAlive), member("b", gossip.StateAlive)},
			map[string]error{"b:7001": errHas}, true, "already has Raft state", false},
		// Seated while it asked (an outside check saw the INFO after the
		// seat on every node beyond bootstrap_expect): nothing said.
		{"a member has state and this node was seated meanwhile", []gossip.Member{member("a", gossip.StateAlive), member("b", gossip.StateAlive)},
			map[string]error{"b:7001": errHas}, true, "", true},
		{"an alive member does not answer", []gossip.Member{member("a", gossip.StateAlive)},
			map[string]error{"a:7001": noAnswer}, true, "has not said", false},
		// Suspect or dead, and never heard from: it may have state.
		{"a suspect member does not answer", []gossip.Member{member("a", gossip.StateAlive), member("s", gossip.StateSuspect)},
			map[string]error{"s:7001": noAnswer}, true, "has not said", false},
		{"a dead member never answered", []gossip.Member{member("a", gossip.StateAlive), member("d", gossip.StateDead)},
			map[string]error{"d:7001": noAnswer}, true, "has not said", false},
		{"an older version cannot tell", []gossip.Member{member("a", gossip.StateAlive)},
			map[string]error{"a:7001": fmt.Errorf("not the leader: %w", store.ErrCannotTell)}, false, "", false},
		{"a member that left is not asked", []gossip.Member{member("a", gossip.StateAlive), member("l", gossip.StateLeft)},
			map[string]error{"l:7001": errHas}, false, "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			c := &Cluster{cfg: Config{Name: "self"}, log: slog.New(slog.NewTextHandler(&logs, nil)), ctx: context.Background()}
			members := append([]gossip.Member{member("self", gossip.StateAlive)}, tc.members...)
			got := c.peerMayHaveState(members, func(_ context.Context, addr string) (bool, error) {
				if addr == "self:7001" {
					t.Errorf("asked itself")
				}
				if err := tc.answers[addr]; err == errHas {
					return true, nil
				} else {
					return false, err
				}
			}, func() bool { return tc.seated })
			if got != tc.want {
				t.Errorf("peerMayHaveState = %v; want %v", got, tc.want)
			}
			if tc.logged != "" && !strings.Contains(logs.String(), tc.logged) {
				t.Errorf("log %q; want it to say %q", logs.String(), tc.logged)
			}
			if tc.seated && logs.Len() > 0 {
				t.Errorf("logged %q after the node was seated", logs.String())
			}
		})
	}
	// A member that said it has no state, then went down, is not waited
	// for: it said so.
	c := &Cluster{cfg: Config{Name: "self"}, log: slog.New(slog.DiscardHandler), ctx: context.Background()}
	down := false
	ask := func(_ context.Context, addr string) (bool, error) {
		if addr == "d:7001" && down {
			return false, noAnswer
		}
		return false, nil
	}
	if c.peerMayHaveState([]gossip.Member{member("d", gossip.StateAlive)}, ask, func() bool { return false }) {
		t.Fatal("waited with every member saying it has no state")
	}
	down = true
	if !c.peerMayHaveState([]gossip.Member{member("d", gossip.StateAlive)}, ask, func() bool { return false }) {
		t.Error("did not wait for an alive member that stopped answering")
	}
	if c.peerMayHaveState([]gossip.Member{member("d", gossip.StateDead)}, ask, func() bool { return false }) {
		t.Error("waited for a dead member that had said it has no state")
	}
}

var errHas = errors.New("has state")
