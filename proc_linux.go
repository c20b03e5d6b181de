//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procInfo reads what proves a process's identity: its start time in clock
// ticks since boot (/proc/<pid>/stat field 22) and its state (field 3: R, S,
// T when stopped, Z for a zombie). A pid with another start time is another
// process that reused the pid.
func procInfo(pid int) (start uint64, state byte, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	// comm (field 2) may hold spaces and parentheses: split after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, 0, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	start, err = strconv.ParseUint(f[19], 10, 64) // field 22
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return start, f[0][0], nil
}

// procExe returns the process's executable name (for messages only).
func procExe(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	if err != nil {
		return "?"
	}
	return strings.TrimSpace(string(b))
}

func bootID() (string, error) {
	b, err := os.ReadFile("/proc/sys/kernel/random/boot_id")
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// socketPeerUID returns the uid of the process at the other end of the
// unix socket fd (see peerUID).
func socketPeerUID(fd int) (int, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1, err
	}
	return int(cred.Uid), nil
}

// procHandle is a proven gateway process. On Linux it holds a pidfd: once
// opened and checked, every signal goes to exactly that process even if the
// pid is reused, and poll on the pidfd wakes the moment it exits.
type procHandle struct {
	pid   int
	start uint64
	fd    int
}

// openProc opens the process and proves it is the one recorded: the start
// time is checked after the pidfd is open, so the check and every later
// signal concern the same process.
func openProc(pid int, start uint64) (*procHandle, error) {
	fd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return nil, err
	}
	s, _, err := procInfo(pid)
	if err != nil || s != start {
		unix.Close(fd)
		return nil, errNotSame
	}
	unix.CloseOnExec(fd)
	return &procHandle{pid: pid, start: start, fd: fd}, nil
}

func (h *procHandle) signal(sig syscall.Signal) error {
	return unix.PidfdSendSignal(h.fd, sig, nil, 0)
}

// wait blocks until the process exits (true), the timeout passes (false),
// or intr, a file descriptor, becomes readable (interrupted). No sleep loop:
// poll(2) on the pidfd wakes at the exit itself.
func (h *procHandle) wait(timeout time.Duration, intr int) (exited, interrupted bool, err error) {
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline) / time.Millisecond)
		if ms < 0 {
			ms = 0
		}
		fds := []unix.PollFd{{Fd: int32(h.fd), Events: unix.POLLIN}}
		if intr >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(intr), Events: unix.POLLIN})
		}
		n, err := unix.Poll(fds, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, false, err
		}
		if fds[0].Revents != 0 {
			return true, false, nil
		}
		if len(fds) > 1 && fds[1].Revents != 0 {
			return false, true, nil
		}
		if n == 0 && ms == 0 {
			return false, false, nil
		}
	}
}

func (h *procHandle) close() { unix.Close(h.fd) }

// keeperSupported: Linux has child subreapers, so a keeper gets back the
// successors whose predecessors exit.
const keeperSupported = true

// setSubreaper makes this process the reaper of its orphaned descendants
// (PR_SET_CHILD_SUBREAPER): a gateway's successor comes back to the keeper
// when the gateway that started it exits.
func setSubreaper() error { return unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) }

// procFDs is how many file descriptors pid holds and its soft limit, from
// /proc/PID/fd and /proc/PID/limits.
func procFDs(pid int) (open, limit int, ok bool) {
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return 0, 0, false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/limits", pid))
	if err != nil {
		return 0, 0, false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, found := strings.CutPrefix(line, "Max open files"); found {
			f := strings.Fields(rest)
			if len(f) == 0 {
				break
			}
			n, err := strconv.Atoi(f[0])
			if err != nil {
				return 0, 0, false // unlimited
			}
			return len(ents), n, true
		}
	}
	return 0, 0, false
}

// socketPeerPID is the pid of the process at the other end of a unix
// socket, as the kernel recorded it when the connection was made.
func socketPeerPID(fd int) (int, error) {
	cred, err := unix.GetsockoptUcred(fd, unix.SOL_SOCKET, unix.SO_PEERCRED)
	if err != nil {
		return -1, err
	}
	return int(cred.Pid), nil
}
