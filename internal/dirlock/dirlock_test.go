package dirlock

import (
	"errors"
	"path/filepath"
	"testing"
)

func TestLockIsExclusiveUntilClosed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "LOCK")
	f, err := Lock(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Lock(path); !errors.Is(err, ErrInUse) {
		t.Fatalf("second Lock: %v; want ErrInUse", err)
	}
	f.Close()
	g, err := Lock(path)
	if err != nil {
		t.Fatalf("Lock after the first was closed: %v", err)
	}
	g.Close()
	if _, err := Lock(filepath.Join(t.TempDir(), "no", "such", "dir", "LOCK")); err == nil || errors.Is(err, ErrInUse) {
		t.Errorf("Lock in a missing dir: %v; want an open error", err)
	}
}
