//go:build !linux

package edge

import "time"

// Outside Linux idle connections are not parked (see h1park.go).

const (
	canPark          = false
	defaultParkAfter = time.Duration(0)
)

type parker struct{}

func (s *h1Server) park(c *serverConn) bool   { return false }
func (s *h1Server) unpark(c *serverConn) bool { return false }
func (s *h1Server) stopParker()               {}
