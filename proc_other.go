//go:build !linux && !darwin

package main

import (
	"errors"
	"syscall"
	"time"
)

var errPlatform = errors.New("not supported on this platform (hermes runs on Linux and macOS)")

func procInfo(pid int) (uint64, byte, error) { return 0, 0, errPlatform }
func procExe(pid int) string                 { return "?" }
func bootID() (string, error)                { return "", errPlatform }
func socketPeerUID(fd int) (int, error)      { return -1, errPlatform }

type procHandle struct {
	pid   int
	start uint64
}

func openProc(pid int, start uint64) (*procHandle, error) { return nil, errPlatform }
func (h *procHandle) signal(sig syscall.Signal) error     { return errPlatform }
func (h *procHandle) wait(timeout time.Duration, intr int) (bool, bool, error) {
	return false, false, errPlatform
}
func (h *procHandle) close() {}

const keeperSupported = false

func setSubreaper() error { return errPlatform }

func procFDs(pid int) (open, limit int, ok bool) { return 0, 0, false }

func socketPeerPID(fd int) (int, error) { return -1, errPlatform }
