package main

import "errors"

var errNotBuilt = errors.New("this command is not built yet")

func runEvents(args []string) error { return errNotBuilt }
