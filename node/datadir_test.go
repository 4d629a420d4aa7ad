package node

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
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
