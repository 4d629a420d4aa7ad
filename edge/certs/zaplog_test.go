package certs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
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
