// Command abreport summarizes the interleaved rounds of bench/ab.sh: for
// each connection count, the medians of every arm's runs, and the medians
// of the per-round ratios between arms (B÷A, and each Meridian arm ÷ nginx)
// with a bootstrap interval over the rounds.
//
// A ratio is taken within a round, between runs made back to back, and only
// then summarized: this VM's speed drifts by more between minutes than most
// changes are worth, and a ratio of two medians taken over the whole run
// would carry that drift.
//
// Input (-runs), tab-separated, '#' comments allowed:
//
//	round  conns  arm  path-to-loadgen-json  user_us  system_us
//
// (arm: A, B or N; the CPU columns are the arm's process tree's over the
// measured part of the run).
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
)

// run is one loadgen run of one arm.
type run struct {
	round, conns int
	arm          string
	rps          float64
	p99ms        float64
	requests     int64
	failed       int64 // errors + non-2xx answers
	userUS       float64
	sysUS        float64
}

// loadResult is the part of loadgen's -json output read here.
type loadResult struct {
	Requests  int64   `json:"requests"`
	RPS       float64 `json:"rps"`
	Errors    int64   `json:"errors"`
	Non2xx    int64   `json:"non_2xx"`
	LatencyNS struct {
		P99 int64 `json:"p99"`
	} `json:"latency_ns"`
}

// userPerReq and the others give a run's measures; ok is false when the run
// has no requests to divide by.
func (r run) userPerReq() (float64, bool) { return r.perReq(r.userUS) }
func (r run) sysPerReq() (float64, bool)  { return r.perReq(r.sysUS) }
func (r run) cpuPerReq() (float64, bool)  { return r.perReq(r.userUS + r.sysUS) }
func (r run) perReq(us float64) (float64, bool) {
	if r.requests <= 0 || us < 0 {
		return 0, false
	}
	return us / float64(r.requests), true
}

// readRuns parses the runs table, reading each run's loadgen JSON through
// open.
func readRuns(in io.Reader, open func(string) ([]byte, error)) ([]run, error) {
	var runs []run
	sc := bufio.NewScanner(in)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		f := strings.Split(text, "\t")
		if len(f) != 6 {
			return nil, fmt.Errorf("line %d: %d fields, want 6 (round, conns, arm, json, user_us, system_us)", line, len(f))
		}
		var r run
		var err error
		if r.round, err = strconv.Atoi(f[0]); err != nil {
			return nil, fmt.Errorf("line %d: round: %v", line, err)
		}
		if r.conns, err = strconv.Atoi(f[1]); err != nil {
			return nil, fmt.Errorf("line %d: conns: %v", line, err)
		}
		r.arm = f[2]
		if r.userUS, err = strconv.ParseFloat(f[4], 64); err != nil {
			return nil, fmt.Errorf("line %d: user_us: %v", line, err)
		}
		if r.sysUS, err = strconv.ParseFloat(f[5], 64); err != nil {
			return nil, fmt.Errorf("line %d: system_us: %v", line, err)
		}
		data, err := open(f[3])
		if err != nil {
			return nil, fmt.Errorf("line %d: %v", line, err)
		}
		var lr loadResult
		if err := json.Unmarshal(data, &lr); err != nil {
			return nil, fmt.Errorf("line %d: %s: %v", line, f[3], err)
		}
		r.rps, r.requests = lr.RPS, lr.Requests
		r.failed = lr.Errors + lr.Non2xx
		r.p99ms = float64(lr.LatencyNS.P99) / 1e6
		runs = append(runs, r)
	}
	return runs, sc.Err()
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 1 {
		return s[n/2]
	} else {
		return (s[n/2-1] + s[n/2]) / 2
	}
}

// interval is a bootstrap 90% interval of the median of xs (resampling xs
// with replacement), from a fixed seed so that a report is reproducible.
func interval(xs []float64) (lo, hi float64) {
	if len(xs) < 2 {
		m := median(xs)
		return m, m
	}
	rng := rand.New(rand.NewPCG(1, 2))
	const n = 2000
	meds := make([]float64, n)
	sample := make([]float64, len(xs))
	for i := range meds {
		for j := range sample {
			sample[j] = xs[rng.IntN(len(xs))]
		}
		meds[i] = median(sample)
	}
	slices.Sort(meds)
	return meds[n*5/100], meds[n*95/100-1]
}

// measure is one column of the report.
type measure struct {
	name string
	of   func(run) (float64, bool)
}

var measures = []measure{
	{"req/s", func(r run) (float64, bool) { return r.rps, r.rps > 0 }},
	{"p99 ms", func(r run) (float64, bool) { return r.p99ms, r.p99ms > 0 }},
	{"user µs/req", run.userPerReq},
	{"system µs/req", run.sysPerReq},
	{"CPU µs/req", run.cpuPerReq},
}

// ratios gives, for each measure, the per-round ratios num÷den at conns,
// over the rounds where both arms have a run.
func ratios(runs []run, conns int, num, den string) [][]float64 {
	type key struct {
		round int
		arm   string
	}
	by := map[key]run{}
	var rounds []int
	for _, r := range runs {
		if r.conns == conns {
			by[key{r.round, r.arm}] = r
			rounds = append(rounds, r.round)
		}
	}
	slices.Sort(rounds)
	rounds = slices.Compact(rounds)
	out := make([][]float64, len(measures))
	for _, round := range rounds {
		a, okA := by[key{round, num}]
		b, okB := by[key{round, den}]
		if !okA || !okB {
			continue
		}
		for i, m := range measures {
			x, ok1 := m.of(a)
			y, ok2 := m.of(b)
			if ok1 && ok2 && y > 0 {
				out[i] = append(out[i], x/y)
			}
		}
	}
	return out
}

func report(w io.Writer, runs []run, nameA, nameB, path string) {
	armName := map[string]string{"A": "A: " + nameA, "B": "B: " + nameB, "N": "N: nginx"}
	var conns []int
	arms := map[string]bool{}
	for _, r := range runs {
		conns = append(conns, r.conns)
		arms[r.arm] = true
	}
	slices.Sort(conns)
	conns = slices.Compact(conns)
	fmt.Fprintf(w, "A/B on loopback, path %s (medians over rounds; ratios are medians of per-round ratios, [5%%–95%%] bootstrap interval)\n", path)
	for _, c := range conns {
		fmt.Fprintf(w, "\n%d connections\n\n| arm | runs |", c)
		for _, m := range measures {
			fmt.Fprintf(w, " %s |", m.name)
		}
		fmt.Fprint(w, " failed requests |\n|---|---:|")
		for range measures {
			fmt.Fprint(w, "---:|")
		}
		fmt.Fprint(w, "---:|\n")
		for _, arm := range []string{"A", "B", "N"} {
			if !arms[arm] {
				continue
			}
			var n int
			var failed int64
			cols := make([][]float64, len(measures))
			for _, r := range runs {
				if r.conns != c || r.arm != arm {
					continue
				}
				n++
				failed += r.failed
				for i, m := range measures {
					if v, ok := m.of(r); ok {
						cols[i] = append(cols[i], v)
					}
				}
			}
			fmt.Fprintf(w, "| %s | %d |", armName[arm], n)
			for i := range measures {
				fmt.Fprintf(w, " %s |", format(median(cols[i]), len(cols[i]) > 0))
			}
			fmt.Fprintf(w, " %d |\n", failed)
		}
		pairs := [][2]string{{"B", "A"}}
		if arms["N"] {
			pairs = append(pairs, [2]string{"A", "N"}, [2]string{"B", "N"})
		}
		fmt.Fprint(w, "\n| ratio | rounds |")
		for _, m := range measures {
			fmt.Fprintf(w, " %s |", m.name)
		}
		fmt.Fprint(w, "\n|---|---:|")
		for range measures {
			fmt.Fprint(w, "---|")
		}
		fmt.Fprintln(w)
		for _, p := range pairs {
			rs := ratios(runs, c, p[0], p[1])
			fmt.Fprintf(w, "| %s ÷ %s | %d |", p[0], p[1], len(rs[0]))
			for _, xs := range rs {
				if len(xs) == 0 {
					fmt.Fprint(w, " – |")
					continue
				}
				lo, hi := interval(xs)
				fmt.Fprintf(w, " %.3f [%.3f–%.3f] |", median(xs), lo, hi)
			}
			fmt.Fprintln(w)
		}
	}
	fmt.Fprintln(w, "\nreq/s above 1 favours the numerator; p99 and CPU per request below 1 do.")
}

func format(v float64, ok bool) string {
	switch {
	case !ok:
		return "–"
	case v >= 1000:
		return strconv.FormatFloat(v, 'f', 0, 64)
	default:
		return strconv.FormatFloat(v, 'f', 2, 64)
	}
}

func main() {
	runsPath := flag.String("runs", "", "the rounds' table (bench/ab.sh writes it)")
	nameA := flag.String("a", "A", "what arm A is")
	nameB := flag.String("b", "B", "what arm B is")
	path := flag.String("path", "/", "the request path measured")
	flag.Parse()
	if *runsPath == "" {
		fmt.Fprintln(os.Stderr, "abreport: -runs is required")
		os.Exit(2)
	}
	f, err := os.Open(*runsPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "abreport:", err)
		os.Exit(1)
	}
	defer f.Close()
	runs, err := readRuns(f, os.ReadFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, "abreport:", err)
		os.Exit(1)
	}
	if len(runs) == 0 {
		fmt.Fprintln(os.Stderr, "abreport: no runs")
		os.Exit(1)
	}
	report(os.Stdout, runs, *nameA, *nameB, *path)
}
