package main

import "time"

// The times that goroutines share through atomics (the loop's heartbeat, a
// signal's wait, a connection's idle clock, the upstream's first failure)
// are nanoseconds on the monotonic clock, never wall-clock unix
// nanoseconds. A step of the wall clock must not make a healthy loop look
// frozen, nor hide a frozen one: NTP setting a Raspberry Pi's clock (it
// has no battery-backed clock) minutes after boot, an operator's `date -s`,
// or a virtual machine whose clock is set forward when it resumes from a
// pause. Times written to disk or shown to people stay wall-clock times.

// monoEpoch is where monoNanos counts from: a second before this process's
// start, so that no monoNanos is 0, which the atomics use for "unset".
var monoEpoch = time.Now().Add(-time.Second)

// monoNanos is t on the monotonic clock, in nanoseconds since monoEpoch. t
// must come from time.Now (or a timer, or Add on either), which carries a
// monotonic reading.
func monoNanos(t time.Time) int64 { return int64(t.Sub(monoEpoch)) }

// monoNow is monoNanos(time.Now()).
func monoNow() int64 { return monoNanos(time.Now()) }
