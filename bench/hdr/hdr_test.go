package hdr

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// exactQuantile is the reference definition: the k-th smallest sample with
// k = ceil(q*n), at least 1.
func exactQuantile(sorted []int64, q float64) int64 {
	n := len(sorted)
	k := int(math.Ceil(q * float64(n)))
	if k < 1 {
		k = 1
	}
	if k > n {
		k = n
	}
	return sorted[k-1]
}

// within reports whether got is within the histogram's precision of want:
// 3 significant digits means a relative error below 1/1000 (the log-linear
// layout with 1024 half sub-buckets actually gives < 1/1024), and never
// below the exact value (quantiles report the top of the bucket).
func within(h *Histogram, got, want int64) bool {
	if got < want {
		return false
	}
	unit := int64(1) << h.unitMagnitude
	tol := max(want/1000, unit-1)
	return got-want <= tol
}

var quantiles = []float64{0.0001, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 0.9999, 1}

type dist struct {
	name string
	gen  func(r *rand.Rand) int64
}

var dists = []dist{
	{"uniform_1us_10ms", func(r *rand.Rand) int64 { return 1000 + r.Int64N(10_000_000) }},
	{"lognormal_around_200us", func(r *rand.Rand) int64 {
		return int64(math.Exp(r.NormFloat64()*1.2 + math.Log(200_000)))
	}},
	{"exponential_mean_1ms", func(r *rand.Rand) int64 { return 1000 + int64(r.ExpFloat64()*1e6) }},
	{"bimodal_with_60s_tail", func(r *rand.Rand) int64 {
		if r.IntN(1000) == 0 {
			return 30e9 + r.Int64N(30e9)
		}
		return 50_000 + r.Int64N(50_000)
	}},
	{"small_exact_values", func(r *rand.Rand) int64 { return r.Int64N(3000) }},
}

func TestQuantilesMatchExact(t *testing.T) {
	for _, d := range dists {
		t.Run(d.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, uint64(len(d.name))))
			h := NewLatency(time.Minute)
			samples := make([]int64, 100_000)
			for i := range samples {
				samples[i] = d.gen(r)
				h.Record(samples[i])
			}
			slices.Sort(samples)
			if h.Count() != int64(len(samples)) {
				t.Fatalf("Count = %d, want %d", h.Count(), len(samples))
			}
			if h.Max() != samples[len(samples)-1] {
				t.Fatalf("Max = %d, want %d", h.Max(), samples[len(samples)-1])
			}
			if h.Min() != samples[0] {
				t.Fatalf("Min = %d, want %d", h.Min(), samples[0])
			}
			for _, q := range quantiles {
				got, want := h.ValueAtQuantile(q), exactQuantile(samples, q)
				if !within(h, got, want) {
					t.Errorf("q=%v: got %d, exact %d (rel err %.6f)", q, got, want, float64(got-want)/float64(want))
				}
			}
			var sum float64
			for _, s := range samples {
				sum += float64(s)
			}
			exactMean := sum / float64(len(samples))
			if rel := math.Abs(h.Mean()-exactMean) / exactMean; rel > 1e-3 {
				t.Errorf("Mean = %f, exact %f (rel err %f)", h.Mean(), exactMean, rel)
			}
		})
	}
}

// Every single value from 1µs to 60s must be kept to 3 significant digits:
// its bucket must be narrower than v/1000.
func TestPrecisionAcrossRange(t *testing.T) {
	h := NewLatency(time.Minute)
	for v := int64(1000); v <= int64(60*time.Second); v = v + v/97 + 1 {
		lo, hi := h.LowestEquivalent(v), h.HighestEquivalent(v)
		if lo > v || hi < v {
			t.Fatalf("v=%d not inside its bucket [%d,%d]", v, lo, hi)
		}
		if width := hi - lo + 1; width > v/1000 && width > 1 {
			t.Fatalf("v=%d: bucket width %d exceeds v/1000", v, width)
		}
		// The neighbouring buckets must tile the range without gaps.
		if h.LowestEquivalent(hi+1) != hi+1 {
			t.Fatalf("v=%d: bucket after %d starts at %d", v, hi, h.LowestEquivalent(hi+1))
		}
	}
	h.Record(int64(60 * time.Second))
	if h.Overflows() != 0 || h.Max() != int64(60*time.Second) {
		t.Fatalf("60s should be trackable: overflows=%d max=%d", h.Overflows(), h.Max())
	}
}

func TestSingleValue(t *testing.T) {
	h := NewLatency(time.Minute)
	const v = 123_456_789
	h.Record(v)
	for _, q := range quantiles {
		if got := h.ValueAtQuantile(q); got != v {
			t.Fatalf("q=%v: got %d, want %d (clamped to max)", q, got, v)
		}
	}
	if m := h.Mean(); math.Abs(m-v)/v > 1e-3 {
		t.Fatalf("Mean = %f, want ~%d", m, v)
	}
}

func TestMergeEqualsCombinedRecording(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	all := NewLatency(time.Minute)
	parts := make([]*Histogram, 8)
	var samples []int64
	for i := range parts {
		parts[i] = NewLatency(time.Minute)
		for range 5000 + i*1000 {
			v := int64(math.Exp(r.NormFloat64()*2 + math.Log(float64(1_000_000*(i+1)))))
			parts[i].Record(v)
			all.Record(v)
			samples = append(samples, v)
		}
	}
	merged := NewLatency(time.Minute)
	for _, p := range parts {
		if err := merged.Merge(p); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(samples)
	if merged.Count() != all.Count() || merged.Max() != all.Max() || merged.Min() != all.Min() {
		t.Fatalf("merged count/min/max %d/%d/%d != %d/%d/%d",
			merged.Count(), merged.Min(), merged.Max(), all.Count(), all.Min(), all.Max())
	}
	for _, q := range quantiles {
		m, a := merged.ValueAtQuantile(q), all.ValueAtQuantile(q)
		if m != a {
			t.Errorf("q=%v: merged %d != combined %d", q, m, a)
		}
		if want := exactQuantile(samples, q); !within(merged, m, want) {
			t.Errorf("q=%v: merged %d, exact %d", q, m, want)
		}
	}
	if merged.Mean() != all.Mean() {
		t.Errorf("Mean merged %f != combined %f", merged.Mean(), all.Mean())
	}
}

func TestMergeRejectsDifferentLayout(t *testing.T) {
	a := NewLatency(time.Minute)
	b, err := New(1000, int64(time.Minute), 2)
	if err != nil {
		t.Fatal(err)
	}
	b.Record(5000)
	if err := a.Merge(b); err == nil {
		t.Fatal("expected error merging histograms with different parameters")
	}
}

func TestOverflowClampsAndCounts(t *testing.T) {
	h := NewLatency(time.Minute)
	limit := h.highestTrackable
	h.Record(limit * 4)
	h.Record(-5)
	if h.Count() != 2 || h.Overflows() != 1 {
		t.Fatalf("count=%d overflows=%d", h.Count(), h.Overflows())
	}
	if h.Max() != limit || h.Min() != 0 {
		t.Fatalf("max=%d (want %d) min=%d (want 0)", h.Max(), limit, h.Min())
	}
	if got := h.ValueAtQuantile(1); got != limit {
		t.Fatalf("p100 = %d, want %d", got, limit)
	}
}

func TestEmptyAndReset(t *testing.T) {
	h := NewLatency(time.Minute)
	if h.Count() != 0 || h.Max() != 0 || h.Min() != 0 || h.Mean() != 0 || h.ValueAtQuantile(0.99) != 0 {
		t.Fatal("empty histogram should report zeros")
	}
	h.Record(42_000)
	h.Reset()
	if h.Count() != 0 || h.Max() != 0 || h.ValueAtQuantile(0.5) != 0 {
		t.Fatal("Reset did not clear histogram")
	}
}

func TestNewValidatesArguments(t *testing.T) {
	for _, c := range []struct {
		lo, hi int64
		d      int
	}{{0, 100, 3}, {10, 15, 3}, {1, 1000, 0}, {1, 1000, 6}} {
		if _, err := New(c.lo, c.hi, c.d); err == nil {
			t.Errorf("New(%d,%d,%d): expected error", c.lo, c.hi, c.d)
		}
	}
}

// A coarser unit (lowestDiscernible=1000 -> 512ns unit) must still bracket the
// exact quantile within one unit / 3 digits.
func TestCoarseUnit(t *testing.T) {
	h, err := New(1000, int64(time.Hour), 3)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(3, 4))
	samples := make([]int64, 50_000)
	for i := range samples {
		samples[i] = 1000 + r.Int64N(int64(5*time.Second))
		h.Record(samples[i])
	}
	slices.Sort(samples)
	for _, q := range quantiles {
		got, want := h.ValueAtQuantile(q), exactQuantile(samples, q)
		if !within(h, got, want) {
			t.Errorf("q=%v: got %d, exact %d", q, got, want)
		}
	}
}

func BenchmarkRecord(b *testing.B) {
	h := NewLatency(time.Minute)
	v := int64(123_456)
	for i := 0; i < b.N; i++ {
		h.Record(v + int64(i&1023))
	}
}
