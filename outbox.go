package main

import (
	"sync/atomic"
	"time"
)

// The outbox does the gateway's I/O off its loop. The loop, the sessions
// and the watchdog hand over lines (stderr, the lifecycle journal) and
// sd_notify messages as values; one writer goroutine per sink performs
// them. A sink whose writer is stuck (a journal lock held by someone else,
// an SD card stalled in fsync, journald not reading stderr) only fills its
// own bounded queue: what does not fit is dropped and counted, never
// waited for, and the count is reported in the sink itself once its writer
// has caught up. A disk that stalls for a minute delays the log by a
// minute; it never delays the loop, a session or a health check.

// outboxQueue bounds each sink's queue. A lifecycle line is about 200 bytes:
// 1024 of them is a burst of a thousand sessions ending at once.
const outboxQueue = 1024

// sink is one destination with its own queue and writer.
type sink struct {
	name    string
	ch      chan outItem
	dropped atomic.Uint64 // queue full: never written
	failed  atomic.Uint64 // the writer tried and failed (ENOSPC, EIO, ...)
	// write performs a batch in order. It runs on the sink's writer only.
	write func(batch [][]byte) error
	// report renders the line that reports n dropped lines, in the sink's
	// own format; nil means drops are only counted.
	report func(n uint64) []byte
	// onError hears of a failed write (at most once per episode of
	// failures, and once more when writes work again with err nil).
	onError func(err error)
}

type outItem struct {
	b    []byte
	done chan struct{} // a flush marker: closed once everything before it is written
}

func newSink(name string, write func([][]byte) error) *sink {
	s := &sink{name: name, ch: make(chan outItem, outboxQueue), write: write}
	go s.run()
	return s
}

// put queues one line. It never blocks: a full queue drops the line.
func (s *sink) put(b []byte) {
	if s == nil {
		return
	}
	select {
	case s.ch <- outItem{b: b}:
	default:
		s.dropped.Add(1)
	}
}

// maxBatch bounds how many lines one write carries.
const maxBatch = 256

func (s *sink) run() {
	var reported uint64
	failing := false
	batch := make([][]byte, 0, maxBatch)
	var markers []chan struct{}
	for it := range s.ch {
		batch, markers = batch[:0], markers[:0]
		add := func(it outItem) {
			if it.done != nil {
				markers = append(markers, it.done)
			} else {
				batch = append(batch, it.b)
			}
		}
		add(it)
	more:
		for len(batch) < maxBatch {
			select {
			case it := <-s.ch:
				add(it)
			default:
				break more
			}
		}
		if d := s.dropped.Load(); d > reported && s.report != nil && len(s.ch) == 0 {
			// Caught up: say how much was lost, in order, after what made it.
			batch = append(batch, s.report(d-reported))
			reported = d
		}
		if len(batch) > 0 {
			err := s.write(batch)
			if err != nil {
				s.failed.Add(uint64(len(batch)))
			}
			if (err != nil) != failing && s.onError != nil {
				s.onError(err)
			}
			failing = err != nil
		}
		for _, m := range markers {
			close(m)
		}
	}
}

// flush waits until everything queued before it has been written, or the
// deadline passes; it reports whether the sink caught up.
func (s *sink) flush(deadline time.Time) bool {
	if s == nil {
		return true
	}
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	done := make(chan struct{})
	select {
	case s.ch <- outItem{done: done}:
	case <-t.C:
		return false
	}
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// lost is how many lines this sink dropped or failed to write.
func (s *sink) lost() uint64 {
	if s == nil {
		return 0
	}
	return s.dropped.Load() + s.failed.Load()
}

// flushAll flushes every sink against one deadline, in parallel.
func flushAll(deadline time.Time, sinks ...*sink) bool {
	ok := make(chan bool, len(sinks))
	for _, s := range sinks {
		go func() { ok <- s.flush(deadline) }()
	}
	all := true
	for range sinks {
		all = <-ok && all
	}
	return all
}

// runWithin runs f on its own goroutine and waits for it at most until the
// deadline: exit-time disk work (the start ledger, the pid file) must not
// hold a process that is exiting on a stalled disk. It reports whether f
// finished.
func runWithin(deadline time.Time, f func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}
