// Package hdr implements an HDR-style (high dynamic range) latency histogram.
//
// Values are non-negative int64s (the benchmark harness records nanoseconds).
// Buckets are log-linear, as in Gil Tene's HdrHistogram: the value range is
// split into power-of-two "buckets", each divided linearly into
// 2^ceil(log2(2*10^digits)) / 2 sub-buckets. The unit of the histogram is
// lowestDiscernible rounded down to a power of two; every recorded value v is
// kept with a resolution no worse than max(unit, v/10^digits), i.e. with the
// requested number of significant decimal digits once v >= unit*10^digits.
// With unit 1ns and 3 digits (NewLatency) that holds for every v >= 1µs.
//
// A Histogram is not safe for concurrent use. Use one per goroutine and Merge
// them at the end.
package hdr

import (
	"errors"
	"math"
	"math/bits"
	"time"
)

// Histogram is a log-linear histogram of int64 values.
type Histogram struct {
	lowestDiscernible int64
	highestTrackable  int64
	sigDigits         int

	unitMagnitude               uint
	subBucketHalfCountMagnitude uint
	subBucketCount              int64
	subBucketHalfCount          int64
	subBucketMask               int64
	bucketCount                 int
	leadingZeroCountBase        int

	counts     []int64
	totalCount int64
	min        int64 // exact minimum recorded value (after clamping)
	max        int64 // exact maximum recorded value (after clamping)
	overflows  int64 // values above highestTrackable, clamped to it
}

// New returns a histogram that tracks values from lowestDiscernible (>= 1) to
// highestTrackable (>= 2*lowestDiscernible) with sigDigits (1..5) significant
// decimal digits of precision.
func New(lowestDiscernible, highestTrackable int64, sigDigits int) (*Histogram, error) {
	if lowestDiscernible < 1 {
		return nil, errors.New("hdr: lowestDiscernible must be >= 1")
	}
	if highestTrackable < 2*lowestDiscernible {
		return nil, errors.New("hdr: highestTrackable must be >= 2*lowestDiscernible")
	}
	if sigDigits < 1 || sigDigits > 5 {
		return nil, errors.New("hdr: sigDigits must be in 1..5")
	}
	h := &Histogram{
		lowestDiscernible: lowestDiscernible,
		highestTrackable:  highestTrackable,
		sigDigits:         sigDigits,
		min:               math.MaxInt64,
	}
	largestSingleUnit := 2 * int64(math.Pow10(sigDigits))
	subBucketCountMagnitude := uint(math.Ceil(math.Log2(float64(largestSingleUnit))))
	h.subBucketHalfCountMagnitude = subBucketCountMagnitude - 1
	h.unitMagnitude = uint(bits.Len64(uint64(lowestDiscernible)) - 1) // floor(log2)
	h.subBucketCount = 1 << subBucketCountMagnitude
	h.subBucketHalfCount = h.subBucketCount / 2
	h.subBucketMask = (h.subBucketCount - 1) << h.unitMagnitude
	if h.unitMagnitude+subBucketCountMagnitude > 62 {
		return nil, errors.New("hdr: lowestDiscernible too large for sigDigits")
	}

	smallestUntrackable := h.subBucketCount << h.unitMagnitude
	buckets := 1
	for smallestUntrackable <= highestTrackable {
		if smallestUntrackable > math.MaxInt64/2 {
			buckets++
			break
		}
		smallestUntrackable <<= 1
		buckets++
	}
	h.bucketCount = buckets
	h.counts = make([]int64, (buckets+1)*int(h.subBucketHalfCount))
	h.leadingZeroCountBase = 64 - int(h.unitMagnitude) - int(h.subBucketHalfCountMagnitude) - 1
	return h, nil
}

// NewLatency returns a histogram for nanosecond latencies from 1ns to maxValue
// with 3 significant digits. The 1ns unit keeps 3 significant digits already
// at 1µs (resolution 1ns below ~2µs, doubling with every power of two above).
func NewLatency(maxValue time.Duration) *Histogram {
	if maxValue < time.Minute {
		maxValue = time.Minute
	}
	h, err := New(1, int64(maxValue), 3)
	if err != nil {
		panic(err) // unreachable with these constant arguments
	}
	return h
}

// Record adds one occurrence of v. Negative values are recorded as 0; values
// above the highest trackable value are clamped to it (and counted in
// Overflows).
func (h *Histogram) Record(v int64) {
	h.RecordN(v, 1)
}

// RecordN adds n occurrences of v.
func (h *Histogram) RecordN(v int64, n int64) {
	if n <= 0 {
		return
	}
	if v < 0 {
		v = 0
	}
	if v > h.highestTrackable {
		v = h.highestTrackable
		h.overflows += n
	}
	h.counts[h.countsIndexFor(v)] += n
	h.totalCount += n
	if v < h.min {
		h.min = v
	}
	if v > h.max {
		h.max = v
	}
}

// RecordDuration records d in nanoseconds.
func (h *Histogram) RecordDuration(d time.Duration) { h.Record(int64(d)) }

// Merge adds all counts of o into h. Both histograms must have been created
// with the same parameters.
func (h *Histogram) Merge(o *Histogram) error {
	if o == nil || o.totalCount == 0 {
		return nil
	}
	if h.lowestDiscernible != o.lowestDiscernible || h.highestTrackable != o.highestTrackable || h.sigDigits != o.sigDigits {
		return errors.New("hdr: cannot merge histograms with different parameters")
	}
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.totalCount += o.totalCount
	h.overflows += o.overflows
	if o.min < h.min {
		h.min = o.min
	}
	if o.max > h.max {
		h.max = o.max
	}
	return nil
}

// Reset clears all recorded values.
func (h *Histogram) Reset() {
	clear(h.counts)
	h.totalCount, h.overflows, h.max = 0, 0, 0
	h.min = math.MaxInt64
}

// Count returns the number of recorded values.
func (h *Histogram) Count() int64 { return h.totalCount }

// Overflows returns how many recorded values were above the trackable range.
func (h *Histogram) Overflows() int64 { return h.overflows }

// Max returns the largest recorded value (exact), or 0 if empty.
func (h *Histogram) Max() int64 { return h.max }

// Min returns the smallest recorded value (exact), or 0 if empty.
func (h *Histogram) Min() int64 {
	if h.totalCount == 0 {
		return 0
	}
	return h.min
}

// Mean returns the mean of the recorded values, computed from the bucket
// midpoints (so it is accurate to the histogram's precision), or 0 if empty.
func (h *Histogram) Mean() float64 {
	if h.totalCount == 0 {
		return 0
	}
	var sum float64
	for i, c := range h.counts {
		if c == 0 {
			continue
		}
		lo := h.valueFromIndex(i)
		sum += float64(c) * float64(lo+h.sizeOfEquivalentRange(lo)/2)
	}
	return sum / float64(h.totalCount)
}

// ValueAtQuantile returns the value at quantile q in [0,1]: the k-th smallest
// recorded value with k = ceil(q*Count) (at least 1), reported as the highest
// value equivalent to it at the histogram's precision (and never above Max).
// q <= 0 returns Min; an empty histogram returns 0.
func (h *Histogram) ValueAtQuantile(q float64) int64 {
	if h.totalCount == 0 {
		return 0
	}
	if q <= 0 || math.IsNaN(q) {
		return h.min
	}
	if q >= 1 {
		return h.max
	}
	k := int64(math.Ceil(q * float64(h.totalCount)))
	if k < 1 {
		k = 1
	}
	if k > h.totalCount {
		k = h.totalCount
	}
	var cum int64
	for i, c := range h.counts {
		cum += c
		if cum >= k {
			lo := h.valueFromIndex(i)
			v := lo + h.sizeOfEquivalentRange(lo) - 1
			if v > h.max {
				v = h.max
			}
			if v < h.min {
				v = h.min
			}
			return v
		}
	}
	return h.max
}

// Percentile is ValueAtQuantile(p/100).
func (h *Histogram) Percentile(p float64) int64 { return h.ValueAtQuantile(p / 100) }

// LowestEquivalent returns the smallest value that shares v's bucket.
func (h *Histogram) LowestEquivalent(v int64) int64 {
	b := h.bucketIndex(v)
	sb := h.subBucketIndex(v, b)
	return sb << (uint(b) + h.unitMagnitude)
}

// HighestEquivalent returns the largest value that shares v's bucket.
func (h *Histogram) HighestEquivalent(v int64) int64 {
	lo := h.LowestEquivalent(v)
	return lo + h.sizeOfEquivalentRange(lo) - 1
}

func (h *Histogram) bucketIndex(v int64) int {
	return h.leadingZeroCountBase - bits.LeadingZeros64(uint64(v|h.subBucketMask))
}

func (h *Histogram) subBucketIndex(v int64, bucket int) int64 {
	return v >> (uint(bucket) + h.unitMagnitude)
}

func (h *Histogram) countsIndexFor(v int64) int {
	b := h.bucketIndex(v)
	sb := h.subBucketIndex(v, b)
	return ((b + 1) << h.subBucketHalfCountMagnitude) + int(sb-h.subBucketHalfCount)
}

// valueFromIndex returns the lowest value of counts slot i.
func (h *Histogram) valueFromIndex(i int) int64 {
	b := (i >> h.subBucketHalfCountMagnitude) - 1
	sb := int64(i&int(h.subBucketHalfCount-1)) + h.subBucketHalfCount
	if b < 0 {
		sb -= h.subBucketHalfCount
		b = 0
	}
	return sb << (uint(b) + h.unitMagnitude)
}

func (h *Histogram) sizeOfEquivalentRange(v int64) int64 {
	b := h.bucketIndex(v)
	sb := h.subBucketIndex(v, b)
	if sb >= h.subBucketCount {
		b++
	}
	return 1 << (h.unitMagnitude + uint(b))
}
