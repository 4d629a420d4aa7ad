//go:build !unix

package main

import (
	"os"
	"syscall"
)

// reopenSignal: none here (no SIGUSR1); the admin API reloads, and logs
// are reopened on restart.
var reopenSignal os.Signal

// serveSignals are the signals serve handles: reload (where the system
// has it) and stop.
var serveSignals = []os.Signal{syscall.SIGHUP, syscall.SIGTERM, os.Interrupt}
