package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/meridian-gw/meridian/internal/testutil"
)

// Every log line a node writes is one JSON object with no key twice (a
// logger handed down with a component already set, then set again, makes
// "component" appear twice, which many log pipelines refuse or keep only
// one of). The node here starts with HTTPS and the local CA, serves, takes
// a refused reload, and drains. The refused reload is an ERROR line that
// says why.
func TestLogLinesAreJSONWithoutDuplicateKeys(t *testing.T) {
	f, err := ParseFile(DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f.Node.Listen.HTTP = "127.0.0.1:0"
	f.Node.Listen.HTTPS = "127.0.0.1:0"
	f.Node.Admin.Listen = "127.0.0.1:0"
	f.Node.DataDir = dir
	path := filepath.Join(dir, "meridian.yaml")
	if err := os.WriteFile(path, []byte("node: {}\ngateway: {routes: [{name: x, service: nowhere}]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var buf testutil.SyncBuffer
	n, err := New(f, Options{ConfigPath: path, Logger: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(f, DefaultConfig); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, http.DefaultClient, "http://"+n.ProxyAddr()+"/hello"); code != 200 {
		t.Errorf("/hello: %d", code)
	}
	if _, err := n.Reload(); err == nil {
		t.Error("a reload naming an unknown service was applied")
	}
	n.Drain(context.Background())

	var refused bool
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) < 5 {
		t.Fatalf("only %d log lines:\n%s", len(lines), buf.String())
	}
	for _, l := range lines {
		if dup, err := duplicateKey([]byte(l)); err != nil || dup != "" {
			t.Errorf("log line %s: duplicate key %q (%v)", l, dup, err)
		}
		var m map[string]any
		json.Unmarshal([]byte(l), &m)
		if m["msg"] == "reload refused; the running configuration is unchanged" {
			refused = m["level"] == "ERROR" && strings.Contains(fmt.Sprint(m["error"]), `"nowhere"`)
		}
	}
	if !refused {
		t.Errorf("no ERROR line for the refused reload naming the unknown service:\n%s", buf.String())
	}
}

// duplicateKey returns the first key that appears twice in one object of
// the JSON document b, at any depth.
func duplicateKey(b []byte) (string, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	var walk func() (string, error)
	walk = func() (string, error) {
		tok, err := dec.Token()
		if err != nil {
			return "", err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return "", err
				}
				key := k.(string)
				if seen[key] {
					return key, nil
				}
				seen[key] = true
				if d, err := walk(); d != "" || err != nil {
					return d, err
				}
			}
			_, err = dec.Token() // '}'
			return "", err
		case json.Delim('['):
			for dec.More() {
				if d, err := walk(); d != "" || err != nil {
					return d, err
				}
			}
			_, err = dec.Token() // ']'
			return "", err
		}
		return "", nil
	}
	return walk()
}

// A node with a logger of its own (the binary's) takes the standard
// logger's lines too, as JSON lines of its own: net/http's HTTP/2 client
// printed an upstream's protocol errors as bare text among them.
func TestStandardLoggerLinesAreJSON(t *testing.T) {
	f, err := ParseFile(DefaultConfig)
	if err != nil {
		t.Fatal(err)
	}
	f.Node.DataDir = t.TempDir()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := os.Stderr
	os.Stderr = w
	defer func() {
		os.Stderr = stderr
		log.SetOutput(os.Stderr)
		log.SetFlags(log.LstdFlags)
	}()
	if _, err := New(f, Options{}); err != nil {
		t.Fatal(err)
	}
	for range 3 { // a failing check's line, at every interval: once
		log.Print("protocol error: received *http.http2GoAwayFrame before a SETTINGS frame")
	}
	w.Close()
	all, _ := io.ReadAll(r)
	if n := bytes.Count(all, []byte("\n")); n != 1 {
		t.Errorf("%d lines for one message printed three times; want 1: %s", n, all)
	}
	line, _ := bufio.NewReader(bytes.NewReader(all)).ReadBytes('\n')
	var rec map[string]any
	if err := json.Unmarshal(line, &rec); err != nil {
		t.Fatalf("%q: %v; want a JSON line", line, err)
	}
	if rec["level"] != "WARN" || rec["source"] != "go" || !strings.Contains(fmt.Sprint(rec["msg"]), "GoAwayFrame") {
		t.Errorf("record %v; want a WARN from source go with the message", rec)
	}
}
