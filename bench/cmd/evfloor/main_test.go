//go:build linux

package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The built command relays keep-alive requests, pipelined and written a
// byte at a time, and each answer whole, to several clients at once.
func TestRelays(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body := strings.Repeat(r.URL.Path, 1+len(r.URL.Path)%300) // sizes past one read
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		io.WriteString(w, body)
	}))
	defer backend.Close()
	bin := filepath.Join(t.TempDir(), "evfloor")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cmd := exec.Command(bin, "-addr", addr, "-upstream", strings.TrimPrefix(backend.URL, "http://"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	var c net.Conn
	for deadline := time.Now().Add(5 * time.Second); ; {
		if c, err = net.Dial("tcp", addr); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("evfloor does not listen on %s: %v", addr, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	c.Close()

	errs := make(chan error, 4)
	for k := range 4 {
		go func() {
			errs <- func() error {
				c, err := net.Dial("tcp", addr)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				var paths []string
				var batch strings.Builder
				for i := range 50 {
					p := fmt.Sprintf("/c%d/r%d/%s", k, i, strings.Repeat("x", i*7))
					paths = append(paths, p)
					fmt.Fprintf(&batch, "GET %s HTTP/1.1\r\nHost: b\r\n\r\n", p)
				}
				raw := batch.String()
				if k%2 == 0 {
					_, err = io.WriteString(c, raw) // pipelined
				} else {
					for i := 0; i < len(raw) && err == nil; i++ {
						_, err = c.Write([]byte{raw[i]}) // trickled
					}
				}
				if err != nil {
					return err
				}
				for _, p := range paths {
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						return fmt.Errorf("%s: %v", p, err)
					}
					body, err := io.ReadAll(resp.Body)
					if want := strings.Repeat(p, 1+len(p)%300); err != nil || string(body) != want {
						return fmt.Errorf("%s: got %d bytes (%v); want %d", p, len(body), err, len(want))
					}
				}
				return nil
			}()
		}()
	}
	for range 4 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
