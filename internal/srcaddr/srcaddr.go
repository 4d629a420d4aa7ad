// Package srcaddr picks the address a node's cluster connections leave
// from.
//
// A node bound to one address of a host with several (a loopback alias, a
// second interface) should dial its peers from that address: the kernel
// would otherwise pick the route's preferred source (127.0.0.1 for any
// 127.0.0.0/8 peer), so that a firewall rule, or a peer's log, keyed on the
// node's address misses its TCP connections while its UDP packets, sent
// from the bound socket, match.
package srcaddr

import (
	"net"
	"net/netip"
)

// For returns the local address for a TCP dial to dest ("ip:port") from a
// node bound to bind: bind itself when it is a specific address of dest's
// family and scope (both loopback or neither), else nil, the kernel's
// choice. A dest that is not an IP literal gets nil too.
func For(bind net.IP, dest string) net.Addr {
	b, ok := netip.AddrFromSlice(bind)
	if !ok || b.IsUnspecified() {
		return nil
	}
	b = b.Unmap()
	ap, err := netip.ParseAddrPort(dest)
	if err != nil {
		return nil
	}
	d := ap.Addr().Unmap()
	if b.Is4() != d.Is4() || b.IsLoopback() != d.IsLoopback() {
		return nil
	}
	if b.Is6() && b.IsLinkLocalUnicast() {
		return nil // needs its zone, which a bind address does not carry
	}
	return &net.TCPAddr{IP: b.AsSlice()}
}

// Dialer returns a dialer for dest from a node bound to bind, with the
// source address For picks.
func Dialer(bind net.IP, dest string) net.Dialer {
	var d net.Dialer
	if a := For(bind, dest); a != nil {
		d.LocalAddr = a
	}
	return d
}
