//go:build !linux && !darwin

package main

import (
	"errors"
	"net"
)

var errPlatform = errors.New("not supported on this platform (hermes runs on Linux and macOS)")

func procInfo(pid int) (uint64, byte, error) { return 0, 0, errPlatform }
func procExe(pid int) string                 { return "?" }
func bootID() (string, error)                { return "", errPlatform }
func peerUID(c *net.UnixConn) (int, error)   { return -1, errPlatform }
