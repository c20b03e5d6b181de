package main

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// The handoff, the successor's side: a gateway started by its predecessor
// finds what it was handed (the listening socket, the instance and token
// locks), starts its loop without accepting, says ready, and takes over
// (accepts, writes the pid file, owns the control socket) only when the
// predecessor says go; one that cannot take over undoes what it did and
// says why.

// inheritedFromPredecessor returns what the predecessor handed over, or nil
// when this process was started some other way. The variables are cleared
// either way, so that no child of this process takes them for its own.
func inheritedFromPredecessor() (*inheritance, error) {
	spec, from, socket := os.Getenv(envHandoff), os.Getenv(envHandoffFrom), os.Getenv(envHandoffSocket)
	os.Unsetenv(envHandoff)
	os.Unsetenv(envHandoffFrom)
	os.Unsetenv(envHandoffSocket)
	if spec == "" {
		return nil, nil
	}
	pid, err := strconv.Atoi(from)
	if err != nil || pid != os.Getppid() {
		return nil, fmt.Errorf("%s is set, but the parent (pid %d) is not the gateway it names (%q): refusing the descriptors", envHandoff, os.Getppid(), from)
	}
	inh := &inheritance{from: pid, systemd: socket == "systemd"}
	for i, name := range strings.Split(spec, ",") {
		// Each descriptor gets exactly one owner: an *os.File left for the
		// garbage collector would close it under whoever holds it then.
		fd := 3 + i
		unix.CloseOnExec(fd)
		file := func() *os.File { return os.NewFile(uintptr(fd), "handoff "+name) }
		switch name {
		case "listen":
			f := file()
			inh.listener, err = net.FileListener(f)
			f.Close()
		case "instance":
			inh.instance = file()
		case "token":
			inh.token = file()
		case "keeper":
			// keeperFromEnv owns it, as it does in a gateway the keeper
			// started itself.
			os.Setenv(envKeeperFD, strconv.Itoa(fd))
		case "peer":
			f := file()
			var c net.Conn
			c, err = net.FileConn(f)
			f.Close()
			if err == nil {
				inh.peer = newHandoffPeer(c)
			}
		default:
			if cname, pid, start, ok := parseChildName(name); ok {
				if inh.children == nil {
					inh.children = map[string]*inheritedChild{}
				}
				inh.children[cname] = &inheritedChild{pid: pid, start: start, out: file()}
				continue
			}
			unix.Close(fd)
		}
		if err != nil {
			return nil, fmt.Errorf("handoff: inherited %s (fd %d): %w", name, fd, err)
		}
	}
	if inh.listener == nil || inh.instance == nil || inh.peer == nil {
		return nil, fmt.Errorf("handoff: %s=%q lacks the listener, the instance lock or the peer", envHandoff, spec)
	}
	// The instance lock is this very open file description: locking it
	// again succeeds at once. Anything else is not the lock it claims.
	if err := flockExclusive(inh.instance); err != nil {
		return nil, fmt.Errorf("handoff: the inherited instance lock is not held: %w", err)
	}
	return inh, nil
}

// standBy is a successor's ready: it says so to its predecessor and waits
// for "go" (or the predecessor's exit, which also means go: someone has to
// serve).
func (g *gateway) standBy() {
	peer, from := g.inh.peer, g.inh.from
	if !testFaultSet("never-ready") {
		peer.say(fmt.Sprintf("ready %d", g.pid))
	}
	go func() {
		var committed atomic.Bool
		take := func() {
			if committed.CompareAndSwap(false, true) {
				g.tell(loopInput{kind: inGo, pid: from})
			}
		}
		peer.read(func(f []string) {
			switch f[0] {
			case "go":
				take()
			case "drain":
				if len(f) == 3 {
					n, _ := strconv.Atoi(f[1])
					ms, _ := strconv.ParseInt(f[2], 10, 64)
					g.tell(loopInput{kind: inPredecessor, n: n, until: time.UnixMilli(ms)})
				}
			}
		})
		take() // the predecessor is gone; if it never said go, serve anyway
		g.tell(loopInput{kind: inPredecessorGone, pid: from})
	}()
}

// commit takes over as the gateway: own the control socket and the pid
// file, then accept, tell systemd and the predecessor. Whatever of it
// fails, it gives up before it accepts anything: it undoes what it did,
// tells the predecessor why, and exits, and the predecessor serves on (a
// successor nobody can find by its pid file or control socket must never
// serve).
func (g *gateway) commit(from int) {
	ctl, err := listenControl(g.ctlPath)
	if err != nil {
		g.abandonTakeover(from, err)
		return
	}
	self := g.self
	self.Listen, self.Control = g.ln.Addr().String(), g.ctlPath
	if err := publishPid(g.pidPath, self); err != nil {
		ctl.Close() // the predecessor makes its own again
		g.abandonTakeover(from, err)
		return
	}
	g.pidSelf.Store(&self)
	g.ctl.Store(ctl)
	go g.serveControl(ctl)
	g.serveHTTP()
	g.keeper.current()
	g.sd.put([]byte("READY=1\nSTATUS=serving" + g.mainPID()))
	g.inh.peer.say(fmt.Sprintf("serving %d", g.pid))
	if testFaultSet("crash-after-takeover") {
		g.inh.peer.out.flush(time.Now().Add(time.Second))
		panic("test fault crash-after-takeover")
	}
	g.log.info(evReady, "listen", g.ln.Addr().String(), "pid_file", g.pidPath, "control", g.ctlPath, "handoff_from", from)
	// The supervised upstreams' runs are this gateway's from now on.
	g.superviseChildren(g.policy.Load())
	go g.adoptStreams(from) // the predecessor's streams whose end came
	g.tell(loopInput{kind: inCommitted, pid: from})
}

// abandonTakeover ends a successor that could not take over: the
// predecessor hears why (and serves on, making its pid file and control
// socket its own again), and this gateway exits 1 having accepted nothing.
func (g *gateway) abandonTakeover(from int, err error) {
	g.log.errorf(evServeFailed, "error", err, "note", fmt.Sprintf("this successor does not take over; the gateway before it (pid %d) serves on", from))
	g.inh.peer.say("failed " + strings.ReplaceAll(err.Error(), "\n", " "))
	g.inh.peer.out.flush(time.Now().Add(time.Second))
	select {
	case g.fatal <- fmt.Errorf("cannot take over from pid %d: %w", from, err):
	default:
	}
}
