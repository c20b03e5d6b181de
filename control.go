package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// The control socket lives in the state dir (mode 0600). It answers:
//
//	ping    "pong <pid> <state>": answered by the gateway's own loop, so a
//	        frozen loop shows as silence
//	status  one line of JSON (gatewayStatus), answered without the loop:
//	        the state it published and its heartbeat's age
//	handoff [BY]      hand over to a successor (hermes restart)
//	restart-now [BY]  stop now, as a restart (hermes restart --force):
//	        "ok 0" once the loop took it
//
// A peer of another uid is refused unless it is root.

// peerUID returns the uid of the process at the other end of a unix socket.
func peerUID(c *net.UnixConn) (int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	uid, serr := -1, error(nil)
	if err := raw.Control(func(fd uintptr) { uid, serr = socketPeerUID(int(fd)) }); err != nil {
		return -1, err
	}
	return uid, serr
}

// controlStatusProven asks the control socket at path for status, and
// returns it with the pid of the process that holds the socket, from the
// kernel (SO_PEERCRED, LOCAL_PEERPID), not from the answer: how a gateway is
// found and proven when its pid file cannot tell.
func controlStatusProven(path string, timeout time.Duration) (gatewayStatus, int, error) {
	var gs gatewayStatus
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return gs, 0, err
	}
	defer c.Close()
	pid, perr := -1, error(nil)
	if raw, err := c.(*net.UnixConn).SyscallConn(); err == nil {
		raw.Control(func(fd uintptr) { pid, perr = socketPeerPID(int(fd)) })
	}
	if perr != nil || pid <= 0 {
		return gs, 0, fmt.Errorf("who holds %s: %v", path, perr)
	}
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, "status\n"); err != nil {
		return gs, 0, err
	}
	line, err := bufio.NewReader(io.LimitReader(c, 64<<10)).ReadString('\n')
	if err != nil {
		return gs, 0, err
	}
	if err := json.Unmarshal([]byte(line), &gs); err != nil {
		return gs, 0, fmt.Errorf("%s answered with something that is not hermes status: %.60q", path, line)
	}
	return gs, pid, nil
}

func controlPath(stateDir string) string { return filepath.Join(stateDir, "control.sock") }

// controlSocket is the control socket this gateway listens on, and the
// file it made at the path: a successor replaces that file (a new socket
// renamed over the path, so there is never a moment with none), and then
// the path is no longer this gateway's to remove.
type controlSocket struct {
	*net.UnixListener
	path string
	node os.FileInfo
}

// listenControl binds a new socket beside path and renames it over path:
// whoever connects to path from then on reaches this gateway. The instance
// lock is held, so a socket file already there is a dead gateway's or a
// predecessor's.
func listenControl(path string) (*controlSocket, error) {
	tmp := fmt.Sprintf("%s.%d.new", path, os.Getpid())
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false)
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	node, err := os.Stat(path)
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("control socket %s: %w", path, err)
	}
	return &controlSocket{UnixListener: ln, path: path, node: node}, nil
}

// Close stops listening and removes the socket file, unless a successor's
// has replaced it.
func (c *controlSocket) Close() error {
	err := c.UnixListener.Close()
	if st, serr := os.Stat(c.path); serr == nil && os.SameFile(st, c.node) {
		os.Remove(c.path)
	}
	return err
}

// serveControl answers the control socket until it is closed, through a
// moment without file descriptors (accept.go): a connection taken on the
// reserve descriptor is answered like any other, so status always works.
func (g *gateway) serveControl(ln *controlSocket) {
	if testFaultSet("control-deaf") {
		return // listens, and never accepts: the socket's silence alone
	}
	closed := func() bool { return g.ctl.Load() != ln }
	handle := func(c net.Conn) { go g.handleControl(c.(*net.UnixConn)) }
	g.ctlAcc.loop(func() (net.Conn, error) { return ln.AcceptUnix() }, closed, handle, handle)
}

// logAcceptErrors logs the start and the end of an episode of accept
// errors on one listener.
func (g *gateway) logAcceptErrors(listener string) func(bool, error, int64, time.Duration) {
	return func(first bool, err error, n int64, lasted time.Duration) {
		if first {
			note := "hermes waits and accepts again"
			if outOfFDs(err) {
				note = "out of file descriptors (see ulimit -n, LimitNOFILE=): a connection waiting is taken on the reserve descriptor and answered, and hermes accepts again when descriptors are free"
			}
			g.log.warn(evAcceptError, "listener", listener, "error", err, "note", note)
			return
		}
		g.log.info(evAcceptError, "listener", listener, "state", "accepting again", "errors", n, "lasted", lasted.Round(time.Millisecond))
	}
}

func (g *gateway) handleControl(c *net.UnixConn) {
	defer g.ctlAcc.reserve.refill()
	defer c.Close()
	// A ping waits on the loop at most until the loop would count as
	// frozen anyway; everything else is answered without it.
	wait := staleAfter(g.snap.Load().Policy.Watchdog)
	c.SetDeadline(time.Now().Add(wait + time.Second))
	// The request is read before any answer, a refusal included: a client
	// still writing would otherwise meet a closed socket, not the reason.
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return
	}
	uid, err := peerUID(c)
	if err != nil || (uid != os.Getuid() && uid != 0) {
		fmt.Fprintf(c, "error refused: peer uid %d is not the gateway's uid %d or root\n", uid, os.Getuid())
		return
	}
	switch strings.TrimSpace(line) {
	case "ping":
		reply := make(chan gwState, 1)
		t := time.NewTimer(wait)
		defer t.Stop()
		select {
		case <-g.done:
			fmt.Fprintf(c, "pong %d %s\n", g.pid, stateStopping)
			return
		case g.pings <- reply:
		case <-t.C:
			return // silence: the loop does not take its inputs
		}
		select {
		case st := <-reply:
			fmt.Fprintf(c, "pong %d %s\n", g.pid, st)
		case <-g.done: // it returned with the ping unread
			fmt.Fprintf(c, "pong %d %s\n", g.pid, stateStopping)
		case <-t.C:
		}
	case "status":
		b, _ := json.Marshal(g.status())
		c.Write(append(b, '\n'))
	default:
		if by, ok := strings.CutPrefix(strings.TrimSpace(line), "handoff"); ok {
			g.controlHandoff(c, uid, strings.TrimSpace(by))
			return
		}
		if by, ok := strings.CutPrefix(strings.TrimSpace(line), "restart-now"); ok {
			g.controlRestartNow(c, uid, strings.TrimSpace(by), wait)
			return
		}
		fmt.Fprintf(c, "error unknown command %q (ping, status, handoff, restart-now)\n", strings.TrimSpace(line))
	}
}

// controlRestartNow hands a restart-now to the loop and answers once the
// loop took it; a loop that does not take it within wait answers nothing
// (frozen), and the restarter goes on with signals.
func (g *gateway) controlRestartNow(c *net.UnixConn, uid int, by string, wait time.Duration) {
	if by == "" {
		by = "the control socket"
	}
	req := handoffReq{by: fmt.Sprintf("%s (uid %d)", by, uid), reply: make(chan string, 1)}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-g.done:
		fmt.Fprintln(c, "error refused: the gateway is stopping")
		return
	case g.nows <- req:
	case <-t.C:
		return
	}
	select {
	case ans := <-req.reply:
		fmt.Fprintln(c, ans)
	case <-g.done:
		fmt.Fprintln(c, "ok 0") // it took it and has ended since
	case <-t.C:
	}
}

// errNoAnswer means the gateway's loop did not answer in time.
var errNoAnswer = errors.New("no answer")

// controlRequest sends one command and returns the one-line answer.
func controlRequest(path, cmd string, timeout time.Duration) (string, error) {
	c, err := net.DialTimeout("unix", path, timeout)
	if err != nil {
		return "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := fmt.Fprintf(c, "%s\n", cmd); err != nil {
		return "", err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return "", errNoAnswer
		}
		return "", err
	}
	line = strings.TrimSpace(line)
	if strings.HasPrefix(line, "error ") {
		return "", errors.New(strings.TrimPrefix(line, "error "))
	}
	return line, nil
}

// pingGateway pings up to tries times; a frozen loop answers none.
func pingGateway(path string, timeout time.Duration, tries int) (string, error) {
	var err error
	for i := 0; i < tries; i++ {
		var ans string
		ans, err = controlRequest(path, "ping", timeout)
		if err == nil {
			return ans, nil
		}
		if !errors.Is(err, errNoAnswer) {
			return "", err
		}
	}
	return "", err
}
