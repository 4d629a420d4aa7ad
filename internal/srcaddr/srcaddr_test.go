package srcaddr

import (
	"net"
	"testing"

	"github.com/meridian-gw/meridian/internal/testutil"
)

func TestFor(t *testing.T) {
	for _, tc := range []struct {
		bind, dest string
		want       string // "" for nil
	}{
		{"127.0.0.2", "127.0.0.3:7946", "127.0.0.2"},
		{"0.0.0.0", "127.0.0.3:7946", ""},
		{"", "127.0.0.3:7946", ""},
		{"::", "[::1]:7946", ""},
		{"10.0.0.5", "10.0.0.6:7946", "10.0.0.5"},
		{"10.0.0.5", "127.0.0.1:7946", ""},     // loopback peer: not from an interface address
		{"127.0.0.2", "10.0.0.6:7946", ""},     // nor a loopback source to a real peer
		{"10.0.0.5", "[2001:db8::1]:7946", ""}, // another family
		{"2001:db8::5", "[2001:db8::1]:7946", "2001:db8::5"},
		{"::ffff:10.0.0.5", "10.0.0.6:7946", "10.0.0.5"},
		{"fe80::1", "[fe80::2%eth0]:7946", ""},
		{"10.0.0.5", "node-b:7946", ""}, // a name: the kernel's choice
	} {
		got := For(net.ParseIP(tc.bind), tc.dest)
		if tc.want == "" {
			if got != nil {
				t.Errorf("For(%q, %q) = %v; want nil", tc.bind, tc.dest, got)
			}
			continue
		}
		if got == nil || got.(*net.TCPAddr).IP.String() != tc.want || got.(*net.TCPAddr).Port != 0 {
			t.Errorf("For(%q, %q) = %v; want %s:0", tc.bind, tc.dest, got, tc.want)
		}
	}
}

// A real dial leaves from the bound address, not the route's preferred
// source (127.0.0.1 for every loopback peer).
func TestDialerLeavesFromBind(t *testing.T) {
	addr, from := testutil.FirstDialFrom(t, "127.0.0.3")
	d := Dialer(net.ParseIP("127.0.0.2"), addr)
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if a := <-from; testutil.FromIP(a) != "127.0.0.2" {
		t.Fatalf("the peer saw the dial from %v; want 127.0.0.2", a)
	}
}
