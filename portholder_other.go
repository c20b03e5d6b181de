//go:build !linux

package main

import "fmt"

// portHolder: only Linux tells hermes who holds a port (/proc); elsewhere
// the hint names the command that does.
func portHolder(addr string) (pid int, who string, seen bool) { return 0, "", false }

// portHolderCommand is the command that shows who listens on port.
func portHolderCommand(port string, seen bool) string {
	return fmt.Sprintf("lsof -nP -iTCP:%s -sTCP:LISTEN", port)
}
