//go:build hermes_testfault

package main

import (
	"os"
	"time"
)

// Test faults, for the test suite only. They exist only in a binary built
// with -tags hermes_testfault (the tests build one); a release binary has
// none of this code and ignores HERMES_TEST_FAULT. The faults:
//
//	freeze-after-ready   the loop blocks forever once it is ready (a frozen event loop)
//	ignore-stop-signals  the loop drops TERM, INT and USR1 but keeps ticking
//	exit-after-ready     the gateway exits 1 right after it is ready (a crash at start)
//	hold-64mib           the gateway holds 64 MiB it touched, from start to exit (a leak, for the memory guard)
//	slow-start           the gateway waits 500 ms between opening its sockets and starting its loop (a slow start)
//	control-deaf         the control socket listens but never accepts (a healthy gateway whose control socket is silent)
const testFaultsBuilt = true

// testFaultSet reports whether HERMES_TEST_FAULT names the fault.
func testFaultSet(name string) bool { return os.Getenv("HERMES_TEST_FAULT") == name }

// testFault blocks the calling goroutine forever when the fault is set.
func testFault(name string) {
	if testFaultSet(name) {
		freezeLoopForTest()
	}
}

// testFaultPause holds the calling goroutine for 500 ms when the fault is
// set: it widens a window at start that is otherwise microseconds wide.
func testFaultPause(name string) {
	if testFaultSet(name) {
		time.Sleep(500 * time.Millisecond)
	}
}

// freezeLoopForTest is named so that a stack dump says plainly what froze.
func freezeLoopForTest() {
	block := make(chan struct{})
	<-block
}

// successorTestFault is the fault a gateway passes to the successor it
// starts in a handoff (HERMES_TEST_SUCCESSOR_FAULT): a test can break the
// successor without breaking the gateway under test. The successor-only
// faults: never-ready (it starts and ticks but never reports ready) and
// crash-after-takeover (it panics right after it took over).
func successorTestFault() string { return os.Getenv("HERMES_TEST_SUCCESSOR_FAULT") }

// testBallast is what hold-64mib holds.
var testBallast []byte

// testFaultBallast takes the memory of hold-64mib.
func testFaultBallast() {
	if testFaultSet("hold-64mib") {
		testBallast = make([]byte, 64<<20)
		for i := 0; i < len(testBallast); i += 4096 {
			testBallast[i] = 1
		}
	}
}
