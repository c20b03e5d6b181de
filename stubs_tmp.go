package main

import "errors"

var errNotBuilt = errors.New("this command is not built yet")

func runRestart(args []string) error       { return errNotBuilt }
func runStop(args []string) error          { return errNotBuilt }
func runStatus(args []string) error        { return errNotBuilt }
func runInstallUnit(args []string) error   { return errNotBuilt }
func runUninstallUnit(args []string) error { return errNotBuilt }
