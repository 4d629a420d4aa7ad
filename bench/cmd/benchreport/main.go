// Command benchreport turns the per-run loadgen JSON files and the RSS
// measurements collected by bench/run.sh into a markdown table (stdout) and
// one combined JSON document (-out).
//
// Inputs (tab-separated, one record per line, '#' comments allowed):
//
//	-runs:  proto  target  conns  path-to-loadgen-json  [target_cpu_us  backend_cpu_us]
//	        proto  target  conns  -  [reason]      (a failed run)
//	        (proto is h1, tls, h2, h3, handshakes, ...; the CPU columns are
//	        the user+system time the target's and the backend's process
//	        trees used over the measured part of the run)
//
// A (proto, target, conns) triple may appear several times (BENCH_REPEAT):
// the run with the median req/s is reported, with the spread of req/s over
// runs. Ratios are to the baseline of the same proto and conns: target
// "direct" (plain HTTP) or "direct-tls" (the backend serving TLS itself).
//
//	-rss:   target  idle_kib  peak_kib             ("-" = not measured)
//	-meta:  key  value                             (copied into the JSON)
//	-notes: free text lines                        (printed under the table)
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"
)

type loadResult struct {
	URL        string  `json:"url"`
	Proto      string  `json:"proto,omitempty"`
	Handshakes bool    `json:"handshakes,omitempty"`
	HSPerS     float64 `json:"handshakes_per_s,omitempty"`
	TLSResumed int64   `json:"tls_resumed,omitempty"`
	Requests   int64   `json:"requests"`
	RPS        float64 `json:"rps"`
	Errors     int64   `json:"errors"`
	Non2xx     int64   `json:"non_2xx"`
	Reconnects int64   `json:"reconnects"`
	ErrSample  string  `json:"error_sample,omitempty"`
	// From the runs TSV, not loadgen: CPU µs over the measured window
	// (negative: not measured).
	targetCPU, backendCPU float64
	LatencyNS             struct {
		Mean int64 `json:"mean"`
		P50  int64 `json:"p50"`
		P90  int64 `json:"p90"`
		P99  int64 `json:"p99"`
		P999 int64 `json:"p99_9"`
		Max  int64 `json:"max"`
	} `json:"latency_ns"`
}

// Row is one (target, conns) measurement in the combined output.
type Row struct {
	Proto      string      `json:"proto"`
	Target     string      `json:"target"`
	Conns      int         `json:"conns"`
	OK         bool        `json:"ok"`
	Result     *loadResult `json:"result,omitempty"`
	IdleRSSMiB *float64    `json:"idle_rss_mib,omitempty"`
	PeakRSSMiB *float64    `json:"peak_rss_mib,omitempty"`
	RPSRatio   *float64    `json:"rps_ratio_to_direct,omitempty"`
	P99Ratio   *float64    `json:"p99_ratio_to_direct,omitempty"`
	// CPU per request of the reported (median) run: the proxy's process
	// tree (not set for the baselines, where the backend is the target)
	// and the backend's. Both share one CPU when pinned.
	ProxyCPUus   *float64  `json:"proxy_cpu_us_per_request,omitempty"`
	BackendCPUus *float64  `json:"backend_cpu_us_per_request,omitempty"`
	FailedReason string    `json:"failed_reason,omitempty"`
	Runs         int       `json:"runs"`                  // successful runs of this pair
	RPSAll       []float64 `json:"rps_all,omitempty"`     // req/s of every successful run
	FailedRuns   int       `json:"failed_runs,omitempty"` // runs that produced no result
}

// Report is the -out document.
type Report struct {
	GeneratedAt time.Time         `json:"generated_at"`
	Meta        map[string]string `json:"meta"`
	Notes       []string          `json:"notes,omitempty"`
	Rows        []Row             `json:"rows"`
	// Versus compares Meridian with every other proxy measured with the
	// same proto and conns: the ratios the targets are written in.
	Versus []Versus `json:"meridian_versus,omitempty"`
}

// Versus is Meridian's median run divided by a peer's, same proto and conns.
type Versus struct {
	Proto    string  `json:"proto"`
	Conns    int     `json:"conns"`
	Peer     string  `json:"peer"`
	RPSRatio float64 `json:"rps_ratio"` // above 1: Meridian served more
	P99Ratio float64 `json:"p99_ratio"` // below 1: Meridian's p99 was lower
	// CPURatio is proxy CPU per request, Meridian's over the peer's
	// (below 1: Meridian used less); 0 when either was not measured.
	CPURatio float64 `json:"cpu_ratio,omitempty"`
	// Meridian is the Meridian target divided ("meridian", "meridian-bare"
	// or "meridian-tls").
	Meridian string `json:"meridian"`
}

// versus pairs each successful meridian row (target "meridian",
// "meridian-bare" or "meridian-tls") with every successful peer row of its
// proto and conns, baselines and Meridian's other rows excluded, in the
// rows' order.
func versus(rows []Row) []Versus {
	var out []Versus
	for _, m := range rows {
		if !m.OK || !strings.HasPrefix(m.Target, "meridian") {
			continue
		}
		for _, p := range rows {
			if !p.OK || p.Proto != m.Proto || p.Conns != m.Conns || strings.HasPrefix(p.Target, "meridian") ||
				isBaseline(p.Target) || p.Result.RPS <= 0 || p.Result.LatencyNS.P99 <= 0 {
				continue
			}
			v := Versus{
				Proto: m.Proto, Conns: m.Conns, Peer: p.Target, Meridian: m.Target,
				RPSRatio: m.Result.RPS / p.Result.RPS,
				P99Ratio: float64(m.Result.LatencyNS.P99) / float64(p.Result.LatencyNS.P99),
			}
			if m.ProxyCPUus != nil && p.ProxyCPUus != nil && *p.ProxyCPUus > 0 {
				v.CPURatio = *m.ProxyCPUus / *p.ProxyCPUus
			}
			out = append(out, v)
		}
	}
	return out
}

func main() {
	runsPath := flag.String("runs", "", "runs TSV")
	rssPath := flag.String("rss", "", "RSS TSV")
	metaPath := flag.String("meta", "", "meta TSV")
	notesPath := flag.String("notes", "", "notes file")
	out := flag.String("out", "", "write combined JSON here")
	flag.Parse()
	if *runsPath == "" {
		fmt.Fprintln(os.Stderr, "benchreport: -runs is required")
		os.Exit(2)
	}

	rep := Report{GeneratedAt: time.Now().UTC(), Meta: map[string]string{}}
	for _, f := range readTSV(*metaPath) {
		if len(f) >= 2 {
			rep.Meta[f[0]] = strings.Join(f[1:], "\t")
		}
	}
	if *notesPath != "" {
		if b, err := os.ReadFile(*notesPath); err == nil {
			for l := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
				if l = strings.TrimSpace(l); l != "" {
					rep.Notes = append(rep.Notes, l)
				}
			}
		}
	}
	idle, peak := map[string]float64{}, map[string]float64{}
	for _, f := range readTSV(*rssPath) {
		if len(f) < 3 {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil {
			idle[f[0]] = v / 1024
		}
		if v, err := strconv.ParseFloat(f[2], 64); err == nil {
			peak[f[0]] = v / 1024
		}
	}

	type key struct {
		proto  string
		target string
		conns  int
	}
	var order []key
	groups := map[key]*Row{}
	results := map[key][]*loadResult{}
	for _, f := range readTSV(*runsPath) {
		if len(f) < 4 {
			continue
		}
		conns, _ := strconv.Atoi(f[2])
		k := key{f[0], f[1], conns}
		row := groups[k]
		if row == nil {
			row = &Row{Proto: f[0], Target: f[1], Conns: conns}
			groups[k] = row
			order = append(order, k)
		}
		if f[3] == "-" {
			row.FailedRuns++
			row.FailedReason = "run failed"
			if len(f) > 4 {
				row.FailedReason = f[4]
			}
			continue
		}
		r, err := readResult(f[3])
		if err != nil {
			row.FailedRuns++
			row.FailedReason = err.Error()
			continue
		}
		r.targetCPU, r.backendCPU = -1, -1
		if len(f) >= 6 {
			if v, err := strconv.ParseFloat(f[4], 64); err == nil {
				r.targetCPU = v
			}
			if v, err := strconv.ParseFloat(f[5], 64); err == nil {
				r.backendCPU = v
			}
		}
		results[k] = append(results[k], r)
	}
	type base struct {
		proto string
		conns int
	}
	direct := map[base]*loadResult{}
	for _, k := range order {
		row := groups[k]
		rs := results[k]
		if len(rs) > 0 {
			sort.Slice(rs, func(i, j int) bool { return rs[i].RPS < rs[j].RPS })
			row.OK, row.Result, row.Runs = true, rs[len(rs)/2], len(rs)
			row.FailedReason = ""
			for _, r := range rs {
				row.RPSAll = append(row.RPSAll, r.RPS)
			}
			if isBaseline(row.Target) {
				direct[base{row.Proto, row.Conns}] = row.Result
			}
			row.ProxyCPUus, row.BackendCPUus = cpuPerRequest(row.Target, row.Result)
		}
		if v, ok := idle[row.Target]; ok {
			row.IdleRSSMiB = &v
		}
		if v, ok := peak[row.Target]; ok {
			row.PeakRSSMiB = &v
		}
		rep.Rows = append(rep.Rows, *row)
	}
	for i := range rep.Rows {
		row := &rep.Rows[i]
		d := direct[base{row.Proto, row.Conns}]
		if !row.OK || d == nil {
			continue
		}
		if d.RPS > 0 {
			v := row.Result.RPS / d.RPS
			row.RPSRatio = &v
		}
		if d.LatencyNS.P99 > 0 {
			v := float64(row.Result.LatencyNS.P99) / float64(d.LatencyNS.P99)
			row.P99Ratio = &v
		}
	}

	rep.Versus = versus(rep.Rows)
	printMarkdown(&rep)

	if *out != "" {
		b, err := json.MarshalIndent(&rep, "", "  ")
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(1)
		}
		if err := os.WriteFile(*out, append(b, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "benchreport:", err)
			os.Exit(1)
		}
	}
}

func readTSV(path string) [][]string {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	var rows [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		rows = append(rows, strings.Split(line, "\t"))
	}
	return rows
}

func readResult(path string) (*loadResult, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r loadResult
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

// cpuPerRequest divides a run's measured CPU by its requests: the
// proxy's (none for a baseline) and the backend's.
func cpuPerRequest(target string, r *loadResult) (proxy, backend *float64) {
	if r.Requests <= 0 {
		return nil, nil
	}
	n := float64(r.Requests)
	if r.targetCPU >= 0 && !isBaseline(target) {
		v := r.targetCPU / n
		proxy = &v
	}
	if r.backendCPU >= 0 {
		v := r.backendCPU / n
		backend = &v
	}
	return proxy, backend
}

// isBaseline reports whether target is the no-proxy baseline of its proto.
func isBaseline(target string) bool { return target == "direct" || target == "direct-tls" }

func ms(ns int64) string { return fmt.Sprintf("%.2f", float64(ns)/1e6) }

func opt(v *float64, format string) string {
	if v == nil {
		return "–"
	}
	return fmt.Sprintf(format, *v)
}

func printMarkdown(rep *Report) {
	fmt.Println("| proto | target | conns | req/s | p50 ms | p99 ms | p99.9 ms | idle RSS MiB | peak RSS MiB | req/s ÷ direct | p99 ÷ direct | proxy CPU µs/req | backend CPU µs/req | errors / non-2xx | runs (req/s range) |")
	fmt.Println("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
	handshakes := false
	for _, r := range rep.Rows {
		if !r.OK {
			fmt.Printf("| %s | %s | %d | failed: %s | | | | %s | %s | | | | | | |\n",
				r.Proto, r.Target, r.Conns, strings.ReplaceAll(r.FailedReason, "|", "/"), opt(r.IdleRSSMiB, "%.1f"), opt(r.PeakRSSMiB, "%.1f"))
			continue
		}
		l := r.Result.LatencyNS
		spread := fmt.Sprintf("%d", r.Runs)
		if r.Runs > 1 {
			spread = fmt.Sprintf("%d (%.0f–%.0f)", r.Runs, r.RPSAll[0], r.RPSAll[len(r.RPSAll)-1])
		}
		if r.FailedRuns > 0 {
			spread += fmt.Sprintf(", %d failed", r.FailedRuns)
		}
		if r.Result.Handshakes {
			handshakes = true
		}
		fmt.Printf("| %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d / %d | %s |\n",
			r.Proto, r.Target, r.Conns, r.Result.RPS, ms(l.P50), ms(l.P99), ms(l.P999),
			opt(r.IdleRSSMiB, "%.1f"), opt(r.PeakRSSMiB, "%.1f"),
			opt(r.RPSRatio, "%.2f"), opt(r.P99Ratio, "%.2f"),
			opt(r.ProxyCPUus, "%.1f"), opt(r.BackendCPUus, "%.1f"),
			r.Result.Errors, r.Result.Non2xx, spread)
	}
	if handshakes {
		fmt.Println()
		fmt.Println("Handshakes/s (proto `handshakes*`: every request on a new connection, full TLS handshake, session resumption disabled; req/s above = handshakes/s):")
		fmt.Println()
		for _, r := range rep.Rows {
			if !r.OK || !r.Result.Handshakes {
				continue
			}
			resumed := ""
			if r.Result.TLSResumed > 0 {
				resumed = fmt.Sprintf(" (%d resumed!)", r.Result.TLSResumed)
			}
			fmt.Printf("- %s c=%d %s: %.0f handshakes/s, p99 %s ms%s\n", r.Proto, r.Conns, r.Target, r.Result.HSPerS, ms(r.Result.LatencyNS.P99), resumed)
		}
	}
	if len(rep.Versus) > 0 {
		fmt.Println()
		fmt.Println("Meridian ÷ each peer, same proto and connections (req/s above 1, p99 and proxy CPU per request below 1 favour Meridian):")
		fmt.Println()
		fmt.Println("| proto | conns | meridian | peer | req/s ratio | p99 ratio | proxy CPU/req ratio |")
		fmt.Println("|---|---:|---|---|---:|---:|---:|")
		for _, v := range rep.Versus {
			cpu := "–"
			if v.CPURatio > 0 {
				cpu = fmt.Sprintf("%.2f", v.CPURatio)
			}
			fmt.Printf("| %s | %d | %s | %s | %.2f | %.2f | %s |\n", v.Proto, v.Conns, v.Meridian, v.Peer, v.RPSRatio, v.P99Ratio, cpu)
		}
	}
	if len(rep.Notes) > 0 {
		fmt.Println()
		for _, n := range rep.Notes {
			fmt.Println("- " + n)
		}
	}
}
