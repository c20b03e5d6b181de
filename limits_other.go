//go:build !linux

package main

// residentBytes: no portable current RSS outside Linux (getrusage gives the
// peak), so the memory guard is off there and says so.
func residentBytes() (int64, bool) { return 0, false }
