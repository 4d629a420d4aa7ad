// Command clusterbench measures Meridian's cluster plane on loopback: real
// Raft (hashicorp/raft + raft-wal, mutual TLS from cluster/pki) and real
// memberlist gossip (AES-GCM encrypted), formed by cluster.Start with
// bootstrap_expect exactly as a node does, one node per 127.0.0.x address.
//
// For each cluster size (-nodes 3,5) it measures:
//
//   - commit-to-applied-everywhere latency of -writes sequential writes,
//     through the leader and through a follower: from the Apply call until
//     every node's Subscribe callback has seen the new version (plus the
//     Apply acknowledgement itself);
//   - leader failover, -failovers times: the leader is closed without
//     leaving (a crash); time until a new leader is known to every survivor
//     and until a write issued through a survivor right after the crash is
//     acknowledged; the crashed node is then restarted and must catch up;
//   - gossip join, -joins times: a fresh member joins through one seed; time
//     until every node lists it alive, until the leader's reconciliation has
//     added it to Raft, and until it has applied the current version.
//
// It prints a markdown table and writes JSON (-out). Everything is bounded
// (-wait per step, -timeout overall) and cleaned up (nodes closed, the temp
// dir removed unless -keep).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("clusterbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodesF := fs.String("nodes", "3,5", "comma-separated cluster sizes (voters)")
	var o Options
	fs.IntVar(&o.Writes, "writes", 200, "measured sequential writes per path (through the leader, through a follower)")
	fs.IntVar(&o.Warmup, "warmup", 3, "unmeasured writes per path before the measured ones")
	fs.IntVar(&o.Failovers, "failovers", 5, "leader crashes (the crashed node is restarted after each)")
	fs.IntVar(&o.Joins, "joins", 5, "fresh members joining by gossip")
	fs.BoolVar(&o.JoinVoter, "join-voter", false, "joining members are voters (default: non-voters)")
	fs.StringVar(&o.Timing, "timing", "lan", "lan: library defaults (Raft heartbeat/election 1s, commit 50ms; memberlist LAN); fast: the tests' short timings")
	fs.IntVar(&o.DocSize, "doc-size", 2048, "bytes per written document")
	fs.DurationVar(&o.Wait, "wait", 60*time.Second, "bound on each single wait (leader, convergence, join)")
	timeout := fs.Duration("timeout", 20*time.Minute, "bound on the whole run")
	out := fs.String("out", "bench/results/cluster.json", "JSON output (also writes the table next to it as .md); empty: none")
	fs.StringVar(&o.WorkDir, "workdir", "", "parent of the temporary directory (default: the system temp dir)")
	fs.BoolVar(&o.Keep, "keep", false, "keep the temporary directory (node logs and data)")
	quiet := fs.Bool("q", false, "no progress lines on stderr")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	var sizes []int
	for _, f := range strings.Split(*nodesF, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 || n > 200 {
			fmt.Fprintf(stderr, "clusterbench: bad -nodes entry %q\n", f)
			return 2
		}
		sizes = append(sizes, n)
	}
	if !*quiet {
		o.Progress = stderr
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()

	rep := Report{Meta: meta(args, o)}
	code := 0
	for _, n := range sizes {
		opts := o
		opts.Nodes = n
		if n < 3 {
			opts.Failovers = 0
		}
		res, err := Run(ctx, opts)
		if err != nil {
			fmt.Fprintf(stderr, "clusterbench: %d nodes: %v\n", n, err)
			rep.Errors = append(rep.Errors, fmt.Sprintf("%d nodes: %v", n, err))
			code = 1
			continue
		}
		rep.Results = append(rep.Results, res)
	}
	md := rep.Markdown()
	fmt.Fprint(stdout, md)
	if *out != "" {
		if err := os.MkdirAll(filepath.Dir(*out), 0o755); err != nil {
			fmt.Fprintf(stderr, "clusterbench: %v\n", err)
			return 1
		}
		data, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(*out, append(data, '\n'), 0o644); err != nil {
			fmt.Fprintf(stderr, "clusterbench: %v\n", err)
			return 1
		}
		mdPath := strings.TrimSuffix(*out, filepath.Ext(*out)) + ".md"
		if err := os.WriteFile(mdPath, []byte(md), 0o644); err != nil {
			fmt.Fprintf(stderr, "clusterbench: %v\n", err)
			return 1
		}
	}
	return code
}

// Report is the JSON output.
type Report struct {
	Meta    map[string]any `json:"meta"`
	Results []*Result      `json:"results"`
	Errors  []string       `json:"errors,omitempty"`
}

func meta(args []string, o Options) map[string]any {
	m := map[string]any{
		"date":       time.Now().UTC().Format(time.RFC3339),
		"go":         runtime.Version(),
		"gomaxprocs": runtime.GOMAXPROCS(0),
		"num_cpu":    runtime.NumCPU(),
		"args":       args,
		"timing":     o.Timing,
		"writes":     o.Writes,
		"warmup":     o.Warmup,
		"failovers":  o.Failovers,
		"joins":      o.Joins,
		"join_voter": o.JoinVoter,
		"doc_size":   o.DocSize,
	}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if strings.HasPrefix(l, "model name") {
				if _, v, ok := strings.Cut(l, ":"); ok {
					m["cpu"] = strings.TrimSpace(v)
				}
				break
			}
		}
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m["commit"] = strings.TrimSpace(string(out))
	}
	return m
}

// Markdown renders the results as one table.
func (r *Report) Markdown() string {
	var b strings.Builder
	b.WriteString("| nodes | measurement | n | p50 ms | p99 ms | max ms |\n|---:|---|---:|---:|---:|---:|\n")
	row := func(nodes int, what string, s Stat) {
		p99 := "–" // meaningless for a handful of samples
		if s.Count >= 20 {
			p99 = fmt.Sprintf("%.1f", s.P99)
		}
		fmt.Fprintf(&b, "| %d | %s | %d | %.1f | %s | %.1f |\n", nodes, what, s.Count, s.P50, p99, s.Max)
	}
	for _, res := range r.Results {
		fmt.Fprintf(&b, "| %d | cluster formed (bootstrap_expect → leader known to all) | 1 | %.1f | – | %.1f |\n", res.Nodes, res.FormationMs, res.FormationMs)
		for _, w := range res.Writes {
			row(res.Nodes, "write via "+w.Via+": Apply acknowledged", w.Ack)
			row(res.Nodes, "write via "+w.Via+": applied on every node", w.Everywhere)
		}
		if f := res.Failover; f != nil {
			row(res.Nodes, "leader crash → new leader known to all survivors", f.LeaderKnown)
			row(res.Nodes, "leader crash → next write acknowledged", f.WriteAck)
			row(res.Nodes, "crashed node restarted → caught up", f.Rejoin)
		}
		if j := res.Join; j != nil {
			kind := "non-voter"
			if j.Voter {
				kind = "voter"
			}
			row(res.Nodes, "new "+kind+" joins 1 seed → alive in every member list", j.GossipAll)
			row(res.Nodes, "new "+kind+" joins → in leader's Raft configuration", j.RaftAdded)
			row(res.Nodes, "new "+kind+" joins → applied current version", j.Applied)
		}
	}
	if len(r.Results) > 0 {
		fmt.Fprintf(&b, "\nTiming %v, %v-byte documents, loopback (127.0.0.x), mutual TLS 1.3 + encrypted gossip; %v, GOMAXPROCS %v.\n",
			r.Meta["timing"], r.Meta["doc_size"], r.Meta["cpu"], r.Meta["gomaxprocs"])
	}
	for _, e := range r.Errors {
		fmt.Fprintf(&b, "\nFAILED: %s\n", e)
	}
	return b.String()
}
