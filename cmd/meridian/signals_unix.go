//go:build unix

package main

import (
	"os"
	"syscall"
)

// reopenSignal asks serve to reopen its log files (after logrotate).
var reopenSignal os.Signal = syscall.SIGUSR1

// serveSignals are the signals serve handles: reload, reopen, stop.
var serveSignals = []os.Signal{syscall.SIGHUP, syscall.SIGUSR1, syscall.SIGTERM, syscall.SIGINT}
