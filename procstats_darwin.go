//go:build darwin

package main

import (
	"os"
	"syscall"
)

// readProcStats reads the process's numbers on macOS, which has no /proc:
// getrusage gives the CPU time and the peak resident size (macOS has no
// cheap current size without cgo), and /dev/fd lists the open descriptors.
func readProcStats() procStats {
	s := procStats{cpu: cpuSeconds(), rss: -1, fds: -1, maxFDs: fdLimit()}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		s.rss, s.rssNote = float64(ru.Maxrss), " (on macOS the peak: getrusage's ru_maxrss)" // bytes on macOS
	}
	if d, err := os.Open("/dev/fd"); err == nil {
		n := 0
		for {
			names, err := d.Readdirnames(256)
			n += len(names)
			if err != nil {
				break
			}
		}
		d.Close()
		s.fds = float64(n - 1) // the descriptor that reads the directory
	}
	return s
}
