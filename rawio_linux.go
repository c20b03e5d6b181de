package main

import (
	"syscall"
	"unsafe"
)

// rawIO: this system's read and write on a non-blocking socket can be
// made without the scheduler's system call bookkeeping (rawio.go).
const rawIO = true

func rawRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), errno
}

// rawPeek looks at what the socket holds without taking it and without
// waiting: EAGAIN is nothing, 0 a byte (or the end: a peek at a closed
// connection reads 0 bytes).
func rawPeek(fd uintptr, p []byte) syscall.Errno {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)),
		syscall.MSG_PEEK|syscall.MSG_DONTWAIT, 0, 0)
	return errno
}
