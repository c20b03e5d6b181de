package main

import "syscall"

// The connection cap (gateway.max_connections): past it, a new client
// connection is answered 503 and closed instead of being taken into
// memory. Every session may hold a second descriptor toward the upstream,
// and the gateway keeps some for itself (its listener, control socket,
// pid file, journal, lock files, the Telegram bot), so the default is what
// the file limit leaves for both sides after that reserve.

// fdsKept is what the gateway keeps for itself out of the file limit.
const fdsKept = 64

// maxConnsFor is the connection cap a policy's max_connections gives: set,
// it is itself; 0, it comes from the process's file limit.
func maxConnsFor(set int) int {
	if set > 0 {
		return set
	}
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1024
	}
	cur := rl.Cur
	if cur > 1<<20 {
		cur = 1 << 20
	}
	return max(int(cur)-fdsKept, 32) / 2
}
