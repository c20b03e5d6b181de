package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"
)

// fakeSuccessorHeld keeps the descriptors the fake successor was handed.
var fakeSuccessorHeld map[string]*os.File

// fakeSuccessor is a stand-in for the successor a gateway starts at a
// handoff (the test binary run with HERMES_TEST_ROLE=fake-successor), so
// that a test drives the predecessor's side of the seam (handoff.go) alone.
// It finds the descriptors HERMES_HANDOFF names, writes what it was handed
// and every line the predecessor says to $HERMES_FAKE_SUCCESSOR_DIR/peer.log,
// and plays $HERMES_FAKE_SUCCESSOR_MODE:
//
//	serve   say ready; at go, say serving and answer every request on the
//	        handed listener with "fake successor <pid>"
//	exit    exit 3 at once, before saying anything
//	failed  say ready; at go, say failed and exit 1
func runFakeSuccessor(args []string) error {
	dir, mode := os.Getenv("HERMES_FAKE_SUCCESSOR_DIR"), os.Getenv("HERMES_FAKE_SUCCESSOR_MODE")
	logf, err := os.OpenFile(dir+"/peer.log", os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	note := func(f string, a ...any) { fmt.Fprintf(logf, f+"\n", a...) }
	pid := os.Getpid()
	note("pid %d from %s ppid %d handed %s", pid, os.Getenv(envHandoffFrom), os.Getppid(), os.Getenv(envHandoff))
	if mode == "exit" {
		os.Exit(3)
	}
	files := map[string]*os.File{}
	for i, name := range strings.Split(os.Getenv(envHandoff), ",") {
		files[name] = os.NewFile(uintptr(3+i), name)
	}
	fakeSuccessorHeld = files // an *os.File collected closes its descriptor, and a lock with it
	if files["listen"] == nil || files["peer"] == nil || files["instance"] == nil {
		return fmt.Errorf("handed %q: no listen, instance or peer", os.Getenv(envHandoff))
	}
	ln, err := net.FileListener(files["listen"])
	if err != nil {
		return err
	}
	peer := files["peer"]
	fmt.Fprintf(peer, "ready %d\n", pid)
	sc := bufio.NewScanner(peer)
	for sc.Scan() {
		line := sc.Text()
		note("said %s", line)
		if line != "go" {
			continue
		}
		if mode == "failed" {
			fmt.Fprintf(peer, "failed the fake successor refuses\n")
			os.Exit(1)
		}
		fmt.Fprintf(peer, "serving %d\n", pid)
		go http.Serve(ln, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("fake successor " + strconv.Itoa(pid) + "\n"))
		}))
	}
	note("eof")
	for {
		time.Sleep(time.Hour) // serves until the test ends it
	}
}
