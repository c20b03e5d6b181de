//go:build darwin

package main

import (
	"errors"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// procInfo reads what proves a process's identity on macOS: kinfo_proc's
// start time (microseconds since the epoch) and its state (T when stopped,
// Z for a zombie).
func procInfo(pid int) (start uint64, state byte, err error) {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil {
		return 0, 0, err
	}
	if kp.Proc.P_pid != int32(pid) {
		return 0, 0, unix.ESRCH
	}
	tv := kp.Proc.P_starttime
	start = uint64(tv.Sec)*1e6 + uint64(tv.Usec)
	switch kp.Proc.P_stat {
	case 4: // SSTOP
		state = 'T'
	case 5: // SZOMB
		state = 'Z'
	default:
		state = 'S'
	}
	return start, state, nil
}

func procExe(pid int) string {
	kp, err := unix.SysctlKinfoProc("kern.proc.pid", pid)
	if err != nil {
		return "?"
	}
	b := kp.Proc.P_comm[:]
	n := 0
	for n < len(b) && b[n] != 0 {
		n++
	}
	return string(b[:n])
}

func bootID() (string, error) {
	return unix.Sysctl("kern.bootsessionuuid")
}

// socketPeerUID returns the uid of the process at the other end of the
// unix socket fd (see peerUID).
func socketPeerUID(fd int) (int, error) {
	cred, err := unix.GetsockoptXucred(fd, unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
	if err != nil {
		return -1, err
	}
	return int(cred.Uid), nil
}

// procHandle is a proven gateway process. macOS has no pidfd: the start time
// is compared again right before each signal, and a kqueue EVFILT_PROC
// NOTE_EXIT filter wakes the moment the process exits.
type procHandle struct {
	pid   int
	start uint64
	kq    int
}

func openProc(pid int, start uint64) (*procHandle, error) {
	kq, err := unix.Kqueue()
	if err != nil {
		return nil, err
	}
	unix.CloseOnExec(kq)
	ev := unix.Kevent_t{}
	unix.SetKevent(&ev, pid, unix.EVFILT_PROC, unix.EV_ADD|unix.EV_ONESHOT)
	ev.Fflags = unix.NOTE_EXIT
	if _, err := unix.Kevent(kq, []unix.Kevent_t{ev}, nil, nil); err != nil {
		unix.Close(kq)
		return nil, err
	}
	// Checked after the filter is registered, so both concern one process.
	if s, _, err := procInfo(pid); err != nil || s != start {
		unix.Close(kq)
		return nil, errNotSame
	}
	return &procHandle{pid: pid, start: start, kq: kq}, nil
}

func (h *procHandle) signal(sig syscall.Signal) error {
	if s, _, err := procInfo(h.pid); err != nil || s != h.start {
		return errNotSame
	}
	return unix.Kill(h.pid, sig)
}

func (h *procHandle) wait(timeout time.Duration, intr int) (exited, interrupted bool, err error) {
	if intr >= 0 {
		ev := unix.Kevent_t{}
		unix.SetKevent(&ev, intr, unix.EVFILT_READ, unix.EV_ADD)
		if _, err := unix.Kevent(h.kq, []unix.Kevent_t{ev}, nil, nil); err != nil {
			return false, false, err
		}
	}
	deadline := time.Now().Add(timeout)
	for {
		left := time.Until(deadline)
		if left < 0 {
			left = 0
		}
		ts := unix.NsecToTimespec(int64(left))
		events := make([]unix.Kevent_t, 2)
		n, err := unix.Kevent(h.kq, nil, events, &ts)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return false, false, err
		}
		for _, ev := range events[:n] {
			if ev.Filter == unix.EVFILT_PROC {
				return true, false, nil
			}
		}
		if n > 0 {
			return false, true, nil
		}
		if left == 0 {
			return false, false, nil
		}
	}
}

func (h *procHandle) close() { unix.Close(h.kq) }

// keeperSupported: macOS has no child subreaper, so a keeper would lose
// the successors whose predecessors exit to launchd; under launchd a
// handoff falls back to a drain instead (handoffPossible).
const keeperSupported = false

func setSubreaper() error { return errors.New("no child subreaper on macOS") }

// procFDs is not read on macOS: a gateway that answers nothing there is
// judged by its control socket and listen address alone.
func procFDs(pid int) (open, limit int, ok bool) { return 0, 0, false }

// socketPeerPID is the pid of the process at the other end of a unix
// socket, as the kernel recorded it when the connection was made.
func socketPeerPID(fd int) (int, error) {
	return unix.GetsockoptInt(fd, unix.SOL_LOCAL, unix.LOCAL_PEERPID)
}
