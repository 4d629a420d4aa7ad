package gossip

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/internal/lograte"
)

// The bridge maps memberlist's bracketed levels onto slog's, and errors
// about sockets closed under memberlist are debug lines once the node is
// shutting down (and errors before that).
func TestLogBridgeLevels(t *testing.T) {
	var stopping bool
	var buf bytes.Buffer
	w := &logBridge{log: slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), stopping: func() bool { return stopping }}
	level := func(line string) string {
		t.Helper()
		buf.Reset()
		w.Write([]byte(line + "\n"))
		var m map[string]any
		if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
			t.Fatalf("%q: %v", buf.String(), err)
		}
		return m["level"].(string)
	}
	closed := "[ERR] memberlist: Failed to send gossip to 127.0.0.1:7949: write udp 127.0.0.1:7948->127.0.0.1:7949: use of closed network connection"
	for _, tc := range []struct {
		line     string
		stopping bool
		want     string
	}{
		{"[DEBUG] memberlist: Stream connection from=127.0.0.1:1", false, "DEBUG"},
		{"[WARN] memberlist: Refuting a suspect message", false, "WARN"},
		{"[ERR] memberlist: Failed to send ping: timeout", false, "ERROR"},
		{closed, false, "ERROR"},
		{closed, true, "DEBUG"},
		{"[ERR] memberlist: Failed to send ping: timeout", true, "ERROR"},
	} {
		stopping = tc.stopping
		if got := level(tc.line); got != tc.want {
			t.Errorf("%q (stopping %v): level %s, want %s", tc.line, tc.stopping, got, tc.want)
		}
	}
}

// A flood of memberlist errors (garbage sent to the gossip port) goes out
// at most lograte.DefaultBurst at once, then lograte.DefaultRate a second; the next line out says
// how many were held back.
func TestLogBridgeHoldsBackAFlood(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	w := &logBridge{log: slog.New(slog.NewJSONHandler(&buf, nil)), limit: lograte.Limiter{Now: func() time.Time { return now }}}
	for range 1000 {
		fmt.Fprintf(w, "[ERR] memberlist: failed to decode packet from=127.0.0.1:9\n")
	}
	if n := strings.Count(buf.String(), "\n"); n != lograte.DefaultBurst {
		t.Fatalf("%d lines out of 1000 at once; want %d", n, lograte.DefaultBurst)
	}
	buf.Reset()
	now = now.Add(time.Second)
	fmt.Fprintf(w, "[ERR] memberlist: failed to decode packet from=127.0.0.1:9\n")
	if l := buf.String(); !strings.Contains(l, fmt.Sprintf(`"lines_held_back_before":%d`, 1000-lograte.DefaultBurst)) {
		t.Errorf("line after a second: %s; want the count held back", l)
	}
	buf.Reset()
	fmt.Fprintf(w, "[INFO] memberlist: an informative line\n")
	if buf.Len() == 0 {
		t.Error("an info line was held back; only warnings and errors are")
	}
}
