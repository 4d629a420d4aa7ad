package node

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/cluster/pki"
)

// A data dir is claimed by the first node that uses it; another name is
// refused once it holds Raft state (the Raft log and seat are the first
// node's), and allowed before (a single node renamed).
func TestClaimDataDir(t *testing.T) {
	dir := t.TempDir()
	if err := claimDataDir(dir, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := claimDataDir(dir, "n1"); err != nil {
		t.Fatalf("the same node again: %v", err)
	}
	if err := claimDataDir(dir, "renamed"); err != nil {
		t.Fatalf("another name without Raft state: %v", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "raft"), 0o700); err != nil {
		t.Fatal(err)
	}
	err := claimDataDir(dir, "n5")
	if err == nil || !strings.Contains(err.Error(), `holds the cluster state of node "renamed", and this node is "n5"`) {
		t.Fatalf("another name on Raft state: %v; want a refusal naming both", err)
	}
	if err := claimDataDir(dir, "renamed"); err != nil {
		t.Fatalf("the owner on its Raft state: %v", err)
	}
}

// A cluster node whose certificate is for another name is refused by
// validation: the leader would never seat it.
func TestClusterCertificateMustNameTheNode(t *testing.T) {
	dir := t.TempDir()
	if err := pki.CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	if err := pki.IssueNodeCert(dir, "foo", []net.IP{net.IPv4(127, 0, 0, 1)}, nil, dir); err != nil {
		t.Fatal(err)
	}
	doc := func(name string) string {
		return "node:\n  name: " + name + "\n  cluster:\n    bind: 127.0.0.1:0\n    gossip_bind: 127.0.0.1:0\n    bootstrap: true\n    insecure: true\n" +
			"    tls: {ca_file: " + filepath.Join(dir, "ca.crt") + ", cert_file: " + filepath.Join(dir, "foo.crt") + ", key_file: " + filepath.Join(dir, "foo.key") + "}\n"
	}
	_, err := ParseFile([]byte(doc("n5")))
	if err == nil || !strings.Contains(err.Error(), `the certificate is for "foo", and this node is "n5"`) {
		t.Fatalf("a certificate for another name: %v; want it refused", err)
	}
	if _, err := ParseFile([]byte(doc("foo"))); err != nil {
		t.Fatalf("a certificate for the node's name: %v", err)
	}
}
