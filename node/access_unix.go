//go:build unix

package node

import "syscall"

// canAccess reports, by access(2), whether path can be written (and, for a
// directory, searched) by this process.
func canAccess(path string, dir bool) error {
	const wOK, xOK = 2, 1
	mode := uint32(wOK)
	if dir {
		mode |= xOK
	}
	return syscall.Access(path, mode)
}
