//go:build linux && race

package edge

import "syscall"

// Under the race detector, read and write go through package syscall, whose
// annotations make socket I/O order memory accesses between goroutines (a
// write happens before the read of what it wrote). Raw calls would lose
// that, and tests that pass data through Meridian would report false races.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	return errnoOf(syscall.Read(int(fd), p))
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	return errnoOf(syscall.Write(int(fd), p))
}

func errnoOf(n int, err error) (int, syscall.Errno) {
	if err != nil {
		if n < 0 {
			n = 0
		}
		return n, err.(syscall.Errno)
	}
	return n, 0
}

// sysRecvInq is sysRecvInq of rawconn_norace.go through package syscall,
// plus an empty read for the race detector's ordering (syscall.Recvmsg has
// none, syscall.Read has).
func sysRecvInq(fd uintptr, p []byte) (int, int, syscall.Errno) {
	var oob [inqOOB]byte
	n, oobn, _, _, err := syscall.Recvmsg(int(fd), p, oob[:], 0)
	if err != nil {
		return 0, -1, err.(syscall.Errno)
	}
	syscall.Read(int(fd), p[:0])
	return n, parseInq(oob[:oobn]), 0
}
