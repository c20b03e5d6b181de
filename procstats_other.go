//go:build !linux && !darwin

package main

// readProcStats: the process metrics are not supported on this platform;
// /metrics leaves them out.
func readProcStats() procStats { return procStats{cpu: -1, rss: -1, fds: -1, maxFDs: -1} }
