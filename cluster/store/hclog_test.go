package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"testing"

	"github.com/hashicorp/raft"
)

// raft's errors about connections closed under it are debug lines once the
// store is closing, and errors before; its "node" key does not repeat ours.
func TestHclogAdapter(t *testing.T) {
	var closing, quiet bool
	var buf bytes.Buffer
	base := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", "n1")
	l := newHclog(base, "raft-net", func() bool { return closing }, func() bool { return quiet })
	rec := func() map[string]any {
		t.Helper()
		var m map[string]any
		if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
			t.Fatalf("%q: %v", buf.String(), err)
		}
		buf.Reset()
		return m
	}
	closedErr := fmt.Errorf("read tcp 127.0.0.1:1->127.0.0.1:2: %w", net.ErrClosed)
	for _, tc := range []struct {
		err            error
		closing, quiet bool
		want           string
	}{
		{closedErr, false, false, "ERROR"},
		{closedErr, true, false, "DEBUG"},
		{errors.New("connection refused"), true, false, "ERROR"},
		{errors.New("dial tcp 127.0.0.1:7001: operation was canceled"), true, false, "DEBUG"}, // the closing transport's
		// The whole cluster stopping together: peers going is expected.
		{errors.New("connection refused"), false, true, "DEBUG"},
	} {
		closing, quiet = tc.closing, tc.quiet
		l.Error("failed to decode incoming command", "error", tc.err)
		if m := rec(); m["level"] != tc.want || m["subsystem"] != "raft-net" {
			t.Errorf("%v (closing %v, quiet %v): %v; want level %s", tc.err, tc.closing, tc.quiet, m, tc.want)
		}
	}
	closing, quiet = false, false
	// The first election of a node that never knew a leader is no warning;
	// losing a known leader is.
	l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", raft.ServerAddress(""), "last-leader-id", raft.ServerID(""))
	if m := rec(); m["level"] != "INFO" {
		t.Errorf("first election: %v; want level INFO", m)
	}
	l.Warn("heartbeat timeout reached, starting election", "last-leader-addr", raft.ServerAddress("127.0.0.1:7002"), "last-leader-id", raft.ServerID("n2"))
	if m := rec(); m["level"] != "WARN" {
		t.Errorf("leader lost: %v; want level WARN", m)
	}
	l.Info("entering candidate state", "node", "Node at 127.0.0.1:7001 [Candidate]")
	if m := rec(); m["node"] != "n1" || m["raft_node"] != "Node at 127.0.0.1:7001 [Candidate]" {
		t.Errorf("raft's node key: %v; want ours kept and raft's as raft_node", m)
	}
}
