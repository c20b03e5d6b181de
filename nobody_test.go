package main

import (
	"os/exec"
	"syscall"
	"testing"
)

// execAsNobody prepares a command that runs as uid/gid 65534.
func execAsNobody(t *testing.T, name string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	return cmd
}
