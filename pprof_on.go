//go:build hermes_pprof

package main

import (
	"net/http"
	_ "net/http/pprof" // the profiling endpoints, on their own listener below
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"time"
)

// Profiling, for finding where the proxy path spends its time and memory
// (bench/load.sh, issue notes). Only a binary built with -tags hermes_pprof
// has it; it serves net/http/pprof on HERMES_PPROF (a loopback address),
// never on the gateway's own listener.
//
// HERMES_MAXSTACK (bytes) lowers the goroutine stack limit, so that the
// runtime names the first call path that grows a stack past it.
func init() {
	if addr := os.Getenv("HERMES_PPROF"); addr != "" {
		go http.ListenAndServe(addr, nil)
	}
	if n, err := strconv.Atoi(os.Getenv("HERMES_MEMPROFILERATE")); err == nil && n > 0 {
		runtime.MemProfileRate = n // 1: every allocation, for exact per-stream figures
	}
	if n, err := strconv.Atoi(os.Getenv("HERMES_MAXSTACK")); err == nil && n > 0 {
		// After HERMES_MAXSTACK_AFTER (a duration), so that one-off paths
		// (caches built by the first request) can run first.
		d, _ := time.ParseDuration(os.Getenv("HERMES_MAXSTACK_AFTER"))
		time.AfterFunc(d, func() { debug.SetMaxStack(n) })
	}
}
