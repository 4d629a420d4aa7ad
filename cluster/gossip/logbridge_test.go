package gossip

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
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
