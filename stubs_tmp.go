package main

import "errors"

var errNotBuilt = errors.New("this command is not built yet")

func runInstallUnit(args []string) error   { return errNotBuilt }
func runUninstallUnit(args []string) error { return errNotBuilt }
func runEvents(args []string) error        { return errNotBuilt }
