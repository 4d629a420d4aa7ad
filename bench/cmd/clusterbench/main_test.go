package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// The whole program with tiny counts and the tests' short timings: 3 nodes,
// 5 writes per path, 1 failover, 1 join. Keeps the harness from rotting.
func TestRunTiny(t *testing.T) {
	base := runtime.NumGoroutine()
	work := t.TempDir()
	out := filepath.Join(t.TempDir(), "cluster.json")
	var stdout, stderr bytes.Buffer
	args := []string{"-nodes", "3", "-writes", "5", "-warmup", "1", "-failovers", "1", "-joins", "1",
		"-timing", "fast", "-wait", "15s", "-timeout", "60s", "-workdir", work, "-out", out}
	if code := run(args, &stdout, &stderr); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, stdout.String(), stderr.String())
	}
	md := stdout.String()
	for _, want := range []string{"write via leader: applied on every node", "write via follower: Apply acknowledged",
		"leader crash → new leader known to all survivors", "alive in every member list", "in leader's Raft configuration"} {
		if !strings.Contains(md, want) {
			t.Errorf("table lacks %q:\n%s", want, md)
		}
	}
	var rep Report
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Results) != 1 || len(rep.Errors) != 0 {
		t.Fatalf("report: %+v", rep)
	}
	r := rep.Results[0]
	if len(r.Writes) != 2 || r.Writes[0].Everywhere.Count != 5 || r.Writes[1].Everywhere.Count != 5 {
		t.Errorf("writes: %+v", r.Writes)
	}
	for _, w := range r.Writes {
		// Positive and bounded (the wait is 15s).
		if w.Ack.P50 <= 0 || w.Everywhere.P50 <= 0 || w.Everywhere.Max > 15000 {
			t.Errorf("implausible %s latencies: %+v", w.Via, w)
		}
	}
	if r.Failover == nil || r.Failover.LeaderKnown.Count != 1 || r.Failover.WriteAck.Count != 1 ||
		r.Failover.WriteAck.Max < r.Failover.CloseTook.Max {
		t.Errorf("failover: %+v", r.Failover)
	}
	if r.Join == nil || r.Join.GossipAll.Count != 1 || r.Join.RaftAdded.Count != 1 {
		t.Errorf("join: %+v", r.Join)
	}
	// Cleaned up: no temp dir left, no goroutines left behind.
	if ents, _ := os.ReadDir(work); len(ents) != 0 {
		t.Errorf("work dir not cleaned: %v", ents)
	}
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > base+2 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base+2 {
		buf := make([]byte, 1<<20)
		t.Errorf("goroutines: %d after the run, %d before\n%s", n, base, buf[:runtime.Stack(buf, true)])
	}
}

// Bad flags and impossible settings fail fast, without starting anything.
func TestRunRejects(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-nodes", "0"}, &stdout, &stderr); code != 2 {
		t.Errorf("-nodes 0: exit %d", code)
	}
	if _, err := Run(context.Background(), Options{Nodes: 3, Timing: "wan"}); err == nil {
		t.Error("timing wan accepted")
	}
}
