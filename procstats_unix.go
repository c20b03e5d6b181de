//go:build linux || darwin

package main

import "syscall"

// What Linux and macOS answer alike, for the process metrics.

// fdLimit is RLIMIT_NOFILE's soft limit, or -1.
func fdLimit() float64 {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return -1
	}
	return float64(rl.Cur)
}

// cpuSeconds is the user and system CPU time of the process, or -1.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return -1
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime)
}
