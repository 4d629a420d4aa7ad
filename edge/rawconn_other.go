//go:build !linux

package edge

import "net"

// rawTCP is the identity outside Linux: connections keep net's calls.
func rawTCP(c net.Conn) net.Conn { return c }
