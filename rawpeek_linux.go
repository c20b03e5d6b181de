//go:build linux && !386

package main

import (
	"syscall"
	"unsafe"
)

// rawPeek looks at what the socket holds without taking it and without
// waiting: EAGAIN is nothing, 0 a byte (or the end: a peek at a closed
// connection reads 0 bytes).
func rawPeek(fd uintptr, p []byte) syscall.Errno {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno
}
