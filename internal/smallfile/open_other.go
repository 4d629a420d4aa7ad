//go:build !unix

package smallfile

import "os"

// openNoWait opens path for reading (see open_unix.go).
func openNoWait(path string) (*os.File, error) {
	return os.Open(path)
}
