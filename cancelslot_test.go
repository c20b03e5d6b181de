package main

import (
	"context"
	"testing"
	"time"
)

// TestOnCancel: onCancel keeps context.AfterFunc's promise (f runs once the
// context ends, unless stopped first; stop reports which) whether it uses
// the connection's slot or falls back to AfterFunc.
func TestOnCancel(t *testing.T) {
	ran := func() (func(), chan struct{}) {
		ch := make(chan struct{})
		return func() { close(ch) }, ch
	}
	waitRan := func(t *testing.T, ch chan struct{}, what string) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: f never ran", what)
		}
	}
	connCtx := func() (context.Context, context.CancelFunc, *cancelSlot) {
		ctx, cancel := context.WithCancel(context.Background())
		s := &cancelSlot{}
		return withCancelSlot(ctx, s), cancel, s
	}

	t.Run("the slot: runs on cancel, stop then says too late", func(t *testing.T) {
		ctx, cancel, _ := connCtx()
		f, ch := ran()
		st := onCancel(ctx, f)
		if st.slot == nil {
			t.Fatal("the connection's own context did not use its slot")
		}
		cancel()
		waitRan(t, ch, "cancelled")
		if st.stop() {
			t.Error("stop after f ran reported true")
		}
	})
	t.Run("the slot: stopped in time, free for the next request", func(t *testing.T) {
		ctx, cancel, _ := connCtx()
		defer cancel()
		for i := 0; i < 3; i++ {
			st := onCancel(ctx, func() { t.Error("a stopped f ran") })
			if st.slot == nil {
				t.Fatalf("request %d did not get the slot back", i)
			}
			if !st.stop() {
				t.Fatalf("request %d: stop before the end reported false", i)
			}
		}
		f, ch := ran()
		onCancel(ctx, f)
		cancel()
		waitRan(t, ch, "the last request")
	})
	t.Run("a child context ends alone: AfterFunc", func(t *testing.T) {
		ctx, cancel, _ := connCtx()
		defer cancel()
		child, cancelChild := context.WithCancel(ctx)
		f, ch := ran()
		if st := onCancel(child, f); st.slot != nil {
			t.Fatal("a child context took its parent's slot: cancelling the child would not run f")
		}
		cancelChild()
		waitRan(t, ch, "the child cancelled")
	})
	t.Run("the slot taken: AfterFunc, and both run", func(t *testing.T) {
		ctx, cancel, _ := connCtx()
		f1, ch1 := ran()
		f2, ch2 := ran()
		st1, st2 := onCancel(ctx, f1), onCancel(ctx, f2)
		if st1.slot == nil || st2.slot != nil {
			t.Fatalf("slots %v %v, want the first only", st1.slot, st2.slot)
		}
		cancel()
		waitRan(t, ch1, "the slot's")
		waitRan(t, ch2, "AfterFunc's")
	})
	t.Run("the context already ended: f runs", func(t *testing.T) {
		// Whether the slot has heard of the end yet (it hears on
		// AfterFunc's goroutine) or not, f runs.
		ctx, cancel, _ := connCtx()
		onCancel(ctx, func() {}).stop() // registers the slot
		cancel()
		f, ch := ran()
		onCancel(ctx, f)
		waitRan(t, ch, "after the end")
	})
}
