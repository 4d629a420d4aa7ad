package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"strings"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// slogAdapter bridges hashicorp/raft's hclog.Logger to a *slog.Logger. The
// raft subsystem name goes into a "subsystem" attribute; hclog Trace maps to
// slog Debug-4.
type slogAdapter struct {
	l    *slog.Logger
	name string
	args []any
	// closing reports that the store is closing: raft's goroutines then
	// log errors about connections closed under them, which are expected,
	// so they go out at debug level.
	closing func() bool
	// quiet reports that the whole cluster is stopping together (see
	// Store.Quiet): raft's complaints about its peers going are expected
	// then, and go out at debug level too.
	quiet func() bool
}

func newHclog(l *slog.Logger, name string, closing, quiet func() bool) hclog.Logger {
	return &slogAdapter{l: l, name: name, closing: closing, quiet: quiet}
}

// aboutClosedConn reports whether msg or one of args mentions net.ErrClosed.
func aboutClosedConn(msg string, args []any) bool {
	if closedText(msg) {
		return true
	}
	for _, a := range args {
		switch v := a.(type) {
		case error:
			if errors.Is(v, net.ErrClosed) || errors.Is(v, raft.ErrTransportShutdown) || errors.Is(v, errClosed) || closedText(v.Error()) {
				return true
			}
		case string:
			if closedText(v) {
				return true
			}
		}
	}
	return false
}

// closedText reports whether an error's text says a connection or the
// transport was closed under it.
func closedText(s string) bool {
	return strings.Contains(s, net.ErrClosed.Error()) || strings.Contains(s, raft.ErrTransportShutdown.Error()) || strings.Contains(s, errClosed.Error()) ||
		strings.Contains(s, "operation was canceled") // a dial the closing transport cancelled
}

// noLastLeader reports whether args say no leader was known: raft's
// "last-leader-id" is empty.
func noLastLeader(args []any) bool {
	for i := 0; i+1 < len(args); i += 2 {
		if k, ok := args[i].(string); ok && k == "last-leader-id" {
			return fmt.Sprint(args[i+1]) == "" // a raft.ServerID
		}
	}
	return false
}

func slogLevel(level hclog.Level) slog.Level {
	switch level {
	case hclog.Trace:
		return slog.LevelDebug - 4
	case hclog.Debug:
		return slog.LevelDebug
	case hclog.Warn:
		return slog.LevelWarn
	case hclog.Error:
		return slog.LevelError
	default:
		return slog.LevelInfo
	}
}

func (a *slogAdapter) Log(level hclog.Level, msg string, args ...any) {
	lv := slogLevel(level)
	if lv > slog.LevelInfo && (a.closing != nil && a.closing() && aboutClosedConn(msg, args) || a.quiet != nil && a.quiet()) {
		lv = slog.LevelDebug
	}
	if lv == slog.LevelWarn && msg == "heartbeat timeout reached, starting election" && noLastLeader(args) {
		// A node that never heard from a leader since it started (a new
		// cluster forming, or a restart) elects one: nothing is wrong.
		lv = slog.LevelInfo
	}
	ctx := context.Background()
	if !a.l.Enabled(ctx, lv) {
		return
	}
	all := make([]any, 0, len(a.args)+len(args)+2)
	own := 0 // attributes of ours before raft's
	if a.name != "" {
		own = 2
		all = append(all, "subsystem", a.name) // the caller's logger names the component
	}
	all = append(all, a.args...)
	all = append(all, args...)
	for i, v := range all {
		if i >= own && (i-own)%2 == 0 {
			// Raft's own keys must not repeat ours: it logs a "node"
			// (its state) where our logger already names the node.
			if k, ok := v.(string); ok && (k == "node" || k == "component" || k == "subsystem") {
				all[i] = "raft_" + k
			}
		}
		if f, ok := v.(hclog.Format); ok && len(f) > 0 {
			if s, ok := f[0].(string); ok {
				all[i] = fmt.Sprintf(s, f[1:]...)
			}
		}
	}
	a.l.Log(ctx, lv, msg, all...)
}

func (a *slogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *slogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *slogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *slogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *slogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *slogAdapter) enabled(l hclog.Level) bool {
	return a.l.Enabled(context.Background(), slogLevel(l))
}
func (a *slogAdapter) IsTrace() bool { return a.enabled(hclog.Trace) }
func (a *slogAdapter) IsDebug() bool { return a.enabled(hclog.Debug) }
func (a *slogAdapter) IsInfo() bool  { return a.enabled(hclog.Info) }
func (a *slogAdapter) IsWarn() bool  { return a.enabled(hclog.Warn) }
func (a *slogAdapter) IsError() bool { return a.enabled(hclog.Error) }

func (a *slogAdapter) ImpliedArgs() []any { return a.args }

func (a *slogAdapter) With(args ...any) hclog.Logger {
	n := *a
	n.args = append(append([]any(nil), a.args...), args...)
	return &n
}

func (a *slogAdapter) Name() string { return a.name }

func (a *slogAdapter) Named(name string) hclog.Logger {
	n := *a
	if n.name != "" {
		n.name += "." + name
	} else {
		n.name = name
	}
	return &n
}

func (a *slogAdapter) ResetNamed(name string) hclog.Logger {
	n := *a
	n.name = name
	return &n
}

// SetLevel is ignored: the slog handler decides.
func (a *slogAdapter) SetLevel(hclog.Level) {}

func (a *slogAdapter) GetLevel() hclog.Level {
	switch {
	case a.IsTrace():
		return hclog.Trace
	case a.IsDebug():
		return hclog.Debug
	case a.IsInfo():
		return hclog.Info
	case a.IsWarn():
		return hclog.Warn
	default:
		return hclog.Error
	}
}

func (a *slogAdapter) StandardLogger(opts *hclog.StandardLoggerOptions) *log.Logger {
	return log.New(a.StandardWriter(opts), "", 0)
}

func (a *slogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		msg := strings.TrimSpace(string(p))
		level := hclog.Info
		for _, pfx := range []struct {
			s string
			l hclog.Level
		}{{"[ERR]", hclog.Error}, {"[ERROR]", hclog.Error}, {"[WARN]", hclog.Warn}, {"[DEBUG]", hclog.Debug}, {"[TRACE]", hclog.Trace}, {"[INFO]", hclog.Info}} {
			if strings.HasPrefix(msg, pfx.s) {
				level = pfx.l
				msg = strings.TrimSpace(strings.TrimPrefix(msg, pfx.s))
				break
			}
		}
		a.Log(level, msg)
		return len(p), nil
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
