package edge

import (
	"context"
	"errors"
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
