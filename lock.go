package main

import (
	"os"

	"golang.org/x/sys/unix"
)

// flockExclusive takes an exclusive flock on f without waiting. flock locks
// belong to the open file description: Go opens files close-on-exec, so no
// child inherits this one (never pass a lock file in cmd.ExtraFiles).
func flockExclusive(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err != unix.EINTR {
			return err
		}
	}
}

// flockWait takes an exclusive flock on f, waiting for it.
func flockWait(f *os.File) error {
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX)
		if err != unix.EINTR {
			return err
		}
	}
}
