package store

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Two of three voters lost for good: the survivor cannot elect a leader
// nor commit anything, the removal of the dead seats included. With the
// peers file naming only itself it starts as a cluster of one, keeps what
// it had, and takes writes again. A file it cannot use stops it with an
// error naming the file, which is left for the operator.
func TestRecoverAfterQuorumLoss(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.start()
	ld := c.leader(5 * time.Second)
	if _, err := ld.s.Apply(ctxT(t, 5*time.Second), []byte("before-the-loss"), 0); err != nil {
		t.Fatal(err)
	}
	c.converge(5*time.Second, 1)
	survivor := c.follower(ld)
	for _, nd := range c.live() {
		if nd != survivor {
			c.stop(nd)
		}
	}
	if _, err := survivor.s.Apply(ctxT(t, time.Second), []byte("x"), 0); !errors.Is(err, ErrNoLeader) {
		t.Fatalf("write without quorum: %v; want ErrNoLeader", err)
	}
	c.stop(survivor)
	peers := filepath.Join(survivor.dir, "raft", PeersFile)

	for _, bad := range []struct{ content, want string }{
		{`[{"id": "n9", "address": "127.0.0.9:7000"}]`, "does not list this node"},
		{`[{"id": "` + survivor.id + `", "address": "nowhere"}]`, "is not host:port"},
		{`[{"id": "` + survivor.id + `", "address": "` + survivor.addr + `", "non_voter": true}]`, "no voter listed"},
		{`{"id": "` + survivor.id + `"}`, "want a JSON list"},
		{`[{"id": "` + survivor.id + `", "addr": "` + survivor.addr + `"}]`, `unknown field "addr"`},
		{`[{"id": "` + survivor.id + `", "address": "` + survivor.addr + `", "Address": "127.0.0.99:1"}]`, `unknown field "Address"`},
	} {
		os.WriteFile(peers, []byte(bad.content), 0o600)
		if s, err := Open(survivor.config()); err == nil {
			s.Close()
			t.Fatalf("Open with peers file %s: no error", bad.content)
		} else if !strings.Contains(err.Error(), bad.want) || !strings.Contains(err.Error(), peers) {
			t.Errorf("Open with peers file %s: %v; want %q and the file's path", bad.content, err, bad.want)
		}
		if _, err := os.Stat(peers); err != nil {
			t.Fatalf("the refused peers file is gone: %v", err)
		}
	}

	os.WriteFile(peers, []byte(`[{"id": "`+survivor.id+`", "address": "`+survivor.addr+`"}]`), 0o600)
	s := c.open(survivor)
	if _, err := os.Stat(peers); !os.IsNotExist(err) {
		t.Fatalf("peers file after the recovery: %v; want it removed", err)
	}
	if cur := s.Current(); cur.Version != 1 || !bytes.Equal(cur.Raw, []byte("before-the-loss")) {
		t.Fatalf("after the recovery the node holds %d %q; want 1 before-the-loss", cur.Version, cur.Raw)
	}
	waitFor(t, 5*time.Second, "the survivor to lead", func() bool { return s.State() == "Leader" })
	a, err := s.Apply(ctxT(t, 5*time.Second), []byte("after-the-recovery"), 0)
	if err != nil || a.Version != 2 {
		t.Fatalf("write after the recovery: %+v, %v; want version 2", a, err)
	}
	servers, err := s.Servers()
	if err != nil || len(servers) != 1 || servers[0].ID != survivor.id {
		t.Fatalf("Raft configuration after the recovery: %+v, %v; want %s alone", servers, err, survivor.id)
	}
	// A restart does not apply it again (the file is gone) and keeps all.
	c.stop(survivor)
	s = c.open(survivor)
	waitFor(t, 5*time.Second, "the survivor to lead after a restart", func() bool { return s.State() == "Leader" })
	if cur := s.Current(); cur.Version != 2 {
		t.Fatalf("after a restart the node holds version %d; want 2", cur.Version)
	}
}
