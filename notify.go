package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// notifier speaks sd_notify: one datagram per message to $NOTIFY_SOCKET (a
// leading '@' is an abstract socket, which Go's net package maps for us).
// Without NOTIFY_SOCKET every call is a no-op, so the gateway can call it
// unconditionally.
type notifier struct {
	addr string
}

func newNotifier() *notifier { return &notifier{addr: os.Getenv("NOTIFY_SOCKET")} }

func (n *notifier) enabled() bool { return n != nil && n.addr != "" }

// send sends one datagram with the given KEY=VALUE lines.
func (n *notifier) send(lines ...string) error {
	if !n.enabled() {
		return nil
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.addr, Net: "unixgram"})
	if err != nil {
		return fmt.Errorf("sd_notify: %w", err)
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(time.Second))
	_, err = c.Write([]byte(strings.Join(lines, "\n")))
	return err
}

// newNotifySink returns the sink the gateway's sd_notify messages go
// through: a manager that reads its socket slowly delays them, never the
// loop. Without NOTIFY_SOCKET it drops everything at once.
func newNotifySink(n *notifier) *sink {
	return newSink("sd_notify", func(batch [][]byte) error {
		var first error
		for _, b := range batch {
			if err := n.send(string(b)); err != nil && first == nil {
				first = err
			}
		}
		return first
	})
}

// watchdogPeriod returns systemd's watchdog period for this process, or 0.
// WATCHDOG_PID, when set, must name us: the period is meant for that pid.
func watchdogPeriod() time.Duration {
	if p := os.Getenv("WATCHDOG_PID"); p != "" && p != fmt.Sprint(os.Getpid()) {
		return 0
	}
	var usec int64
	if _, err := fmt.Sscan(os.Getenv("WATCHDOG_USEC"), &usec); err != nil || usec <= 0 {
		return 0
	}
	return time.Duration(usec) * time.Microsecond
}

func usec(d time.Duration) string { return fmt.Sprint(d.Microseconds()) }
