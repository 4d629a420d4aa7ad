//go:build unix

package edge

import "syscall"

// peekNothing reports whether a non-blocking peek at the socket fd finds
// nothing to read yet (the connection is open and quiet); buf is scratch.
func peekNothing(fd uintptr, buf []byte) bool {
	n, _, err := syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
}

// peekSome reports whether the socket fd has bytes to read, without
// taking them or waiting.
func peekSome(fd uintptr, buf []byte) bool {
	n, _, _ := syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	return n > 0
}

const canPeek = true
