package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"syscall"
	"time"
)

// hermes logs: the gateway's log, wherever it goes. A systemd unit's goes
// to the journal (journalctl does the work); a launchd job's and a
// detached gateway's go to <state_dir>/gateway.log, which a log rotator
// may move to gateway.log.1 (and start a new one) at any time: the last
// lines are read across the two, and -f follows the name, as tail -F does.

const logsUsage = `Print the gateway's log: the systemd journal of its unit, or the state
dir's gateway.log (launchd, or a gateway started by hermes start/restart),
across a rotation to gateway.log.1. The lifecycle timeline is 'hermes events'.

    $ hermes logs
    $ hermes logs -n 200
    $ hermes logs -f
`

// logFollowEvery is how often -f looks at the file (tail -F's default is
// a second; a person watching wants less).
const logFollowEvery = 250 * time.Millisecond

func runLogs(args []string) error {
	flags := newFlagSet("logs", logsUsage)
	tf := addTargetFlags(flags)
	n := flags.Int("n", 50, "print the last `N` lines")
	follow := flags.Bool("f", false, "then keep printing lines as they come, until Ctrl-C")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if *n < 0 {
		return usageErr("logs: -n %d: give a number of lines, 0 or more", *n)
	}
	t, err := tf.resolve("logs", false)
	if err != nil {
		return err
	}
	p := t.p
	if mgr := detectManager(p); mgr.Kind == managerSystemd {
		args := []string{"-u", mgr.Unit, "-n", strconv.Itoa(*n), "--no-pager", "-o", "short-precise"}
		if mgr.Scope == "user" {
			args = append([]string{"--user"}, args...)
		}
		if *follow {
			args = append(args, "-f")
		}
		cmd := exec.Command("journalctl", args...)
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		signal.Ignore(syscall.SIGINT) // Ctrl-C ends journalctl; this returns its status
		if err := cmd.Run(); err != nil {
			return withHint(fmt.Errorf("journalctl %v: %w", args, err), "the same by hand: journalctl %s-u %s", userFlag(mgr.Scope == "system"), mgr.Unit)
		}
		return nil
	}
	path := gatewayLogPath(p.Gateway.StateDir)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		if _, err := os.Stat(path + ".1"); errors.Is(err, fs.ErrNotExist) && !*follow {
			return withHint(fmt.Errorf("instance %q has no log file (%s): a gateway run in the foreground logs to its terminal", p.Name, path),
				"its lifecycle events: hermes events%s", configFlag(p))
		}
	}
	// The current file is read through the descriptor -f goes on with, so
	// not a line falls between the last lines and what follows.
	old, _ := os.ReadFile(path + ".1")
	var cur []byte
	f, err := os.Open(path)
	if err == nil {
		cur, _ = io.ReadAll(f)
	}
	w := bufio.NewWriter(os.Stdout)
	for _, l := range lastLines([][]byte{old, cur}, *n) {
		w.Write(l)
	}
	w.Flush()
	if !*follow {
		if f != nil {
			f.Close()
		}
		return nil
	}
	return followLog(path, f, int64(len(cur)), os.Stdout)
}

// lastLines returns the last n lines of the texts, in order (the oldest
// first), each with its newline.
func lastLines(texts [][]byte, n int) [][]byte {
	var lines [][]byte
	for _, b := range texts {
		for len(b) > 0 {
			i := bytes.IndexByte(b, '\n')
			if i < 0 {
				lines = append(lines, append(b, '\n'))
				break
			}
			lines = append(lines, b[:i+1])
			b = b[i+1:]
		}
	}
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
}

// followLog prints what is appended to path (open as f, read up to off;
// f may be nil when there is no file yet), until Ctrl-C. A file moved away
// (rotated) or truncated is noticed and the new one is read from its
// start, as tail -F does.
func followLog(path string, f *os.File, off int64, out io.Writer) error {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(stop)
	open := func() {
		if f != nil {
			f.Close()
			f = nil
		}
		if nf, err := os.Open(path); err == nil {
			f, off = nf, 0
		}
	}
	defer func() {
		if f != nil {
			f.Close()
		}
	}()
	tick := time.NewTicker(logFollowEvery)
	defer tick.Stop()
	buf := make([]byte, 32<<10)
	for {
		if f != nil {
			for {
				k, err := f.ReadAt(buf, off)
				if k > 0 {
					out.Write(buf[:k])
					off += int64(k)
				}
				if err != nil || k == 0 {
					break
				}
			}
		}
		// Rotated (the name is another file now) or truncated: start over.
		st, err := os.Stat(path)
		switch {
		case err != nil:
			// Moved away, the new one not there yet: wait for it.
		case f == nil:
			open()
			continue
		default:
			cur, _ := f.Stat()
			if !os.SameFile(st, cur) || st.Size() < off {
				if os.SameFile(st, cur) {
					off = 0 // truncated in place (copytruncate)
				} else {
					// Read what the old file got after our last read,
					// then the new one from its start.
					for {
						k, _ := f.ReadAt(buf, off)
						if k == 0 {
							break
						}
						out.Write(buf[:k])
						off += int64(k)
					}
					open()
				}
				continue
			}
		}
		select {
		case <-stop:
			return nil
		case <-tick.C:
		}
	}
}
