//go:build linux

package main

import (
	"bytes"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// readProcStats reads the process's numbers from /proc, as Prometheus' own
// process collector does: the resident size from /proc/self/statm, the
// open descriptors from /proc/self/fd (counted in place, without a name
// per descriptor: a gateway with 10,000 streams has 10,000 of them).
func readProcStats() procStats {
	s := procStats{cpu: cpuSeconds(), rss: -1, fds: -1, maxFDs: fdLimit()}
	if b, err := os.ReadFile("/proc/self/statm"); err == nil {
		if f := bytes.Fields(b); len(f) >= 2 {
			if pages, err := strconv.ParseUint(string(f[1]), 10, 64); err == nil {
				s.rss = float64(pages) * float64(os.Getpagesize())
			}
		}
	}
	if n, err := countFDs(); err == nil {
		s.fds = float64(n)
	}
	return s
}

// countFDs counts the entries of /proc/self/fd but for ".", ".." and the
// descriptor that reads the directory.
func countFDs() (int, error) {
	fd, err := unix.Open("/proc/self/fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	var buf [8192]byte
	n := 0
	for {
		m, err := unix.Getdents(fd, buf[:])
		if err != nil {
			return 0, err
		}
		if m <= 0 {
			break
		}
		// struct linux_dirent64: ino (8), off (8), reclen (2), type (1), name.
		for off := 0; off+19 <= m; {
			reclen := int(buf[off+16]) | int(buf[off+17])<<8
			if reclen <= 0 {
				break
			}
			if name := buf[off+19:]; !(name[0] == '.' && (name[1] == 0 || name[1] == '.' && name[2] == 0)) {
				n++
			}
			off += reclen
		}
	}
	return n - 1, nil
}
