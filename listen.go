package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

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
	// systemd's socket, handed over by a predecessor that had it from
	// systemd (or from its own predecessor): still systemd's.
	listenerSystemdInherited = "systemd socket activation, handed over"
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

// listenRetryEvery is how often a gateway tries gateway.listen again while
// it is in use. Nothing tells a process when another lets a port go, so
// this is a poll, bounded by gateway.listen_timeout.
const listenRetryEvery = 100 * time.Millisecond

// listenOn binds gateway.listen. An address in use is tried again for
// listenWait (gateway.listen_timeout): the gateway before this one may still be closing
// it. Then the gateway exits 78 (exitConfig), naming the process that
// holds the address: another program on the port is a conflict in the
// configuration, which no restart fixes. Signals work while it waits, as
// during a crash-loop delay: TERM or INT stop it (exit 0), USR1 restarts
// it (75). A nil listener comes with the exit's reason and error.
func listenOn(p *Policy, pipe *selfPipe, sd *sink, log *logger) (net.Listener, string, error) {
	addr := p.Gateway.Listen
	deadline := time.Now().Add(p.listenWait())
	var timer *time.Timer
	logged := false
	for {
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			if logged {
				log.info(evListenBusy, "listen", addr, "state", "free now")
			}
			return ln, "", nil
		}
		if !errors.Is(err, syscall.EADDRINUSE) {
			return nil, "cannot listen", fmt.Errorf("cannot listen on %s: %v", addr, syscallCause(err))
		}
		left := time.Until(deadline)
		if left <= 0 {
			return nil, "listen address in use", addressInUse(p, addr)
		}
		if !logged {
			logged = true
			_, who, _ := portHolder(addr)
			log.warn(evListenBusy, "listen", addr, "holder", orDefault(who, "unknown"), "wait", p.listenWait())
			sd.put([]byte(fmt.Sprintf("STATUS=waiting up to %s for %s, which is in use", p.listenWait(), addr)))
		}
		if timer == nil {
			timer = time.NewTimer(min(left, listenRetryEvery))
			defer timer.Stop()
		} else {
			timer.Reset(min(left, listenRetryEvery))
		}
		if why, stop, err := waitForListen(timer, pipe, log); stop {
			return nil, why, err
		}
	}
}

// waitForListen waits for the timer, taking the signals that come
// meanwhile; stop says one ended the wait for good.
func waitForListen(timer *time.Timer, pipe *selfPipe, log *logger) (why string, stop bool, err error) {
	for {
		select {
		case <-timer.C:
			return "", false, nil
		case sig := <-pipe.sigs:
			pipe.took(sig)
			switch sig {
			case syscall.SIGTERM, syscall.SIGINT:
				log.info(evSignal, "signal", signalName(sig), "action", "stop", "state", "waiting for the listen address")
				return "stopped while waiting for the listen address", true, nil
			case syscall.SIGUSR1:
				log.info(evSignal, "signal", signalName(sig), "action", "restart", "state", "waiting for the listen address")
				return "restart requested while waiting for the listen address", true, &exitError{code: exitRestart}
			}
			log.info(evSignal, "signal", signalName(sig), "action", "none", "state", "waiting for the listen address")
		}
	}
}

// addressInUse is the error of a listen address that stayed in use: who
// holds it when the system says, the command that shows it, and where to
// move this gateway instead.
func addressInUse(p *Policy, addr string) error {
	_, port, _ := net.SplitHostPort(addr)
	_, who, seen := portHolder(addr)
	holder := "another process"
	if seen {
		holder = who
	} else if runtime.GOOS == "linux" {
		holder = "a process hermes cannot see (another user's, or in another network namespace)"
	}
	err := fmt.Errorf("cannot listen on %s: it is in use by %s; waited %s for it to be free", addr, holder, p.listenWait())
	where := "a policy file (none is in use; 'hermes help' shows where hermes looks)"
	if p.Path != "" {
		where = p.Path
	}
	return &exitError{code: exitConfig, err: withHint(err, "see it with: %s\nor move this gateway to another port: set gateway.listen in %s", portHolderCommand(port, seen), where)}
}

// syscallCause is the system's own words for a failed system call
// ("address already in use"), without the layers of net.OpError that
// repeat the address.
func syscallCause(err error) error {
	var se *os.SyscallError
	if errors.As(err, &se) {
		return se.Err
	}
	return err
}
