package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Where the gateway's listening socket comes from, in this order: the
// gateway that handed off to this one (handoff.go), systemd (socket
// activation: a .socket unit holds the socket while no gateway runs, so
// even a drain restart queues connections instead of refusing them), or a
// socket of its own on gateway.listen.
const (
	listenerBound     = "bound"
	listenerSystemd   = "systemd socket activation"
	listenerInherited = "handed over"
)

// systemdListener returns the listening socket systemd passed this process
// (LISTEN_PID names it, LISTEN_FDS counts from fd 3), or nil when there is
// none. The variables are cleared either way, so no child takes them for
// its own. Only the first socket is used; any others are closed.
func systemdListener() (net.Listener, error) {
	pid, nfds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	for _, k := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		os.Unsetenv(k)
	}
	if pid == "" || nfds == "" {
		return nil, nil
	}
	// Under a keeper, systemd's sockets were passed on by the keeper, and
	// LISTEN_PID names it: this process's parent.
	ours := pid == strconv.Itoa(os.Getpid()) || (os.Getenv(envKeeper) == pid && pid == strconv.Itoa(os.Getppid()))
	if !ours {
		return nil, nil // meant for another process (a parent that did not clear them)
	}
	n, err := strconv.Atoi(nfds)
	if err != nil || n < 1 {
		return nil, fmt.Errorf("socket activation: LISTEN_FDS=%q is not a count of sockets", nfds)
	}
	const first = 3 // SD_LISTEN_FDS_START
	for fd := first + 1; fd < first+n; fd++ {
		unix.Close(fd)
	}
	unix.CloseOnExec(first)
	f := os.NewFile(first, "systemd socket "+strings.Split(names, ":")[0])
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("socket activation: fd 3 is not a listening stream socket: %w (check ListenStream= in the .socket unit)", err)
	}
	return ln, nil
}

// listenerFile returns a duplicate of the listening socket's descriptor, to
// hand to a successor; closing it leaves ln open.
func listenerFile(ln net.Listener) (*os.File, error) {
	fl, ok := ln.(interface{ File() (*os.File, error) })
	if !ok {
		return nil, fmt.Errorf("a %T cannot be handed over", ln)
	}
	return fl.File()
}
