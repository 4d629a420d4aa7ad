// Package dirlock takes the exclusive lock that keeps two processes (or two
// owners in one process) from sharing a data directory.
package dirlock

import "errors"

// ErrInUse reports a lock another owner holds.
var ErrInUse = errors.New("in use")
