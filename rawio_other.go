//go:build !linux

package main

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawIO: elsewhere (macOS makes system calls through libc) a rawSock
// reads and writes through its connection (rawio.go).
const rawIO = false

func rawRead(fd uintptr, p []byte) (int, syscall.Errno) { panic("rawRead: not on this system") }

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) { panic("rawWrite: not on this system") }

func rawPeek(fd uintptr, p []byte) syscall.Errno {
	_, _, err := unix.Recvfrom(int(fd), p, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}
