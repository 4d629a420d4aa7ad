//go:build linux && !race

package edge

import (
	"syscall"
	"unsafe"
)

// sysRead and sysWrite are read(2) and write(2) as raw calls; p is not
// empty.
func sysRead(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

func sysWrite(fd uintptr, p []byte) (int, syscall.Errno) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
	return int(n), e
}

// sysRecvInq is read(2) made as recvmsg(2), for TCP_INQ's answer (see
// recvInq): inq is what is left to read after it, -1 if not told.
func sysRecvInq(fd uintptr, p []byte) (n, inq int, e syscall.Errno) {
	var oob [inqOOB]byte
	iov := syscall.Iovec{Base: &p[0]}
	iov.SetLen(len(p))
	msg := syscall.Msghdr{Iov: &iov, Iovlen: 1, Control: &oob[0]}
	msg.SetControllen(len(oob))
	r, _, e := syscall.RawSyscall(syscall.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&msg)), 0)
	if e != 0 {
		return 0, -1, e
	}
	return int(r), parseInq(oob[:min(int(msg.Controllen), len(oob))]), 0
}
