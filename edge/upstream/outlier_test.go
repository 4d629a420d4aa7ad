package upstream

import (
	"testing"
	"time"
)

func outlierPool(t *testing.T, clock *fakeClock, o OutlierSpec, urls ...string) *Pool {
	t.Helper()
	return mustPool(t, Spec{Targets: targets(t, urls...), Outlier: &o}, nil, Options{Now: clock.Now})
}

func TestOutlierEjectionAndExpiry(t *testing.T) {
	clock := newFakeClock()
	p := outlierPool(t, clock, OutlierSpec{ConsecutiveFailures: 3, BaseEjection: 10 * time.Second, MaxEjectionPercent: 100},
		"http://a", "http://b", "http://c")
	a := byHost(t, p, "a")

	fail(a, 2)
	a.Begin()(Success) // resets the streak
	fail(a, 2)
	if !a.Available(clock.Now()) {
		t.Fatal("ejected although a success broke the failure streak")
	}
	if got := p.Status()[0].ConsecutiveFailures; got != 2 {
		t.Errorf("ConsecutiveFailures = %d, want 2", got)
	}
	fail(a, 1)
	st := p.Status()[0]
	if a.Available(clock.Now()) || !st.Ejected || !st.EjectedUntil.Equal(clock.Now().Add(10*time.Second)) {
		t.Fatalf("after 3 failures: %+v, want ejected for 10s", st)
	}
	if st.ConsecutiveFailures != 0 {
		t.Errorf("counter not reset on ejection: %d", st.ConsecutiveFailures)
	}
	for range 20 {
		if tg, _ := p.Pick(nil, "", nil); tg == a {
			t.Fatal("picked an ejected target")
		}
	}

	clock.Advance(10*time.Second - time.Nanosecond)
	if a.Available(clock.Now()) {
		t.Fatal("back before the ejection ended")
	}
	clock.Advance(time.Nanosecond)
	if !a.Available(clock.Now()) || p.Status()[0].Ejected {
		t.Fatal("still out after the ejection ended")
	}
	// Back with a clean counter: two more failures do not eject.
	fail(a, 2)
	if !a.Available(clock.Now()) {
		t.Fatal("ejected again by a streak that started before the last ejection")
	}
}

func TestOutlierIgnoresFailuresWhileEjected(t *testing.T) {
	clock := newFakeClock()
	p := outlierPool(t, clock, OutlierSpec{ConsecutiveFailures: 2, BaseEjection: time.Second, MaxEjectionPercent: 100},
		"http://a", "http://b")
	a := byHost(t, p, "a")
	var slow []func(Outcome)
	for range 3 {
		slow = append(slow, a.Begin())
	}
	fail(a, 2)
	if a.Available(clock.Now()) {
		t.Fatal("not ejected")
	}
	// Requests that were already running fail too; they must not extend
	// the ejection or count towards the next one.
	for _, done := range slow {
		done(Failure)
	}
	st := p.Status()[0]
	if st.ConsecutiveFailures != 0 || !st.EjectedUntil.Equal(clock.Now().Add(time.Second)) || st.InFlight != 0 {
		t.Fatalf("status = %+v", st)
	}
	clock.Advance(time.Second)
	fail(a, 1)
	if !a.Available(clock.Now()) {
		t.Fatal("one failure after expiry ejected the target")
	}
}

func TestOutlierEjectionBackoff(t *testing.T) {
	clock := newFakeClock()
	base, maxEj := 10*time.Second, 25*time.Second
	p := outlierPool(t, clock, OutlierSpec{ConsecutiveFailures: 1, BaseEjection: base, MaxEjection: maxEj, MaxEjectionPercent: 100},
		"http://a", "http://b")
	a := byHost(t, p, "a")

	ejectFor := func() time.Duration {
		t.Helper()
		fail(a, 1)
		st := p.Status()[0]
		if !st.Ejected {
			t.Fatal("not ejected")
		}
		d := st.EjectedUntil.Sub(clock.Now())
		clock.Advance(d) // serve out the ejection
		return d
	}
	for i, want := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second, 25 * time.Second} {
		if got := ejectFor(); got != want {
			t.Errorf("ejection %d lasted %v, want %v", i+1, got, want)
		}
	}
	// In service for MaxEjection since the last ejection ended: the
	// multiplier starts over.
	clock.Advance(maxEj)
	if got := ejectFor(); got != base {
		t.Errorf("ejection after a long healthy period lasted %v, want %v", got, base)
	}
	if got := ejectFor(); got != 2*base {
		t.Errorf("next ejection lasted %v, want %v", got, 2*base)
	}
}

func TestOutlierMaxEjectionPercent(t *testing.T) {
	clock := newFakeClock()
	p := outlierPool(t, clock, OutlierSpec{ConsecutiveFailures: 1, BaseEjection: time.Minute, MaxEjectionPercent: 50},
		"http://a", "http://b", "http://c", "http://d", "http://e")
	ts := p.Targets()
	// 50% of 5 is 2.5: at most 2 may be out.
	for _, tg := range ts {
		fail(tg, 1)
	}
	ejected := 0
	for _, st := range p.Status() {
		if st.Ejected {
			ejected++
		}
	}
	if ejected != 2 {
		t.Fatalf("%d of 5 targets ejected, want 2", ejected)
	}
	// The refused targets keep their count and are ejected as soon as the
	// budget allows.
	clock.Advance(time.Minute)
	fail(ts[4], 1)
	if ts[4].Available(clock.Now()) {
		t.Error("target not ejected once the budget freed up")
	}
}

// A percentage whose share of the pool rounds down to zero still allows
// one ejection (Envoy's rule), or small pools would never eject at all.
func TestOutlierMaxEjectionPercentAllowsOne(t *testing.T) {
	clock := newFakeClock()
	p := outlierPool(t, clock, OutlierSpec{ConsecutiveFailures: 3, BaseEjection: time.Minute, MaxEjectionPercent: 30},
		"http://a", "http://b", "http://c")
	a, b := byHost(t, p, "a"), byHost(t, p, "b")
	fail(a, 3)
	if a.Available(clock.Now()) {
		t.Fatal("30% of 3 targets: the first failing target was not ejected")
	}
	fail(b, 3)
	if !b.Available(clock.Now()) {
		t.Fatal("30% of 3 targets: a second target was ejected")
	}
	for _, c := range []struct{ n, pct, want int }{
		{3, 30, 1}, {9, 10, 1}, {10, 10, 1}, {20, 10, 2}, {5, 50, 2}, {4, 100, 3}, {2, 1, 1}, {1, 100, 0},
	} {
		if got := ejectionLimit(c.n, c.pct); got != c.want {
			t.Errorf("ejectionLimit(%d, %d) = %d, want %d", c.n, c.pct, got, c.want)
		}
	}
}

func TestOutlierKeepsOneTargetIn(t *testing.T) {
	clock := newFakeClock()
	p := outlierPool(t, clock, OutlierSpec{ConsecutiveFailures: 1, MaxEjectionPercent: 100}, "http://a", "http://b")
	a, b := byHost(t, p, "a"), byHost(t, p, "b")
	fail(a, 1)
	fail(b, 1)
	if a.Available(clock.Now()) || !b.Available(clock.Now()) {
		t.Fatal("want a ejected and b kept in as the last target")
	}

	// The last target available is also kept when the others are down by
	// health check rather than ejected.
	p = outlierPool(t, clock, OutlierSpec{ConsecutiveFailures: 1, MaxEjectionPercent: 100}, "http://a", "http://b", "http://c")
	byHost(t, p, "a").st.down.Store(true)
	byHost(t, p, "b").st.down.Store(true)
	c := byHost(t, p, "c")
	fail(c, 3)
	if !c.Available(clock.Now()) {
		t.Fatal("ejected the only available target")
	}

	// A single-target pool never ejects.
	p = outlierPool(t, clock, OutlierSpec{ConsecutiveFailures: 1, MaxEjectionPercent: 100}, "http://solo")
	fail(p.Targets()[0], 5)
	if _, err := p.Pick(nil, "", nil); err != nil {
		t.Fatalf("single target ejected: %v", err)
	}
}

func TestOutlierDisabled(t *testing.T) {
	p := mustPool(t, Spec{Targets: targets(t, "http://a", "http://b")}, nil, Options{})
	a := byHost(t, p, "a")
	fail(a, 100)
	if !a.Available(time.Now()) {
		t.Fatal("ejected without outlier detection")
	}
	if got := p.Status()[0].ConsecutiveFailures; got != 100 {
		t.Errorf("ConsecutiveFailures = %d, want 100 (still reported)", got)
	}
}

func TestBeginDoneOnce(t *testing.T) {
	p := mustPool(t, Spec{Targets: targets(t, "http://a")}, nil, Options{})
	tg := p.Targets()[0]
	done := tg.Begin()
	if tg.InFlight() != 1 {
		t.Fatalf("InFlight = %d, want 1", tg.InFlight())
	}
	done(Failure)
	done(Failure)
	if tg.InFlight() != 0 || p.Status()[0].ConsecutiveFailures != 1 {
		t.Fatalf("second done call counted: %+v", p.Status()[0])
	}
}

func TestOutcomeString(t *testing.T) {
	if Success.String() != "success" || Failure.String() != "failure" || Outcome(7).String() != "outcome(7)" {
		t.Errorf("got %q %q %q", Success, Failure, Outcome(7))
	}
}
