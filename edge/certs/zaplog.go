package certs

import (
	"context"
	"log/slog"
	"math"
	"sort"
	"strconv"
	"strings"

	"go.uber.org/zap/zapcore"
)

// slogCore is a zapcore.Core writing to an slog.Handler, so certmagic's zap logs end up in
// the node's slog logger.
type slogCore struct{ h slog.Handler }

func newSlogCore(h slog.Handler) zapcore.Core { return slogCore{h: h} }

func slogLevel(l zapcore.Level) slog.Level {
	switch {
	case l <= zapcore.DebugLevel:
		return slog.LevelDebug
	case l == zapcore.InfoLevel:
		return slog.LevelInfo
	case l == zapcore.WarnLevel:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (c slogCore) Enabled(l zapcore.Level) bool {
	return c.h.Enabled(context.Background(), slogLevel(l))
}

func (c slogCore) With(fields []zapcore.Field) zapcore.Core {
	if len(fields) == 0 {
		return c
	}
	return slogCore{h: c.h.WithAttrs(zapAttrs(fields))}
}

func (c slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

func (c slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	level := slogLevel(e.Level)
	attrs := zapAttrs(fields)
	if level >= slog.LevelError && cancelled(attrs) {
		// Background work stopped on purpose (a host no longer managed,
		// or Close) ends as "job failed: context canceled": not an error.
		level = slog.LevelDebug
		if !c.h.Enabled(context.Background(), level) {
			return nil
		}
	}
	r := slog.NewRecord(e.Time, level, e.Message, 0)
	if e.LoggerName != "" {
		r.AddAttrs(slog.String("logger", e.LoggerName))
	}
	r.AddAttrs(attrs...)
	return c.h.Handle(context.Background(), r)
}

// cancelled reports whether a log record's error is a cancelled context.
func cancelled(attrs []slog.Attr) bool {
	for _, a := range attrs {
		if a.Key == "error" && strings.HasSuffix(a.Value.String(), context.Canceled.Error()) {
			return true
		}
	}
	return false
}

func (slogCore) Sync() error { return nil }

func zapAttrs(fields []zapcore.Field) []slog.Attr {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	keys := make([]string, 0, len(enc.Fields))
	for k := range enc.Fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	attrs := make([]slog.Attr, 0, len(keys))
	for _, k := range keys {
		v := enc.Fields[k]
		switch f := v.(type) {
		case float64:
			if math.IsNaN(f) || math.IsInf(f, 0) {
				v = strconv.FormatFloat(f, 'g', -1, 64) // JSON has no NaN: "NaN" for it
			}
		case float32:
			if f64 := float64(f); math.IsNaN(f64) || math.IsInf(f64, 0) {
				v = strconv.FormatFloat(f64, 'g', -1, 32)
			}
		}
		attrs = append(attrs, slog.Any(k, v))
	}
	return attrs
}
