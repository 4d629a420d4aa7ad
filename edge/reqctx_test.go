package edge

import (
	"context"
	"errors"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"
)

// requestContext behaves as a canceled context.WithCancel would, for the
// uses the proxy and the upstream transport make of it.
func TestRequestContext(t *testing.T) {
	ctx := &requestContext{}
	if ctx.Err() != nil {
		t.Fatalf("Err before cancel = %v", ctx.Err())
	}
	ran := make(chan string, 3)
	stop1 := context.AfterFunc(ctx, func() { ran <- "first" })
	stop2 := context.AfterFunc(ctx, func() { ran <- "stopped" })
	child, cancelChild := context.WithTimeout(ctx, time.Hour)
	defer cancelChild()
	if !stop2() {
		t.Fatal("stop before cancel = false; want true")
	}
	done := ctx.Done()
	ctx.cancel()
	ctx.cancel() // idempotent
	if got := recv(t, ran, "the AfterFunc"); got != "first" {
		t.Fatalf("ran %q; want first", got)
	}
	select {
	case <-done:
	default:
		t.Fatal("Done not closed after cancel")
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatalf("Err = %v; want Canceled", ctx.Err())
	}
	select {
	case <-child.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("derived context not canceled")
	}
	if stop1() {
		t.Error("stop after cancel = true; want false")
	}
	// Registered after cancel: runs at once.
	context.AfterFunc(ctx, func() { ran <- "late" })
	if got := recv(t, ran, "the late AfterFunc"); got != "late" {
		t.Fatalf("ran %q; want late", got)
	}
	early := &requestContext{}
	early.cancel()
	select {
	case <-early.Done():
	default:
		t.Error("Done of a canceled context without a channel is not closed")
	}
	select {
	case v := <-ran:
		t.Errorf("a stopped AfterFunc ran: %q", v)
	default:
	}
}

// The upstream transport's hook: runs on cancel unless cleared first, at
// once when set on a canceled context, and reports which happened.
func TestRequestContextAbortHook(t *testing.T) {
	var ran int
	hook := func() { ran++ }

	ctx := &requestContext{}
	ctx.setAbort(&hook)
	if !ctx.clearAbort() {
		t.Error("clearAbort before cancel = false; want true")
	}
	ctx.cancel()
	if ran != 0 {
		t.Errorf("a cleared hook ran %d times", ran)
	}

	ctx = &requestContext{}
	ctx.setAbort(&hook)
	ctx.cancel()
	if ran != 1 {
		t.Errorf("hook ran %d times on cancel; want 1", ran)
	}
	if ctx.clearAbort() {
		t.Error("clearAbort after cancel = true; want false")
	}

	ctx.setAbort(&hook) // already canceled: at once
	if ran != 2 {
		t.Errorf("hook set on a canceled context ran %d times in all; want 2", ran)
	}
	if ctx.clearAbort() {
		t.Error("clearAbort of a hook that ran = true; want false")
	}
}

// totalContext behaves as context.WithTimeout over the request's context
// would, for the uses the proxy and the upstream transport make of it: its
// expiry ends it with DeadlineExceeded, closes Done, starts its
// AfterFuncs and takes the transport's hook; the request's cancel, first,
// ends it with Canceled; and end stops its timer.
func TestTotalContext(t *testing.T) {
	t.Run("expiry", func(t *testing.T) {
		rc := &requestContext{}
		tc := &totalContext{}
		tc.begin(rc, monoNow()+20*time.Millisecond) // short: armed at once
		if d, ok := tc.Deadline(); !ok || time.Until(d) > 20*time.Millisecond {
			t.Fatalf("Deadline %v, %v; want within 20ms", d, ok)
		}
		if tc.Err() != nil {
			t.Fatalf("Err before expiry = %v", tc.Err())
		}
		var hooked atomic.Int32
		hook := func() { hooked.Add(1) }
		tc.setAbort(&hook)
		ran := make(chan string, 2)
		context.AfterFunc(tc, func() { ran <- "after" })
		done := tc.Done()
		if got := recv(t, ran, "the AfterFunc at expiry"); got != "after" {
			t.Fatalf("ran %q", got)
		}
		<-done
		if tc.Err() != context.DeadlineExceeded {
			t.Fatalf("Err = %v; want DeadlineExceeded", tc.Err())
		}
		if hooked.Load() != 1 || rc.clearAbort() {
			t.Fatalf("the transport's hook ran %d times, and is still set: %v; want once, taken", hooked.Load(), !rc.clearAbort())
		}
		if rc.Err() != nil {
			t.Fatalf("the request's context ended with its total: %v", rc.Err())
		}
		tc.setAbort(&hook) // after expiry: at once
		if hooked.Load() != 2 {
			t.Fatalf("a hook set after expiry ran %d times in all; want 2", hooked.Load())
		}
		rc.cancel() // the request ends: the total stays DeadlineExceeded
		if tc.Err() != context.DeadlineExceeded {
			t.Fatalf("Err after the request's cancel = %v; want DeadlineExceeded", tc.Err())
		}
		tc.end()
	})
	t.Run("armed late", func(t *testing.T) {
		rc := &requestContext{}
		tc := &totalContext{}
		tc.begin(rc, monoNow()+time.Second) // armed by the watch, not here
		tc.mu.Lock()
		armed := tc.timer != nil
		tc.mu.Unlock()
		if armed {
			t.Fatal("a total of a second was armed at its start")
		}
		tc.at = monoNow() + 10*time.Millisecond
		tc.arm()
		tc.arm() // once
		<-tc.Done()
		if tc.Err() != context.DeadlineExceeded {
			t.Fatalf("Err = %v; want DeadlineExceeded", tc.Err())
		}
	})
	t.Run("canceled first", func(t *testing.T) {
		rc := &requestContext{}
		tc := &totalContext{}
		tc.begin(rc, monoNow()+10*time.Millisecond)
		done := tc.Done()
		rc.cancel()
		<-done
		if tc.Err() != context.Canceled {
			t.Fatalf("Err = %v; want Canceled", tc.Err())
		}
		tc.expire() // as the timer would, after
		if tc.Err() != context.Canceled {
			t.Fatalf("Err after the timer = %v; want Canceled", tc.Err())
		}
		tc.end()
	})
	t.Run("ended in time", func(t *testing.T) {
		rc := &requestContext{}
		tc := &totalContext{}
		tc.begin(rc, monoNow()+10*time.Millisecond)
		ran := make(chan string, 1)
		context.AfterFunc(tc, func() { ran <- "after" })
		tc.end()
		tc.arm() // the watch, late: the request is over
		select {
		case v := <-ran:
			t.Fatalf("%s ran after end", v)
		case <-time.After(50 * time.Millisecond):
		}
		if tc.Err() != nil {
			t.Fatalf("Err after end = %v; want nil", tc.Err())
		}
		rc.cancel() // the registration with the request's context ended too
		select {
		case v := <-ran:
			t.Fatalf("%s ran on the request's cancel after end", v)
		case <-time.After(20 * time.Millisecond):
		}
	})
}

// An error that comes when a context's deadline has passed is the total
// timeout's, though the context has not ended yet: a dial bounded by the
// deadline fails on it a moment before the context's timer fires.
func TestClassifyAfterTheDeadline(t *testing.T) {
	dialTimeout := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
	tc := &totalContext{rc: &requestContext{}, at: monoNow() - time.Millisecond} // not armed
	if tc.Err() != nil {
		t.Fatalf("Err = %v; want nil (not expired yet)", tc.Err())
	}
	if pe := classify(dialTimeout, tc); pe.proxyStatus != "http_response_timeout" || pe.detail != totalTimeoutDetail {
		t.Errorf("classify = %s %q; want http_response_timeout, the total", pe.proxyStatus, pe.detail)
	}
	tc.at = monoNow() + time.Hour // a connect timeout well within the total
	if pe := classify(dialTimeout, tc); pe.proxyStatus != "connection_timeout" {
		t.Errorf("classify = %s; want connection_timeout", pe.proxyStatus)
	}
}
