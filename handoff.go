package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Handoff: a running gateway (the predecessor) starts its successor, the
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

// inheritance is what a successor was handed.
type inheritance struct {
	from     int
	listener net.Listener
	systemd  bool // the listener is systemd's socket (envHandoffSocket)
	instance *os.File
	token    *os.File // nil when the predecessor held no token lock
	peer     *handoffPeer
}

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

func (p *handoffPeer) close() { p.conn.Close() }

// successorProc is a successor this gateway started.
type successorProc struct {
	cmd  *exec.Cmd
	peer *handoffPeer
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
func spawnSuccessor(exe string, args []string, ln net.Listener, systemdSocket bool, instance, token, keeper *os.File) (*successorProc, error) {
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
	var env []string
	for _, kv := range os.Environ() {
		switch strings.SplitN(kv, "=", 2)[0] {
		case "WATCHDOG_PID", "HERMES_TEST_FAULT", envHandoff, envHandoffFrom, envHandoffSocket, "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES", envKeeperFD:
			continue
		}
		env = append(env, kv)
	}
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

// handoffReq is a handoff asked for on the control socket; the answer is
// "ok <pid>" or "error <why>".
type handoffReq struct {
	by    string
	reply chan string
}

// handoffWait is how long a control request may wait for a handoff.
func handoffWait(p *Policy) time.Duration { return p.Restart.ReadyTimeout + autoWaitMargin }
