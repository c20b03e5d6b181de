//go:build !linux || 386

package main

import (
	"errors"
	"syscall"

	"golang.org/x/sys/unix"
)

// rawPeek looks at what the socket holds without taking it and without
// waiting: EAGAIN is nothing. Here (linux/386 reaches recvfrom through
// socketcall, and other systems) it is x/sys's Recvfrom.
func rawPeek(fd uintptr, p []byte) syscall.Errno {
	_, _, err := unix.Recvfrom(int(fd), p, unix.MSG_PEEK|unix.MSG_DONTWAIT)
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno
	}
	return 0
}
