//go:build !linux

package edge

import (
	"net/http"
	"os"
)

// Outside Linux connections are not served inside the poller's read (see
// h1inline.go).

func (c *serverConn) serveInline() (*http.Request, *requestState, bool) { return nil, nil, false }

func (c *serverConn) inlineRead(p []byte) (int, error) { panic("not inline") }

func (c *serverConn) watchDup(done chan struct{}, gone func()) *os.File { return nil }

func (c *serverConn) closeNow() { c.rwc.Close() }
