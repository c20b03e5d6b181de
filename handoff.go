package main

import (
	"bufio"
	"net"
	"os"
	"os/exec"
	"slices"
	"strings"
)

// The handoff's seam: the protocol between the two sides, the environment
// and the descriptors that cross it. Each side lives in its own file:
// handoff_parent.go (the predecessor: start the successor, follow it, hand
// over, fail back), handoff_child.go (the successor: find what it was
// handed, stand by, take over) and handoff_keeper.go (the keeper a service
// manager watches, under which gateways hand over).
//
// A running gateway (the predecessor) starts its successor, the
// binary now at the path the predecessor was started from, and hands it
// what makes it the gateway: the listening socket, the instance lock and
// the token lock, as inherited descriptors. flock locks belong to the open
// file description, so the successor holds them the moment it exists and
// keeps them when the predecessor exits; the listening socket is never
// closed, so no connection is refused and none waits.
//
// The two talk over a socketpair, one line per message:
//
//	successor   -> predecessor  ready <pid>         loop ticking, would answer /readyz 200; not accepting yet
//	predecessor -> successor    go                  take over
//	successor   -> predecessor  serving <pid>       accepting; pid file and control socket are its own
//	successor   -> predecessor  failed <why>        after go, it could not make the pid file or control socket its own: it undid them, accepted nothing, and exits
//	predecessor -> successor    drain <n> <unixms>  its sessions left, and its drain's deadline
//	successor   -> predecessor  stopping            the successor drains: no failback to it, end the probation
//	successor   -> predecessor  stop-now            the successor is being stopped now: finish now
//
// and the predecessor's exit closes the socket. Until "go" the successor
// takes no connection and writes nothing of the instance's, so a
// successor that fails is killed with nothing to undo but the kill.
// Unknown lines are ignored, so the two binaries may be different versions.

// The successor's environment: which inherited descriptors are what, from
// fd 3 on, and who handed them over (checked against the parent pid).
const (
	envHandoff     = "HERMES_HANDOFF"
	envHandoffFrom = "HERMES_HANDOFF_FROM"
	// "systemd": the listener is systemd's socket (socket activation),
	// which stays open while no gateway runs. An older successor ignores it.
	envHandoffSocket = "HERMES_HANDOFF_SOCKET"
)

// environWithout is this process's environment less the named variables:
// what a process it starts (a successor, a gateway under the keeper, a
// supervised upstream) must not take for its own.
func environWithout(names ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); !slices.Contains(names, k) {
			env = append(env, kv)
		}
	}
	return env
}

// inheritance is what a successor was handed.
type inheritance struct {
	from     int
	listener net.Listener
	systemd  bool // the listener is systemd's socket (envHandoffSocket)
	instance *os.File
	token    *os.File // nil when the predecessor held no token lock
	peer     *handoffPeer
	// The supervised upstreams' runs, by upstream name: each one's pid and
	// start time (the name child:NAME:PID:START) and output pipe.
	children map[string]*inheritedChild
}

// handoffPeer is one end of the line protocol. Writes go through a queue,
// so the loop never waits on the other side.
type handoffPeer struct {
	conn net.Conn
	out  *sink
}

func newHandoffPeer(c net.Conn) *handoffPeer {
	p := &handoffPeer{conn: c}
	p.out = newSink("handoff peer", func(batch [][]byte) error {
		for _, b := range batch {
			if _, err := c.Write(b); err != nil {
				return err
			}
		}
		return nil
	})
	return p
}

func (p *handoffPeer) say(line string) { p.out.put([]byte(line + "\n")) }

// read calls on with the fields of each line until the other side closes.
func (p *handoffPeer) read(on func(f []string)) {
	sc := bufio.NewScanner(p.conn)
	for sc.Scan() {
		if f := strings.Fields(sc.Text()); len(f) > 0 {
			on(f)
		}
	}
}

// readThen is read, and closes done when the other side has closed.
func (p *handoffPeer) readThen(done chan struct{}, on func(f []string)) {
	defer close(done)
	p.read(on)
}

func (p *handoffPeer) close() { p.conn.Close() }

// successorProc is a successor this gateway started.
type successorProc struct {
	cmd  *exec.Cmd
	peer *handoffPeer
}

// handoffReq is a handoff asked for on the control socket; the answer is
// "ok <pid>" or "error <why>".
type handoffReq struct {
	by    string
	reply chan string
}
