package edge

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"net/url"
	"path"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/edge/config"
)

// ErrVersionConflict is returned by Control.Apply when the caller named the
// version it meant to replace and another version landed first.
var ErrVersionConflict = errors.New("the configuration changed since the version you named")

// ErrUnavailable is returned by Control.Apply when the configuration
// cannot be changed now (no cluster leader or quorum, say); the running
// configuration is unchanged and the write can be tried again.
var ErrUnavailable = errors.New("the configuration cannot be changed now")

// ErrNotServedYet is returned by Control.Apply, with the snapshot of the
// write (its version, hash and document), when the write was committed by
// the cluster (it stands, and every node will apply it) but this node did
// not serve it yet when the answer was due.
var ErrNotServedYet = errors.New("the document was committed but this node does not serve it yet")

// ErrOutcomeUnknown is returned by Control.Apply when the write reached the
// cluster but its result was lost (leadership changed as it was being
// committed): it may or may not be applied.
var ErrOutcomeUnknown = errors.New("the write's outcome is unknown")

// ErrNoSuchMember and ErrRefused are what AdminOptions.RemoveMember
// returns (wrapped, with the reason) for a name with no Raft seat (404)
// and a removal the cluster refuses (409).
var (
	ErrNoSuchMember = errors.New("no such member")
	ErrRefused      = errors.New("refused")
)

// Control is what the admin API needs from the node that owns the
// configuration: applying a new gateway document and knowing whether the
// node is ready. The node implements it (locally now, through Raft in a
// cluster).
type Control interface {
	// Apply parses, validates, compiles and installs raw (YAML or JSON).
	// If o.IfVersion is not zero and the current version differs, or
	// o.IfAbsent and a document is applied already, it returns
	// ErrVersionConflict. Parse and validation problems are
	// config.Errors; a document without routes is ErrNoRoutes unless
	// o.AllowNoRoutes. On success it returns the installed snapshot.
	Apply(ctx context.Context, raw []byte, o ApplyOptions) (*Snapshot, error)
	// Ready reports whether the node serves traffic (configured and not
	// draining).
	Ready() bool
}

// ApplyOptions qualify a Control.Apply.
type ApplyOptions struct {
	// IfVersion, if not zero, is the version the document replaces.
	IfVersion uint64
	// IfAbsent applies the document only if none is applied yet
	// (If-None-Match: *).
	IfAbsent bool
	// AllowNoRoutes applies a document without routes, which answers
	// every request with a 404 (PUT /config?allow_empty=true).
	AllowNoRoutes bool
}

// ErrNoRoutes refuses a document with no routes that was not explicitly
// allowed: applied by mistake (an empty file, a node file without its
// gateway section), it would take every route down.
var ErrNoRoutes = errors.New("the document has no routes: applied, every request would get a 404; to apply it anyway, PUT /config?allow_empty=true")

// AdminOptions configure the admin API.
type AdminOptions struct {
	Control Control
	// Token is the bearer token that every write needs. Empty refuses all
	// writes.
	Token string
	// OpenReads lets reads through without the token (for an admin
	// listener bound to loopback).
	OpenReads bool
	// MaxBodyBytes caps a PUT /config body; default 8 MiB, what a node
	// reads from a file (node.MaxFileBytes).
	MaxBodyBytes int64
	// Cluster, if set, reports the cluster's members for GET
	// /cluster/members (nil result: the node runs alone).
	Cluster func() any
	// RemoveMember, if set, takes a member's Raft seat away for DELETE
	// /cluster/members/{name}.
	RemoveMember func(name string) error
}

// AdminHandler serves the admin API:
//
//	GET  /healthz             liveness
//	GET  /readyz              readiness (configured, not draining, caught up with the cluster)
//	GET  /config              the gateway document exactly as applied
//	PUT  /config              apply a new document (YAML or JSON)
//	GET  /config/version      version, hash and time of the applied document
//	GET  /routes              the routes of the applied document
//	GET  /upstreams           live health of every target
//	GET  /cluster/members     the cluster's members (404 when alone)
//	DELETE /cluster/members/{name}  take a gone member's Raft seat away
//	GET  /metrics             Prometheus exposition
//	GET  /debug/pprof/...     Go profiling
func (g *Gateway) AdminHandler(o AdminOptions) http.Handler {
	if o.MaxBodyBytes == 0 {
		o.MaxBodyBytes = 8 << 20
	}
	a := &admin{g: g, o: o, applying: make(chan struct{}, 1)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	mux.HandleFunc("GET /readyz", a.readyz)
	mux.HandleFunc("GET /config", a.read(a.getConfig))
	mux.HandleFunc("PUT /config", a.write(a.putConfig))
	mux.HandleFunc("GET /config/version", a.read(a.getVersion))
	mux.HandleFunc("GET /routes", a.read(a.getRoutes))
	mux.HandleFunc("GET /upstreams", a.read(a.getUpstreams))
	mux.HandleFunc("GET /cluster/members", a.read(a.getMembers))
	mux.HandleFunc("DELETE /cluster/members/{name}", a.write(a.deleteMember))
	mux.Handle("GET /metrics", a.read(g.MetricsHandler().ServeHTTP))
	mux.HandleFunc("GET /debug/pprof/", a.read(pprof.Index))
	mux.HandleFunc("GET /debug/pprof/cmdline", a.read(pprof.Cmdline))
	mux.HandleFunc("GET /debug/pprof/profile", a.read(pprof.Profile))
	mux.HandleFunc("GET /debug/pprof/symbol", a.read(pprof.Symbol))
	mux.HandleFunc("GET /debug/pprof/trace", a.read(pprof.Trace))
	mux.HandleFunc("POST /debug/pprof/symbol", a.read(pprof.Symbol))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// The catch-all keeps ServeMux from answering 405 itself (in
		// plain text): known paths get a problem with Allow.
		if allow := adminAllow(r.URL.Path); allow != "" {
			w.Header().Set("Allow", allow)
			adminProblem(w, http.StatusMethodNotAllowed, "Method Not Allowed", r.Method+" "+r.URL.Path+" is not supported; allowed: "+allow, nil)
			return
		}
		detail := "no admin endpoint " + r.Method + " " + r.URL.Path
		if p := strings.TrimSuffix(r.URL.Path, "/"); p != r.URL.Path && adminAllow(p) != "" {
			detail += " (paths are matched as written: " + p + "?)"
		}
		adminProblem(w, http.StatusNotFound, "Not Found", detail, nil)
	})
	// Without it ServeMux redirects /debug/pprof to /debug/pprof/ in
	// HTML: an admin client is told, as for other paths.
	mux.HandleFunc("/debug/pprof", func(w http.ResponseWriter, r *http.Request) {
		adminProblem(w, http.StatusNotFound, "Not Found", "no admin endpoint "+r.Method+" "+r.URL.Path+" (paths are matched as written: /debug/pprof/?)", nil)
	})
	return boundUnreadBody(refuseUncleanPath(mux))
}

// refuseUncleanPath answers a path with empty, "." or ".." segments
// (//config, /routes/../config) with a problem, where ServeMux would
// redirect to the clean one in HTML: an admin client is better told than
// sent elsewhere with its token.
func refuseUncleanPath(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		clean := path.Clean("/" + p)
		if strings.HasSuffix(p, "/") && clean != "/" {
			clean += "/"
		}
		if p != clean {
			hint := " (paths are matched as written)"
			if clean != "/" {
				hint = " (paths are matched as written: " + clean + "?)"
			}
			adminProblem(w, http.StatusNotFound, "Not Found", "no admin endpoint "+r.Method+" "+p+hint, nil)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// boundUnreadBody keeps a request whose body the handler left unread (a
// refusal: 401, 404, 405, 413...) from holding its connection: net/http
// would read what is left of the body, up to 256 KiB, before and after
// answering, and a client trickling it would hold the connection until
// the server's ReadTimeout. Ending the reads makes it answer at once and
// close the connection.
func boundUnreadBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			h.ServeHTTP(w, r)
			return
		}
		tb := &trackedBody{ReadCloser: r.Body}
		r.Body = tb
		h.ServeHTTP(w, r)
		if !tb.eof {
			http.NewResponseController(w).SetReadDeadline(time.Now())
		}
	})
}

// trackedBody notes whether its reader reached the end.
type trackedBody struct {
	io.ReadCloser
	eof bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.eof = true
	}
	return n, err
}

// adminAllow is the Allow field of a known admin path, or "".
func adminAllow(path string) string {
	switch path {
	case "/config":
		return "GET, HEAD, PUT"
	case "/debug/pprof/symbol":
		return "GET, HEAD, POST"
	case "/healthz", "/readyz", "/config/version", "/routes", "/upstreams", "/cluster/members", "/metrics":
		return "GET, HEAD"
	}
	if strings.HasPrefix(path, "/debug/pprof/") {
		return "GET, HEAD"
	}
	if name, ok := strings.CutPrefix(path, "/cluster/members/"); ok && name != "" && !strings.Contains(name, "/") {
		return "DELETE"
	}
	return ""
}

type admin struct {
	g *Gateway
	o AdminOptions
	// applying lets one PUT /config read and apply its document at a
	// time; the others wait their turn, or leave with their client. A
	// large document takes some hundreds of MB to read: six 32 MiB
	// ones at once took 1.65 GB.
	applying chan struct{}
}

func (a *admin) authorized(r *http.Request) bool {
	// One Authorization field (RFC 9110 11.6.2 gives it one value): with
	// two, which one counts is anyone's guess.
	if a.o.Token == "" || len(r.Header.Values("Authorization")) != 1 {
		return false
	}
	// The scheme is case-insensitive (RFC 9110 11.1).
	scheme, tok, ok := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	return ok && strings.EqualFold(scheme, "Bearer") &&
		subtle.ConstantTimeCompare([]byte(strings.TrimSpace(tok)), []byte(a.o.Token)) == 1
}

// refusedCredentials says why r's Authorization was not taken, for a 401:
// the WWW-Authenticate challenge (RFC 6750 3.1: no error code when no
// bearer credentials came, invalid_request for an empty or doubled one,
// invalid_token for a wrong one) and the problem's detail; "" when r
// brought no Authorization field.
func refusedCredentials(r *http.Request) (challenge, detail string) {
	vals := r.Header.Values("Authorization")
	if len(vals) == 0 {
		return "", ""
	}
	const realm = `Bearer realm="meridian-admin"`
	scheme, tok, _ := strings.Cut(strings.TrimSpace(vals[0]), " ")
	switch {
	case len(vals) > 1:
		return realm + `, error="invalid_request"`, "more than one Authorization field"
	case !strings.EqualFold(scheme, "Bearer"):
		return realm, "the admin API takes a bearer token (Authorization: Bearer TOKEN), not " + strconv.Quote(scheme) + " credentials"
	case strings.TrimSpace(tok) == "":
		return realm + `, error="invalid_request"`, "the Authorization field names Bearer but gives no token"
	}
	return realm + `, error="invalid_token"`, "the bearer token given is not the admin token"
}

func (a *admin) read(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.o.OpenReads && !a.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meridian-admin"`)
			adminProblem(w, http.StatusUnauthorized, "Unauthorized", "this admin listener is not on loopback: reads need the admin bearer token", nil)
			return
		}
		if a.o.OpenReads && len(r.Header.Values("Authorization")) > 0 && !a.authorized(r) {
			// A token was given and is wrong: said, not ignored (a
			// script would otherwise not learn its token is stale until
			// it writes).
			challenge, detail := refusedCredentials(r)
			w.Header().Set("WWW-Authenticate", challenge)
			adminProblem(w, http.StatusUnauthorized, "Unauthorized", detail, nil)
			return
		}
		if a.o.OpenReads && !a.authorized(r) {
			// Open reads are for this machine's own clients. A web page
			// whose name an attacker points at 127.0.0.1 (DNS rebinding)
			// reaches the listener too, but says its own name in Host
			// and Origin: those must be loopback names, as Caddy's admin
			// API requires.
			if what, bad := foreignOrigin(r); bad {
				w.Header().Set("WWW-Authenticate", `Bearer realm="meridian-admin"`)
				adminProblem(w, http.StatusForbidden, "Forbidden",
					fmt.Sprintf("reads without the admin bearer token are taken only from a loopback name (localhost, 127.0.0.1, [::1]); this request's %s (a guard against DNS rebinding)", what), nil)
				return
			}
		}
		h(w, r)
	}
}

// foreignOrigin reports whether r names a host other than a loopback one in
// its Host or Origin field, and which, as said in a refusal.
func foreignOrigin(r *http.Request) (string, bool) {
	if r.Host == "" {
		return "Host is missing", true
	}
	if !loopbackName(r.Host) {
		return fmt.Sprintf("Host is %q", r.Host), true
	}
	for _, o := range r.Header.Values("Origin") {
		u, err := url.Parse(o)
		if err != nil || u.Host == "" || !loopbackName(u.Host) {
			return fmt.Sprintf("Origin is %q", o), true
		}
	}
	return "", false
}

// loopbackName reports whether hostport (a Host field or a URL's host, with
// or without a port) is localhost, a name under .localhost (RFC 6761: never
// resolved through DNS) or a loopback IP address.
func loopbackName(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// strictQuery parses r's query, refusing what would otherwise be ignored: a
// malformed one (Go drops a pair with a ';'), a parameter not among names
// (a misspelt allow_empty), or one given twice.
func strictQuery(r *http.Request, names ...string) (url.Values, error) {
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, fmt.Errorf("malformed query: %v", err)
	}
	for k, vs := range q {
		if !slices.Contains(names, k) {
			return nil, fmt.Errorf("unknown parameter %q (%s %s takes %s)", k, r.Method, r.URL.Path, strings.Join(names, ", "))
		}
		if len(vs) > 1 {
			return nil, fmt.Errorf("parameter %q given %d times", k, len(vs))
		}
	}
	return q, nil
}

// jsonTagSuffix ends the entity tag of GET /config?format=json.
const jsonTagSuffix = "-json"

// ifMatch reports whether an If-Match value names the entity tag of the
// document with hash: "*", or a list holding "hash". The comparison is
// strong (RFC 9110 13.1.1): a weak tag never matches.
func ifMatch(v, hash string) bool {
	if strings.TrimSpace(v) == "*" {
		return true
	}
	for t := range strings.SplitSeq(v, ",") {
		if strings.TrimSpace(t) == `"`+hash+`"` {
			return true
		}
	}
	return false
}

// ifNoneMatchHits reports whether an If-None-Match value names the entity
// tag of the document with hash: "*", or a list holding "hash" or
// W/"hash" (the comparison is weak, RFC 9110 13.1.2).
func ifNoneMatchHits(v, hash string) bool {
	if strings.TrimSpace(v) == "*" {
		return true
	}
	for t := range strings.SplitSeq(v, ",") {
		t = strings.TrimPrefix(strings.TrimSpace(t), "W/")
		if t == `"`+hash+`"` {
			return true
		}
	}
	return false
}

func (a *admin) write(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if !a.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meridian-admin"`)
			detail := "writes need the admin bearer token: Authorization: Bearer TOKEN"
			if challenge, why := refusedCredentials(r); why != "" {
				w.Header().Set("WWW-Authenticate", challenge)
				detail = why
			}
			if a.o.Token == "" {
				detail = "no admin token is configured, so writes are refused; set node.admin.token or node.admin.token_file"
			}
			adminProblem(w, http.StatusUnauthorized, "Unauthorized", detail, nil)
			return
		}
		h(w, r)
	}
}

func (a *admin) readyz(w http.ResponseWriter, r *http.Request) {
	if a.g.Current() == nil || (a.o.Control != nil && !a.o.Control.Ready()) {
		why := "the node has no configuration yet or is draining"
		if rr, ok := a.o.Control.(interface{ NotReadyReason() string }); ok {
			if s := rr.NotReadyReason(); s != "" {
				why = s
			}
		}
		adminProblem(w, http.StatusServiceUnavailable, "Not Ready", why, nil)
		return
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, "ready\n")
}

func setVersionHeaders(w http.ResponseWriter, s *Snapshot) {
	w.Header().Set("ETag", `"`+s.Hash+`"`)
	setVersionHeader(w, s)
}

// setVersionHeader says which document an answer derived from it comes
// from, without an ETag: a target's health or the time a document was
// applied change under the same document (RFC 9110 8.8.3: a strong tag
// must change with the representation).
func setVersionHeader(w http.ResponseWriter, s *Snapshot) {
	w.Header().Set("Meridian-Config-Version", strconv.FormatUint(s.Version, 10))
}

func (a *admin) getConfig(w http.ResponseWriter, r *http.Request) {
	s := a.g.Current()
	if s == nil {
		adminProblem(w, http.StatusNotFound, "Not Found", "no configuration applied yet", nil)
		return
	}
	q, err := strictQuery(r, "format")
	if err != nil {
		adminProblem(w, http.StatusBadRequest, "Bad Request", err.Error(), nil)
		return
	}
	switch f := q.Get("format"); f {
	case "", "json":
	default:
		adminProblem(w, http.StatusBadRequest, "Bad Request", "unknown format "+strconv.Quote(f)+": leave it out for the document as applied, or use format=json", nil)
		return
	}
	setVersionHeaders(w, s)
	tag := s.Hash
	if q.Get("format") == "json" {
		// Another representation of the document: a tag of its own
		// (RFC 9110 8.8.3), so that a cache or poller holding the YAML
		// is not told that it holds the JSON.
		tag += jsonTagSuffix
		w.Header().Set("ETag", `"`+tag+`"`)
	}
	if v := r.Header.Values("If-None-Match"); len(v) > 0 && ifNoneMatchHits(strings.Join(v, ","), tag) {
		w.WriteHeader(http.StatusNotModified) // a poller's copy is current
		return
	}
	if q.Get("format") == "json" {
		// The applied text in JSON form (not the compiled document), so
		// that it can be applied again as it is.
		b, err := config.ToJSON(s.Raw)
		if err != nil {
			adminProblem(w, http.StatusInternalServerError, "Internal Server Error", "cannot render the document as JSON: "+err.Error(), nil)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(b)
		return
	}
	ct := "application/yaml"
	if json.Valid(s.Raw) { // YAML in flow style also starts with '{'
		ct = "application/json"
	}
	w.Header().Set("Content-Type", ct)
	w.Write(s.Raw)
}

type versionInfo struct {
	Version   uint64    `json:"version"`
	Hash      string    `json:"hash"`
	AppliedAt time.Time `json:"applied_at,omitzero"` // none for a write not served yet
	Routes    int       `json:"routes"`
	Services  int       `json:"services"`
}

func info(s *Snapshot) versionInfo {
	vi := versionInfo{Version: s.Version, Hash: s.Hash, AppliedAt: s.AppliedAt}
	if s.Doc != nil {
		vi.Routes, vi.Services = len(s.Doc.Routes), len(s.Doc.Services)
	}
	return vi
}

func (a *admin) getVersion(w http.ResponseWriter, r *http.Request) {
	s := a.g.Current()
	if s == nil {
		adminProblem(w, http.StatusNotFound, "Not Found", "no configuration applied yet", nil)
		return
	}
	setVersionHeader(w, s)
	writeJSON(w, http.StatusOK, info(s))
}

func (a *admin) putConfig(w http.ResponseWriter, r *http.Request) {
	if a.o.Control == nil {
		adminProblem(w, http.StatusNotImplemented, "Not Implemented", "this node does not accept configuration", nil)
		return
	}
	q, err := strictQuery(r, "if_version", "allow_empty")
	if err != nil {
		adminProblem(w, http.StatusBadRequest, "Bad Request", err.Error(), nil)
		return
	}
	var ifVersion uint64
	byETag := false // ifVersion stands for the document If-Match named
	if vs, ok := q["if_version"]; ok {
		n, err := strconv.ParseUint(vs[0], 10, 64)
		if err != nil || n == 0 || n == math.MaxUint64 { // the last: the store's "no document yet"
			adminProblem(w, http.StatusBadRequest, "Bad Request", "if_version must be one positive version number", nil)
			return
		}
		ifVersion = n
	}
	if ims, ok := r.Header["If-Match"]; ok {
		// Several lines are one list (RFC 9110 5.3); an empty one
		// matches nothing.
		cur := a.g.Current()
		// Either representation's tag names the applied document.
		if im := strings.Join(ims, ","); cur == nil || !ifMatch(im, cur.Hash) && !ifMatch(im, cur.Hash+jsonTagSuffix) {
			adminProblem(w, http.StatusPreconditionFailed, "Precondition Failed", "If-Match does not name the applied document's ETag", nil)
			return
		}
		if ifVersion == 0 {
			ifVersion = cur.Version
			byETag = true
		}
	}
	// If-None-Match (RFC 9110 13.1.2): "*" applies the document only if
	// none is applied yet, decided where documents are applied, so that
	// of two such requests one wins; a list of tags refuses to replace a
	// document it names, compared as the request arrives.
	ifAbsent := false
	if inms, ok := r.Header["If-None-Match"]; ok {
		inm := strings.Join(inms, ",")
		if strings.TrimSpace(inm) == "*" {
			ifAbsent = true
		} else if cur := a.g.Current(); cur != nil && (ifNoneMatchHits(inm, cur.Hash) || ifNoneMatchHits(inm, cur.Hash+jsonTagSuffix)) {
			adminProblem(w, http.StatusPreconditionFailed, "Precondition Failed", "If-None-Match names the applied document's ETag", nil)
			return
		}
	}
	allowEmpty := false
	if vs, ok := q["allow_empty"]; ok {
		b, err := strconv.ParseBool(vs[0])
		if vs[0] == "" {
			b, err = true, nil // a bare ?allow_empty
		}
		if err != nil {
			adminProblem(w, http.StatusBadRequest, "Bad Request", "allow_empty must be true or false", nil)
			return
		}
		allowEmpty = b
	}
	if ce := strings.Join(r.Header.Values("Content-Encoding"), ", "); ce != "" {
		for coding := range strings.SplitSeq(ce, ",") {
			if c := strings.TrimSpace(coding); c != "" && !strings.EqualFold(c, "identity") {
				// RFC 9110 15.5.16: say which codings would be taken (none).
				w.Header().Set("Accept-Encoding", "identity")
				adminProblem(w, http.StatusUnsupportedMediaType, "Unsupported Media Type", "the document must be sent without a content coding (Content-Encoding: "+ce+")", nil)
				return
			}
		}
	}
	if r.ContentLength > a.o.MaxBodyBytes {
		adminProblem(w, http.StatusRequestEntityTooLarge, "Content Too Large", fmt.Sprintf("the document must be at most %d bytes", a.o.MaxBodyBytes), nil)
		return
	}
	// The body is read first, each request for itself: a client that
	// stalls its upload holds only its own request, not the turn of the
	// others. Read to its end, net/http also watches the connection, so a
	// client that leaves while it waits for its turn is seen.
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, a.o.MaxBodyBytes))
	if err != nil {
		if _, tooLarge := errors.AsType[*http.MaxBytesError](err); tooLarge {
			adminProblem(w, http.StatusRequestEntityTooLarge, "Content Too Large", fmt.Sprintf("the document must be at most %d bytes", a.o.MaxBodyBytes), nil)
		} else {
			adminProblem(w, http.StatusRequestTimeout, "Request Timeout", "the document did not arrive whole: "+err.Error(), nil)
		}
		return
	}
	select {
	case a.applying <- struct{}{}:
		defer func() { <-a.applying }()
	case <-r.Context().Done():
		return // the client left while another document was being applied
	}
	if r.Context().Err() != nil {
		return // gone while it waited: nobody is told, so nothing is applied
	}
	s, err := a.o.Control.Apply(r.Context(), raw, ApplyOptions{IfVersion: ifVersion, IfAbsent: ifAbsent, AllowNoRoutes: allowEmpty})
	if err != nil {
		var es config.Errors
		hint := formHint(r, raw)
		switch {
		case errors.Is(err, ErrVersionConflict) && ifAbsent:
			adminProblem(w, http.StatusPreconditionFailed, "Precondition Failed", "If-None-Match: * and a document is applied already", nil)
		case errors.Is(err, ErrVersionConflict) && byETag:
			// Another document landed between the If-Match check and the
			// apply: the tag no longer names the applied document.
			adminProblem(w, http.StatusPreconditionFailed, "Precondition Failed", "If-Match does not name the applied document's ETag: another document was applied meanwhile", nil)
		case errors.Is(err, ErrVersionConflict):
			adminProblem(w, http.StatusConflict, "Conflict", err.Error(), nil)
		case errors.Is(err, ErrNotServedYet) && s != nil:
			// Accepted: committed, it stands; said as such so that it is
			// not sent again (an outside check saw a committed write
			// answered 503 "cannot be changed now", which invites that).
			// No ETag nor version header: they name what this node
			// serves, which this is not yet (the body says which it is).
			writeJSON(w, http.StatusAccepted, struct {
				versionInfo
				Served bool   `json:"served"`
				Detail string `json:"detail"`
			}{info(s), false, err.Error()})
		case errors.Is(err, ErrOutcomeUnknown):
			// No Retry-After: sent again blindly, it could be applied twice.
			adminProblem(w, http.StatusServiceUnavailable, "Service Unavailable", err.Error()+"; read GET /config/version before sending it again (with if_version)", nil)
		case errors.Is(err, ErrUnavailable):
			w.Header().Set("Retry-After", "1")
			adminProblem(w, http.StatusServiceUnavailable, "Service Unavailable", err.Error(), nil)
		case errors.As(err, &es):
			list := make([]string, len(es))
			for i, e := range es {
				list[i] = e.Error()
			}
			adminProblem(w, http.StatusUnprocessableEntity, "Invalid Configuration", "the document was refused; the running configuration is unchanged"+hint, list)
		case errors.Is(err, config.ErrEmpty), errors.Is(err, ErrNoRoutes):
			adminProblem(w, http.StatusUnprocessableEntity, "Invalid Configuration", "the document was refused; the running configuration is unchanged"+hint, []string{err.Error()})
		default:
			adminProblem(w, http.StatusInternalServerError, "Apply Failed", err.Error(), nil)
		}
		return
	}
	setVersionHeaders(w, s)
	writeJSON(w, http.StatusOK, info(s))
}

// formHint explains a refused document that came as curl -d (--data)
// sends a file: typed as an HTML form and with its line breaks taken out,
// so that a YAML document arrives as one line. (--data-binary sends the
// same type but the lines as they are: no hint then.) The document is
// still read as sent (JSON survives that), only the refusal says so.
func formHint(r *http.Request, raw []byte) string {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if t := bytes.TrimSpace(raw); mt != "application/x-www-form-urlencoded" && mt != "multipart/form-data" || bytes.ContainsAny(raw, "\r\n") ||
		len(t) == 0 || // empty as sent: nothing was taken out
		t[0] == '{' || t[0] == '[' { // JSON: one line is as good as many
		return ""
	}
	return " (the request's Content-Type is " + mt + ": curl -d/--data removes the line breaks of the file it sends; send it with --data-binary @FILE)"
}

func (a *admin) getMembers(w http.ResponseWriter, r *http.Request) {
	var members any
	if a.o.Cluster != nil {
		members = a.o.Cluster()
	}
	if members == nil {
		adminProblem(w, http.StatusNotFound, "Not Found", "this node runs alone (no cluster section in its configuration)", nil)
		return
	}
	writeJSON(w, http.StatusOK, members)
}

func (a *admin) deleteMember(w http.ResponseWriter, r *http.Request) {
	if a.o.RemoveMember == nil {
		adminProblem(w, http.StatusNotFound, "Not Found", "this node runs alone (no cluster section in its configuration)", nil)
		return
	}
	err := a.o.RemoveMember(r.PathValue("name"))
	switch {
	case err == nil:
		w.WriteHeader(http.StatusNoContent)
	case errors.Is(err, ErrNoSuchMember):
		adminProblem(w, http.StatusNotFound, "Not Found", err.Error(), nil)
	case errors.Is(err, ErrRefused):
		adminProblem(w, http.StatusConflict, "Conflict", err.Error(), nil)
	default:
		w.Header().Set("Retry-After", "1")
		adminProblem(w, http.StatusServiceUnavailable, "Service Unavailable", err.Error(), nil)
	}
}

func (a *admin) getRoutes(w http.ResponseWriter, r *http.Request) {
	s := a.g.Current()
	if s == nil {
		writeJSON(w, http.StatusOK, []RouteInfo{})
		return
	}
	setVersionHeaders(w, s)
	writeJSON(w, http.StatusOK, s.Routes())
}

func (a *admin) getUpstreams(w http.ResponseWriter, r *http.Request) {
	s := a.g.Current()
	if s == nil {
		writeJSON(w, http.StatusOK, []ServiceHealth{})
		return
	}
	setVersionHeader(w, s)
	writeJSON(w, http.StatusOK, s.Health())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		adminProblem(w, http.StatusInternalServerError, "Internal Error", err.Error(), nil)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}

func adminProblem(w http.ResponseWriter, status int, title, detail string, errs []string) {
	body := struct {
		Type   string   `json:"type"`
		Title  string   `json:"title"`
		Status int      `json:"status"`
		Detail string   `json:"detail,omitempty"`
		Errors []string `json:"errors,omitempty"`
	}{"about:blank", title, status, detail, errs}
	b, _ := json.MarshalIndent(body, "", "  ")
	w.Header().Set("Content-Type", "application/problem+json")
	w.WriteHeader(status)
	w.Write(append(b, '\n'))
}
