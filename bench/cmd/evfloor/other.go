//go:build !linux

// Command evfloor needs Linux's epoll; see main.go.
package main

import "log"

func main() {
	log.Fatal("evfloor runs on Linux only (epoll)")
}
