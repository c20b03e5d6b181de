//go:build darwin

package main

import (
	"net"

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

func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	uid := -1
	var serr error
	err = raw.Control(func(fd uintptr) {
		var cred *unix.Xucred
		cred, serr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		if serr == nil {
			uid = int(cred.Uid)
		}
	})
	if err != nil {
		return -1, err
	}
	return uid, serr
}
