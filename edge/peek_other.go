//go:build !unix

package edge

// peekNothing is not available here: canPeek says so, and alive reads
// with a short deadline instead.
func peekNothing(fd uintptr, buf []byte) bool { return false }

func peekSome(fd uintptr, buf []byte) bool { return false }

const canPeek = false
