package gossip

import (
	"bytes"
	"context"
	"log/slog"
	"regexp"
	"strings"

	"github.com/meridian-gw/meridian/internal/lograte"
)

// logBridge is the io.Writer behind memberlist's *log.Logger. memberlist
// writes lines such as "[WARN] memberlist: Refuting a suspect message"; the
// bracketed level becomes the slog level and the rest the message.
//
// It also watches for the one line that tells this node has just started
// suspecting a peer, because memberlist has no delegate callback for
// suspicion (see Members.localSuspect).
type logBridge struct {
	log       *slog.Logger
	onSuspect func(name string)
	// stopping reports that this node is shutting down: memberlist's
	// goroutines then log errors about the sockets being closed under
	// them, which are expected, so they go out at debug level.
	stopping func() bool
	// quiet reports that the whole cluster is stopping together (see
	// Members.Quiet): complaints about peers going are debug lines then.
	quiet func() bool

	// Warnings and errors go out at most 20 at once and 5 a second after
	// (lograte's defaults): each datagram of garbage sent to the gossip
	// port makes memberlist log an error, and a flood of them would flood
	// the log (20,000 datagrams made 20,379 lines). The next line that
	// goes out says how many were held back.
	limit lograte.Limiter
}

// allow takes a token for a warning or an error line; it returns whether
// the line goes out and, if it does, how many were held back before it.
func (w *logBridge) allow() (bool, int) { return w.limit.Allow() }

// suspectLine is the exact text memberlist v0.7.0 logs in probeNode when a
// probe, its indirect probes and the TCP fallback all failed, right before it
// marks the peer suspect. TestKillShowsSuspectThenDead fails if an upgrade
// changes it.
var suspectLine = regexp.MustCompile(`^memberlist: Suspect (.+) has failed, no acks received$`)

// closedConn is the text of net.ErrClosed.
const closedConn = "use of closed network connection"

func (w *logBridge) Write(p []byte) (int, error) {
	line := string(bytes.TrimRight(p, "\r\n"))
	level := slog.LevelInfo
	if strings.HasPrefix(line, "[") {
		if i := strings.IndexByte(line, ']'); i > 0 {
			switch line[1:i] {
			case "DEBUG", "TRACE":
				level = slog.LevelDebug
			case "INFO":
				level = slog.LevelInfo
			case "WARN":
				level = slog.LevelWarn
			case "ERR", "ERROR":
				level = slog.LevelError
			}
			line = strings.TrimSpace(line[i+1:])
		}
	}
	if w.onSuspect != nil {
		if sm := suspectLine.FindStringSubmatch(line); sm != nil {
			w.onSuspect(sm[1])
		}
	}
	if level > slog.LevelInfo && (w.stopping != nil && strings.Contains(line, closedConn) && w.stopping() || w.quiet != nil && w.quiet()) {
		level = slog.LevelDebug
	}
	if level >= slog.LevelWarn {
		ok, held := w.allow()
		if !ok {
			return len(p), nil
		}
		if held > 0 {
			w.log.Log(context.Background(), level, line, "source", "memberlist", "lines_held_back_before", held)
			return len(p), nil
		}
	}
	w.log.Log(context.Background(), level, line, "source", "memberlist")
	return len(p), nil
}
