package main

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// fakeRuns builds a runs table and the loadgen JSON it names: each entry
// is round, conns, arm, req/s, p99 ns, requests, user µs, system µs.
func fakeRuns(t *testing.T, rows [][8]float64, arms []string) ([]run, error) {
	t.Helper()
	files := map[string]string{}
	var table strings.Builder
	table.WriteString("# round\tconns\tarm\tjson\tuser\tsys\n")
	for i, r := range rows {
		name := fmt.Sprintf("run%d.json", i)
		files[name] = fmt.Sprintf(`{"requests": %d, "rps": %g, "errors": 0, "non_2xx": 0, "latency_ns": {"p99": %d}}`, int64(r[5]), r[3], int64(r[4]))
		fmt.Fprintf(&table, "%d\t%d\t%s\t%s\t%g\t%g\n", int(r[0]), int(r[1]), arms[i], name, r[6], r[7])
	}
	return readRuns(strings.NewReader(table.String()), func(p string) ([]byte, error) {
		s, ok := files[p]
		if !ok {
			return nil, fmt.Errorf("no file %s", p)
		}
		return []byte(s), nil
	})
}

func TestRatiosPairRunsWithinRounds(t *testing.T) {
	// The VM's speed drifts 3x over the rounds; B is 10% faster than A in
	// each, with 20% less user time per request. Round 4 has no B run.
	rows := [][8]float64{
		{1, 64, 0, 100, 4e6, 1000, 8000, 10000}, {1, 64, 0, 110, 3e6, 1100, 7040, 11000},
		{2, 64, 0, 300, 2e6, 3000, 12000, 30000}, {2, 64, 0, 330, 1.5e6, 3300, 10560, 33000},
		{3, 64, 0, 200, 3e6, 2000, 10000, 20000}, {3, 64, 0, 220, 2.25e6, 2200, 8800, 22000},
		{4, 64, 0, 50, 8e6, 500, 5000, 5000},
	}
	arms := []string{"A", "B", "A", "B", "A", "B", "A"}
	runs, err := fakeRuns(t, rows, arms)
	if err != nil {
		t.Fatal(err)
	}
	rs := ratios(runs, 64, "B", "A")
	want := []float64{1.1, 0.75, 0.8, 1.0} // req/s, p99, user, system per request
	for i, w := range want {
		if len(rs[i]) != 3 {
			t.Fatalf("%s: %d ratios, want 3 (round 4 has no B)", measures[i].name, len(rs[i]))
		}
		if m := median(rs[i]); math.Abs(m-w) > 1e-9 {
			t.Errorf("%s: median ratio %v, want %v", measures[i].name, m, w)
		}
	}
	if got := ratios(runs, 256, "B", "A"); len(got[0]) != 0 {
		t.Errorf("ratios at a connection count never run: %v", got[0])
	}
}

func TestIntervalHoldsTheMedian(t *testing.T) {
	xs := []float64{0.91, 1.02, 0.97, 1.10, 0.95, 1.01, 0.99, 1.04}
	lo, hi := interval(xs)
	m := median(xs)
	if !(lo <= m && m <= hi) || lo < 0.91 || hi > 1.10 || lo == hi {
		t.Errorf("interval [%v, %v] for median %v of %v", lo, hi, m, xs)
	}
	if lo, hi := interval([]float64{1.5}); lo != 1.5 || hi != 1.5 {
		t.Errorf("interval of one value: [%v, %v]", lo, hi)
	}
}

func TestReadRunsNamesTheBadLine(t *testing.T) {
	for _, tc := range []struct{ table, want string }{
		{"1\t64\tA\tx.json\t1\n", "line 1: 5 fields"},
		{"# c\n1\t64\tA\tmissing.json\t1\t2\n", "line 2: no file missing.json"},
		{"one\t64\tA\tx.json\t1\t2\n", "line 1: round"},
		{"1\t64\tA\tbad.json\t1\t2\n", "line 1: bad.json"},
	} {
		_, err := readRuns(strings.NewReader(tc.table), func(p string) ([]byte, error) {
			switch p {
			case "x.json":
				return []byte(`{"requests": 1, "rps": 1}`), nil
			case "bad.json":
				return []byte(`{"requests": `), nil
			}
			return nil, fmt.Errorf("no file %s", p)
		})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want one containing %q", tc.table, err, tc.want)
		}
	}
}

func TestReportShowsEachArmAndRatio(t *testing.T) {
	rows := [][8]float64{
		{1, 64, 0, 100, 4e6, 1000, 5000, 10000}, {1, 64, 0, 90, 4e6, 900, 4500, 9000}, {1, 64, 0, 120, 3e6, 1200, 3600, 12000},
		{2, 64, 0, 100, 4e6, 1000, 5000, 10000}, {2, 64, 0, 90, 4e6, 900, 4500, 9000}, {2, 64, 0, 120, 3e6, 1200, 3600, 12000},
	}
	runs, err := fakeRuns(t, rows, []string{"A", "B", "N", "B", "N", "A"})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	report(&out, runs, "main", "change", "/bare/")
	text := out.String()
	for _, want := range []string{
		"64 connections",
		"| A: main | 2 |", "| B: change | 2 |", "| N: nginx | 2 |",
		"| B ÷ A | 2 | 0.867 [", // round 1: 90/100; round 2: 100/120 (the order rotated)
		"| A ÷ N | 2 |", "| B ÷ N | 2 |",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
}
