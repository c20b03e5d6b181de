package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The handoff, the predecessor's side: a serving gateway asked to hand over
// (hermes restart, USR2) checks that a successor can start, starts it with
// the listening socket and the locks as inherited descriptors, follows it
// through the protocol of handoff.go, hands over when it is ready, takes
// the socket back if it dies within restart.probation, and kills it if it
// never gets ready.

// controlHandoff asks the loop for a handoff and answers with its outcome:
// "ok <successor pid>" once the successor serves, or "error refused: ..."
// / "error failed: ..." (the gateway serves on). by says who asks.
func (g *gateway) controlHandoff(c *net.UnixConn, uid int, by string) {
	p := g.policy.Load()
	wait := handoffWait(p)
	c.SetDeadline(time.Now().Add(wait + time.Second))
	if by == "" {
		by = "the control socket"
	}
	if ans, taken := g.askHandoff(fmt.Sprintf("%s (uid %d)", by, uid), wait); taken {
		fmt.Fprintln(c, ans)
	} // else silence: the loop does not take its inputs
}

// successorBinaryGone says why a successor cannot start from exe, the
// binary this gateway was started from, or "" when it can: `go run`
// deletes its build when it exits, and a package upgrade may remove the
// path. A restart then drains instead (a refused handoff), and says why.
func successorBinaryGone(exe string) string {
	if exe == "" {
		return ""
	}
	st, err := os.Stat(exe)
	if err == nil && st.Mode().IsRegular() {
		return ""
	}
	why := fmt.Sprintf("the binary this gateway was started from (%s) is gone, so no successor can start from it", exe)
	if strings.Contains(exe, "go-build") {
		why += "; it was `go run`'s temporary build: run a built binary instead (go build -o hermes . && ./hermes serve)"
	}
	return why
}

// askHandoff hands a handoff request to the loop and waits, until wait,
// for its outcome: "ok <successor pid>", or "error refused: ..." /
// "error failed: ...". taken is false when the loop did not take the
// request at all (frozen).
func (g *gateway) askHandoff(by string, wait time.Duration) (ans string, taken bool) {
	if why := successorBinaryGone(g.exe); why != "" {
		// Checked here, off the loop: a stat is I/O.
		return "error refused: " + why, true
	}
	req := handoffReq{by: by, reply: make(chan string, 1)}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-g.done:
		return "error refused: the gateway is stopping", true
	case g.handoffs <- req:
	case <-t.C:
		return "", false
	}
	select {
	case ans := <-req.reply:
		return ans, true
	case <-g.done:
		return "error refused: the gateway stopped before the handoff was done", true
	case <-t.C:
		return fmt.Sprintf("error failed: no outcome within %s", wait), true
	}
}

// spawn starts the successor, off the loop (exec reads the binary from a
// disk that may be slow), and follows it: its lines, and its exit.
func (g *gateway) spawn() {
	g.listenStreams()
	var kf *os.File
	if g.keeper != nil {
		kf = g.keeper.file
	}
	childNames, childFiles := g.handoffChildren()
	succ, err := spawnSuccessor(g.exe, g.args, g.ln, g.systemdSocket(), g.inst, g.tokLock, kf, childNames, childFiles)
	if err != nil {
		g.tell(loopInput{kind: inSpawned, err: err})
		return
	}
	pid := succ.cmd.Process.Pid
	g.tell(loopInput{kind: inSpawned, pid: pid, proc: succ})
	readDone := make(chan struct{})
	go succ.peer.readThen(readDone, func(f []string) {
		switch f[0] {
		case "ready":
			g.tell(loopInput{kind: inSuccessorReady, pid: pid})
		case "serving":
			g.tell(loopInput{kind: inSuccessorServing, pid: pid})
		case "stop-now":
			g.tell(loopInput{kind: inPeerStopNow, pid: pid})
		case "stopping":
			g.tell(loopInput{kind: inPeerStopping, pid: pid})
		case "failed":
			g.tell(loopInput{kind: inSuccessorFailed, pid: pid, err: errors.New(strings.Join(f[1:], " "))})
		}
	})
	go func() {
		succ.cmd.Wait()
		// Its last lines ("failed <why>") may still be unread: the
		// reader ends at the socket's end, which its exit makes, before
		// the exit is told (bounded, for a grandchild holding the socket).
		select {
		case <-readDone:
		case <-time.After(time.Second):
		}
		code := succ.cmd.ProcessState.ExitCode()
		if ws, ok := succ.cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			code = 128 + int(ws.Signal())
		}
		succ.peer.close()
		g.tell(loopInput{kind: inSuccessorExited, pid: pid, code: code})
	}()
}

// handOver: the successor serves. Stop accepting (the socket stays open in
// the successor), answer every request from here with Connection: close,
// close connections as they idle, and tell systemd who the main process is.
func (g *gateway) handOver(successor int) {
	g.handedOff.Store(true)
	g.conns.closing.Store(true)
	g.gate.watch()
	if f, err := listenerFile(g.ln); err == nil {
		g.spare = f
	}
	g.stopAccepting()
	g.handChildren()
	if g.keeper == nil {
		g.sd.put([]byte(fmt.Sprintf("MAINPID=%d", successor)))
	}
}

// takeBack undoes handOver: the successor died after taking over, and
// this gateway, which still holds the socket and the locks, serves again.
func (g *gateway) takeBack() {
	g.handedOff.Store(false)
	g.conns.closing.Store(false)
	g.gate.unwatch()
	if g.spare != nil {
		ln, err := net.FileListener(g.spare)
		g.spare.Close()
		g.spare = nil
		if err != nil {
			g.log.errorf(evServeFailed, "error", fmt.Errorf("taking the listening socket back: %w", err))
			return
		}
		g.ln = ln
		g.lnClosed.Store(false)
		g.serveHTTP()
	}
	go g.reclaim()
	go g.takeChildrenBack() // it waits for the paused supervisions to end: not on the loop
	g.keeper.current()
	g.sd.put([]byte("READY=1\nSTATUS=serving (the successor failed)" + g.mainPID()))
}

// killSuccessor ends a successor that failed. It is this process's child,
// not yet reaped, so its pid cannot name anything else. If it had been
// told to take over, this gateway takes back its pid file and control
// socket.
func (g *gateway) killSuccessor() {
	succ := g.succ
	g.succ = nil
	if succ == nil {
		return
	}
	told := true // it may have got as far as the pid file and control socket
	succ.cmd.Process.Kill()
	succ.peer.close()
	pid := succ.cmd.Process.Pid
	go func() {
		recordExit(g.stateDir, pid, 128+int(syscall.SIGKILL), "killed: the handoff to it failed", g.policy.Load().Journal.ExitFlush)
		if told {
			g.reclaim()
		}
	}()
}

// reclaim makes the pid file and the control socket this gateway's again.
func (g *gateway) reclaim() {
	if ctl, err := listenControl(g.ctlPath); err == nil {
		old := g.ctl.Swap(ctl)
		go g.serveControl(ctl)
		if old != nil {
			old.UnixListener.Close() // its file is the new one now: not removed
		}
	}
	if self := g.pidSelf.Load(); self != nil {
		publishPid(g.pidPath, *self)
	}
}

// systemdSocket reports whether the gateway serves on systemd's socket
// (socket activation, directly or handed over), which stays open while no
// gateway runs.
func (g *gateway) systemdSocket() bool {
	return g.lnKind == listenerSystemd || g.lnKind == listenerSystemdInherited
}

// handoffPossible says why this process cannot hand its place over, or "".
func handoffPossible() string {
	if os.Getenv(envKeeper) != "" {
		return "" // the keeper holds the place the manager watches
	}
	if os.Getenv("INVOCATION_ID") != "" {
		return "under systemd a handoff needs the keeper process, which `hermes serve` starts only with restart.mode = \"handoff\" (this one started with another mode): restart once to change that"
	}
	if os.Getpid() == 1 {
		return "this gateway is PID 1 of a pid namespace (a container): when it exits the kernel kills every process in the namespace, its successor too"
	}
	if os.Getenv("XPC_SERVICE_NAME") != "" && os.Getenv("XPC_SERVICE_NAME") != "0" {
		return "launchd runs this gateway and watches the pid it started: a successor would be a second copy once launchd starts another"
	}
	return ""
}

// spawnSuccessor starts the successor with the listening socket, the locks
// and its end of the peer socket. exe is the binary's path as it was at
// start (so a binary moved into place since is the one that runs), args the
// same arguments. systemdSocket says ln is systemd's socket.
func spawnSuccessor(exe string, args []string, ln net.Listener, systemdSocket bool, instance, token, keeper *os.File, childNames []string, childFiles []*os.File) (*successorProc, error) {
	lf, err := listenerFile(ln)
	if err != nil {
		return nil, err
	}
	defer lf.Close()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM, 0)
	if err != nil {
		return nil, fmt.Errorf("handoff socketpair: %w", err)
	}
	unix.CloseOnExec(fds[0])
	unix.CloseOnExec(fds[1])
	mine, theirs := os.NewFile(uintptr(fds[0]), "handoff peer"), os.NewFile(uintptr(fds[1]), "handoff peer (successor)")
	defer theirs.Close()
	conn, err := net.FileConn(mine)
	mine.Close()
	if err != nil {
		return nil, fmt.Errorf("handoff socketpair: %w", err)
	}
	names := []string{"listen", "instance"}
	files := []*os.File{lf, instance}
	if token != nil {
		names, files = append(names, "token"), append(files, token)
	}
	if keeper != nil {
		names, files = append(names, "keeper"), append(files, keeper)
	}
	names, files = append(names, childNames...), append(files, childFiles...)
	names, files = append(names, "peer"), append(files, theirs)

	devnull, err := os.Open(os.DevNull)
	if err != nil {
		conn.Close()
		return nil, err
	}
	defer devnull.Close()
	cmd := exec.Command(exe, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = devnull, os.Stdout, os.Stderr
	cmd.ExtraFiles = files
	cmd.Env = successorEnv(strings.Join(names, ","), systemdSocket)
	if err := cmd.Start(); err != nil {
		conn.Close()
		if errors.Is(err, unix.ENOENT) {
			err = fmt.Errorf("%w (the binary this gateway was started from is gone: put one at %s)", err, exe)
		}
		return nil, err
	}
	return &successorProc{cmd: cmd, peer: newHandoffPeer(conn)}, nil
}

// successorEnv is this process's environment for the successor: the
// handoff variables set, and nothing that names this process alone
// (WATCHDOG_PID: systemd's watchdog follows the main pid, and the
// successor becomes it) or belongs to a test of this process.
func successorEnv(spec string, systemdSocket bool) []string {
	env := environWithout("WATCHDOG_PID", "HERMES_TEST_FAULT", envHandoff, envHandoffFrom, envHandoffSocket, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", envKeeperFD)
	env = append(env, envHandoff+"="+spec, fmt.Sprintf("%s=%d", envHandoffFrom, os.Getpid()))
	if systemdSocket {
		env = append(env, envHandoffSocket+"=systemd")
	}
	if f := successorTestFault(); f != "" {
		env = append(env, "HERMES_TEST_FAULT="+f)
	}
	return env
}

// executablePath is the binary's path now, for a later handoff: the path
// stays right when the file is replaced, where /proc/self/exe would say
// "(deleted)".
func executablePath() string {
	exe, err := os.Executable()
	if err != nil {
		return os.Args[0]
	}
	return strings.TrimSuffix(exe, " (deleted)")
}

// handoffWait is how long a control request may wait for a handoff.
func handoffWait(p *Policy) time.Duration { return p.Restart.ReadyTimeout + autoWaitMargin }
