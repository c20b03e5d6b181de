package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// The keeper: the process a service manager (or a container) watches, kept
// in place while gateways hand over among its children.
//
// A handoff moves the gateway to a new process. Where something watches the
// old one's pid, that cannot simply move with it:
//   - systemd: a MAINPID= that names a process which is not systemd's own
//     child makes that main process "alien" for good (service_set_main_pid
//     decides it once). On stop, systemd then sends it TERM and, having
//     nothing it can wait for, SIGKILLs the whole cgroup at once
//     (unit_kill_context): every stream in flight is cut. Seen on systemd
//     252 in the harness; MAINPID= alone is not a handoff under systemd.
//   - a container: when PID 1 exits, the kernel kills the whole namespace.
//   - launchd watches the pid it started.
//
// So under systemd (INVOCATION_ID set) and as PID 1, with restart.mode =
// "handoff", `hermes serve` starts as a keeper: it becomes a child
// subreaper, starts the gateway as its child, forwards every signal it gets
// to the gateway that serves now, reaps every child (adopted ones too: a
// successor whose predecessor exited comes back to it), and exits with the
// exit code of the last gateway once none is left. It does nothing else: no
// policy beyond the start, no disk, no network. The manager sees one main
// process from start to stop; a handoff is invisible to it. (launchd has no
// subreaper on macOS; there a handoff falls back to a drain.)

// The gateway's environment under a keeper: the keeper's pid, and which
// descriptor is the datagram socket it reports on ("current <pid>" when it
// becomes the gateway that serves).
const (
	envKeeper   = "HERMES_KEEPER"
	envKeeperFD = "HERMES_KEEPER_FD"
)

// keeperWanted says whether this `hermes serve` should be a keeper, and why.
func keeperWanted(p *Policy) (string, bool) {
	if os.Getenv(envKeeper) != "" || p.Restart.Mode != modeHandoff || !keeperSupported {
		return "", false
	}
	switch {
	case os.Getpid() == 1:
		return "PID 1", true
	case os.Getenv("INVOCATION_ID") != "":
		return "systemd", true
	}
	return "", false
}

// keeperLink is a gateway's line to its keeper.
type keeperLink struct {
	pid  int
	conn *net.UnixConn
	file *os.File // the same socket, to hand to a successor
}

// keeperFromEnv returns the gateway's keeper, or nil when there is none.
// The variables are left for a successor, which checks them the same way.
func keeperFromEnv() (*keeperLink, error) {
	pid, fd := os.Getenv(envKeeper), os.Getenv(envKeeperFD)
	if pid == "" {
		return nil, nil
	}
	k, err := strconv.Atoi(pid)
	if err != nil {
		return nil, fmt.Errorf("%s=%q is not a pid", envKeeper, pid)
	}
	n, err := strconv.Atoi(fd)
	if err != nil || n < 3 {
		return nil, fmt.Errorf("%s=%q is not a descriptor", envKeeperFD, fd)
	}
	unix.CloseOnExec(n)
	f := os.NewFile(uintptr(n), "keeper")
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("keeper socket (fd %d): %w", n, err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return nil, fmt.Errorf("keeper socket (fd %d) is not a unix socket", n)
	}
	return &keeperLink{pid: k, conn: uc, file: f}, nil
}

// current tells the keeper this gateway is the one that serves now: the
// one its signals go to. One datagram: it never waits.
func (k *keeperLink) current() {
	if k != nil {
		k.conn.Write([]byte(fmt.Sprintf("current %d", os.Getpid())))
	}
}

// runKeeper is `hermes serve` as a keeper. pipe is the self-pipe serve
// installed first thing (signals arrive through it, in order); exe and args
// start the gateway.
func runKeeper(pipe *selfPipe, exe string, args []string, why string, log *logger) error {
	if err := setSubreaper(); err != nil {
		return fmt.Errorf("keeper: %w", err)
	}
	chld := make(chan os.Signal, 1)
	signal.Notify(chld, syscall.SIGCHLD)
	defer signal.Stop(chld)

	theirs, reports, err := keeperReports()
	if err != nil {
		return err
	}
	first, err := startKept(exe, args, theirs)
	if err != nil {
		return err
	}
	log.info(evKeeperStart, "gateway", first, "why", why)

	k := &keeper{current: first, known: map[int]bool{first: true}, log: log}
	for {
		select {
		case sig := <-pipe.sigs:
			pipe.took(sig)
			k.forward(sig)
		case p := <-reports:
			k.current, k.known[p] = p, true
		case <-chld:
			if done, err := k.reap(); done {
				return err
			}
		}
	}
}

// keeperReports makes the keeper's socket pair: the keeper reads the
// gateways' "current PID" datagrams from its end, as pids on the channel;
// theirs is the end the gateways inherit.
func keeperReports() (theirs *os.File, reports chan int, err error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_DGRAM, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("keeper socketpair: %w", err)
	}
	unix.CloseOnExec(fds[0])
	unix.CloseOnExec(fds[1])
	mine, theirs := os.NewFile(uintptr(fds[0]), "keeper"), os.NewFile(uintptr(fds[1]), "keeper (gateway)")
	reports = make(chan int, 16)
	go func() {
		buf := make([]byte, 64)
		for {
			n, err := mine.Read(buf)
			if err != nil {
				return
			}
			if pid, ok := strings.CutPrefix(string(buf[:n]), "current "); ok {
				if p, err := strconv.Atoi(pid); err == nil {
					reports <- p
				}
			}
		}
	}()
	return theirs, reports, nil
}

// startKept starts the first gateway. It gets systemd's sockets (socket
// activation) where systemd put them, from fd 3, and the keeper's socket
// (theirs) after them. It returns the gateway's pid.
func startKept(exe string, args []string, theirs *os.File) (int, error) {
	var extra []*os.File
	nListen, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		nListen = 0
	}
	for i := 0; i < nListen; i++ {
		extra = append(extra, os.NewFile(uintptr(3+i), "systemd socket"))
	}
	extra = append(extra, theirs)
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		return 0, err
	}
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, os.Stdout, os.Stderr
	cmd.ExtraFiles = extra
	// Its own process group: a terminal's Ctrl-C reaches the keeper, which
	// passes it on once, not both.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Env = keeperChildEnv(nListen, 3+len(extra)-1)
	if err := cmd.Start(); err != nil {
		return 0, fmt.Errorf("keeper: starting the gateway: %w", err)
	}
	devnull.Close()
	theirs.Close()
	for _, f := range extra[:nListen] {
		f.Close()
	}
	return cmd.Process.Pid, nil
}

// keeper is the keeper's memory: the gateway that serves now (0 between
// one's exit and the next one's report), every gateway it has heard of,
// and the exit code of the last one that served.
type keeper struct {
	current, lastCode int
	known             map[int]bool
	log               *logger
}

// forward passes a signal to the gateway that serves now, or to every
// gateway the keeper knows while none does.
func (k *keeper) forward(sig syscall.Signal) {
	targets := []int{k.current}
	if k.current == 0 {
		targets = targets[:0]
		for p := range k.known {
			targets = append(targets, p)
		}
	}
	for _, p := range targets {
		unix.Kill(p, sig)
	}
}

// reap reaps every child that has exited. It reports done when none is
// left: the keeper's work is over, and its exit is the last gateway's.
func (k *keeper) reap() (bool, error) {
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, unix.WNOHANG, nil)
		if err == unix.EINTR {
			continue
		}
		if err == unix.ECHILD {
			k.log.info(evKeeperExit, "code", k.lastCode)
			if k.lastCode == 0 {
				return true, nil
			}
			return true, &exitError{code: k.lastCode}
		}
		if err != nil || pid <= 0 {
			return false, nil
		}
		if !k.known[pid] {
			continue // an adopted process (as PID 1): reaped, that is all
		}
		delete(k.known, pid)
		if pid == k.current {
			k.current = 0
			k.lastCode = ws.ExitStatus()
			if ws.Signaled() {
				k.lastCode = 128 + int(ws.Signal())
			}
		}
	}
}

// keeperChildEnv is the gateway's environment under the keeper: systemd's
// variables as they apply to the gateway (the watchdog is pinged by the
// gateway; LISTEN_PID names the keeper, which the gateway checks against
// its parent), and the keeper's own.
func keeperChildEnv(nListen, keeperFD int) []string {
	env := environWithout("WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", envKeeper, envKeeperFD)
	if nListen > 0 {
		env = append(env, fmt.Sprintf("LISTEN_FDS=%d", nListen), fmt.Sprintf("LISTEN_PID=%d", os.Getpid()))
		if names := os.Getenv("LISTEN_FDNAMES"); names != "" {
			env = append(env, "LISTEN_FDNAMES="+names)
		}
	}
	return append(env, fmt.Sprintf("%s=%d", envKeeper, os.Getpid()), fmt.Sprintf("%s=%d", envKeeperFD, keeperFD))
}
