//go:build !linux

package main

import "syscall"

// rawIO: elsewhere (macOS makes system calls through libc) a rawSock
// reads and writes through its connection (rawio.go).
const rawIO = false

func rawRead(fd uintptr, p []byte) (int, syscall.Errno) { panic("rawRead: not on this system") }

func rawWrite(fd uintptr, p []byte) (int, syscall.Errno) { panic("rawWrite: not on this system") }
