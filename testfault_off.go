//go:build !hermes_testfault

package main

// A release build has no test faults: HERMES_TEST_FAULT means nothing to it
// (testfault_on.go has them, behind -tags hermes_testfault).
const testFaultsBuilt = false

func testFaultSet(string) bool { return false }

func testFault(string) {}

func testFaultPause(string) {}

func successorTestFault() string { return "" }

func testFaultBallast() {}
