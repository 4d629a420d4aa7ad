//go:build !linux

package edge

import (
	"io"
	"net"
)

// rawTCP is the identity outside Linux: connections keep net's calls.
func rawTCP(c net.Conn) net.Conn { return c }

// sendQueued does not know a socket's send queue outside Linux.
func sendQueued(c net.Conn) (int, bool) { return 0, false }

// recvQueued does not know a socket's receive queue outside Linux.
func recvQueued(c net.Conn) (int, bool) { return 0, false }

// sendBeforeReadOf has no deferred send outside Linux (see rawconn.go).
func sendBeforeReadOf(c net.Conn) io.Writer { return nil }

func watchHangup(c net.Conn, onHup func()) bool { return false }

func hungUp(c net.Conn) bool { return false }

// trackLeft and leftInSocket: no TCP_INQ outside Linux (see rawconn.go).
func trackLeft(c net.Conn) {}

func leftInSocket(c net.Conn) bool { return false }

func ackNow(c net.Conn) {}
