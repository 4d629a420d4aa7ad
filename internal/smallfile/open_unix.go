//go:build unix

package smallfile

import (
	"os"
	"syscall"
)

// openNoWait opens path for reading without waiting: O_NONBLOCK makes an
// open of a FIFO return at once instead of waiting for a writer (and
// changes nothing for a regular file, whose reads never wait), so that
// the file's type can be looked at on the file opened, not on a name that
// may point elsewhere by then.
func openNoWait(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
}
