package certs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strings"
	"testing"

	"go.uber.org/zap"
)

// certmagic's "job failed" for work cancelled on purpose is not an error
// in the node's log; other failures still are.
func TestZapCancelledJobsAreNotErrors(t *testing.T) {
	var buf bytes.Buffer
	log := zap.New(newSlogCore(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	log.Error("job failed", zap.Error(fmt.Errorf("a.example: obtaining certificate: %w", context.Canceled)))
	if buf.Len() != 0 {
		t.Errorf("a cancelled job logged at Info level or above: %s", buf.String())
	}
	log.Error("job failed", zap.Error(errors.New("a.example: obtaining certificate: the CA said no")))
	if !strings.Contains(buf.String(), "level=ERROR") || !strings.Contains(buf.String(), "the CA said no") {
		t.Errorf("a real failure was not logged as an error: %q", buf.String())
	}
}

// A float JSON cannot hold (certmagic's cache fill ratio of an empty
// cache is NaN) is written as a string, where the JSON handler wrote an
// error in its place.
func TestZapNaNFieldsEncoded(t *testing.T) {
	var buf bytes.Buffer
	log := zap.New(newSlogCore(slog.NewJSONHandler(&buf, nil)))
	log.Info("no certificate matching TLS ClientHello", zap.Float64("cert_cache_fill", math.NaN()), zap.Float32("f", float32(math.Inf(1))))
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("%q: %v", buf.String(), err)
	}
	if rec["cert_cache_fill"] != "NaN" || rec["f"] != "+Inf" {
		t.Errorf("fields %v, %v; want \"NaN\" and \"+Inf\" (%s)", rec["cert_cache_fill"], rec["f"], buf.String())
	}
}
