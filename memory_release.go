package main

import (
	"runtime"
	"time"
)

// Memory after a burst. Go frees a burst's garbage only at its next
// collection, and a gateway that falls quiet after one allocates too
// little to reach the next heap goal (twice the burst's live heap): its
// RSS would stay at the burst's peak until the runtime's two-minute forced
// collection, and longer for the pages. So a goroutine off the loop looks
// at the open connections every few seconds, and when they have fallen to
// a quarter of a peak of at least burstConns since the last look that
// collected, it runs one collection, and a second once the burst's
// delivered streams have stopped lingering for a reattach (reattach.linger
// later: they hold their events until then). The runtime's background scavenger
// then gives the free pages back to the system by itself, at its own pace
// (about 1% of a core), down to a little over the new, small heap goal.
// Nothing runs while the load is steady, and nothing stops the world
// longer than a collection's own short pauses.

const (
	burstConns  = 256             // a peak worth collecting after
	burstSample = 5 * time.Second // how often the open connections are read
)

// releaseAfterBursts runs until done.
func (g *gateway) releaseAfterBursts(done <-chan struct{}) {
	go func() {
		t := time.NewTicker(burstSample)
		defer t.Stop()
		peak := 0
		var again time.Time // the second collection of the last burst, if due
		for {
			select {
			case <-done:
				return
			case now := <-t.C:
				n := g.conns.count()
				peak = max(peak, n)
				switch {
				case peak >= burstConns && n <= peak/4:
					runtime.GC()
					peak = n
					again = now.Add(g.policy.Load().Reattach.lingerFor() + burstSample)
				case !again.IsZero() && now.After(again):
					runtime.GC()
					again = time.Time{}
				}
			}
		}
	}()
}
