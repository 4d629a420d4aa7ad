package smallfile

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestRead(t *testing.T) {
	dir := t.TempDir()
	ok := filepath.Join(dir, "ok")
	os.WriteFile(ok, []byte("hello"), 0o600)
	if b, err := Read(ok, 5); err != nil || string(b) != "hello" {
		t.Errorf("Read(ok, 5) = %q, %v", b, err)
	}
	if _, err := Read(ok, 4); err == nil || !strings.Contains(err.Error(), "5 bytes, over the 4") {
		t.Errorf("Read(ok, 4): err = %v; want it over the bound", err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	// Without a writer: the open must not wait for one.
	for _, p := range []string{fifo, "/dev/zero", dir} {
		_, err := Read(p, 1<<20)
		if err == nil || !strings.Contains(err.Error(), p) || (!strings.Contains(err.Error(), "not a regular file") && !strings.Contains(err.Error(), "is a directory")) {
			t.Errorf("Read(%s): err = %v; want it refused, naming the path", p, err)
		}
		if r := Reason(err); r == nil || strings.Contains(r.Error(), p) {
			t.Errorf("Reason(%v) = %v; want the error without the path", err, r)
		}
	}
	big := filepath.Join(dir, "big")
	os.WriteFile(big, bytes.Repeat([]byte{'x'}, MaxPEM+1), 0o600)
	if _, err := Read(big, MaxPEM); err == nil {
		t.Error("a file over MaxPEM was read")
	}
}
