package node

import "testing"

// Only names a route could serve get certificates: no order to a CA, and
// no local leaf, for a name with an empty label, an underscore or a star.
func TestDNSNameForCertificates(t *testing.T) {
	for name, want := range map[string]bool{
		"a.od.test": true, "a.b.od.test": true, "x1-y.od.test": true, "localhost": true,
		"x..od.test": false, "-.od.test": false, "a_b.od.test": false, "*.od.test": false, "a b.od.test": false,
		`a"b.od.test`: false, "a\nb.od.test": false, "": false, ".od.test": false, "a-.od.test": false,
	} {
		if got := dnsName(name); got != want {
			t.Errorf("dnsName(%q) = %v; want %v", name, got, want)
		}
	}
}
