package config

import (
	"cmp"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/edge/router"
	"github.com/meridian-gw/meridian/edge/upstream"
	"go.yaml.in/yaml/v3"
)

// Parse decodes and validates a gateway document given on its own (as the
// admin API receives it), in YAML or JSON.
func Parse(data []byte) (_ *Document, err error) {
	defer RecoverParse(&err)
	var doc Document
	root, err := DecodeStrict(data, &doc)
	if err != nil {
		return nil, err
	}
	if err := doc.Validate(); err != nil {
		err = withLines(err, root, "")
		if es, ok := err.(Errors); ok {
			err = CapErrors(es)
		}
		return nil, err
	}
	return &doc, nil
}

// RecoverParse, deferred, turns a panic while reading a document (a bug,
// in Meridian or in the YAML decoder) into an error, so that a bad document
// sent to a running node is refused instead of stopping it.
func RecoverParse(err *error) {
	if p := recover(); p != nil {
		*err = fmt.Errorf("config: internal error while reading the document: %v", p)
	}
}

// ValidateAt validates doc, which was decoded from the document at root,
// with every path under prefix (for example "gateway" when the gateway
// document is a section of a node's file), and returns errors whose paths and
// lines point into that document.
func ValidateAt(doc *Document, root *yaml.Node, prefix string) error {
	err := doc.Validate()
	if err == nil {
		return nil
	}
	if es, ok := err.(Errors); ok {
		for _, e := range es {
			e.Path = joinPath(prefix, e.Path)
		}
	}
	return withLines(err, root, "")
}

// Validate checks the whole document: required fields, value ranges,
// syntax of hosts, paths, templates, regexes and URLs, uniqueness of names,
// and that every reference names something that exists. It reports every
// problem found, not only the first.
func (d *Document) Validate() error {
	v := &validator{}
	services := map[string]int{}
	for i := range d.Services {
		s := &d.Services[i]
		p := fmt.Sprintf("services[%d]", i)
		v.service(p, s)
		if s.Name != "" {
			if j, dup := services[s.Name]; dup {
				v.errf(p+".name", "duplicate service name %q (also services[%d])", s.Name, j)
			} else {
				services[s.Name] = i
			}
		}
	}
	routes := map[string]int{}
	for i := range d.Routes {
		r := &d.Routes[i]
		p := fmt.Sprintf("routes[%d]", i)
		v.route(p, r)
		if r.Name != "" {
			if j, dup := routes[r.Name]; dup {
				v.errf(p+".name", "duplicate route name %q (also routes[%d])", r.Name, j)
			} else {
				routes[r.Name] = i
			}
		}
		if r.Service == "" {
			v.errf(p+".service", "missing: name the service that answers this route")
		} else if _, ok := services[r.Service]; !ok {
			v.errf(p+".service", "unknown service %q%s", r.Service, suggest(r.Service, d.Services))
		}
	}
	if len(v.errs) == 0 {
		return nil
	}
	if v.more > 0 {
		return append(v.errs, moreErrors(v.more))
	}
	return v.errs
}

func suggest(name string, services []Service) string {
	var names []string
	for _, s := range services {
		names = append(names, strconv.Quote(s.Name))
	}
	if len(names) == 0 {
		return " (the document defines no services)"
	}
	if len(names) > 8 {
		names = append(names[:8], "...")
	}
	return " (defined: " + strings.Join(names, ", ") + ")"
}

// validator collects a document's errors: the first MaxErrors, and a count
// of the rest (a document of 100,000 routes naming a missing service made
// 100,000 errors to drop all but 100 of).
type validator struct {
	errs Errors
	more int
}

func (v *validator) errf(path, format string, args ...any) {
	if len(v.errs) >= MaxErrors {
		v.more++
		return
	}
	v.errs = append(v.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$`)

func (v *validator) name(path, name string) {
	switch {
	case name == "":
		v.errf(path, "missing: every entry needs a name")
	case !nameRE.MatchString(name):
		v.errf(path, "invalid name %q: use letters, digits, '.', '_' and '-', starting with a letter or digit, at most 128", name)
	}
}

func (v *validator) nonNegative(path string, d time.Duration) {
	if d < 0 {
		v.errf(path, "must not be negative (got %s)", d)
	}
}

func (v *validator) service(p string, s *Service) {
	v.name(p+".name", s.Name)
	switch s.Protocol {
	case "", "http1", "h2c", "h2":
	default:
		v.errf(p+".protocol", "unknown protocol %q: use http1, h2c or h2", s.Protocol)
	}
	if len(s.Targets) == 0 {
		v.errf(p+".targets", "missing: a service needs at least one target")
	}
	dests := make(map[string]int, len(s.Targets))
	for i, t := range s.Targets {
		tp := fmt.Sprintf("%s.targets[%d]", p, i)
		u, err := url.Parse(t.URL)
		if err == nil && u.Host != "" {
			d := upstream.Destination(u)
			if j, dup := dests[d]; dup {
				// Twice in the list, it would get twice its share, count
				// twice toward max_ejection_percent, and stay in traffic
				// while one of the two is ejected or down.
				v.errf(tp+".url", "%q is the same destination as targets[%d] (%q): list it once, with a weight", t.URL, j, s.Targets[j].URL)
			} else {
				dests[d] = i
			}
		}
		switch {
		case t.URL == "":
			v.errf(tp+".url", "missing: give the target's URL such as http://10.0.0.5:8080")
		case err != nil:
			v.errf(tp+".url", "invalid URL %q: %v", t.URL, err)
		case u.Scheme != "http" && u.Scheme != "https":
			v.errf(tp+".url", "scheme %q not supported: use http or https", u.Scheme)
		case u.Host == "":
			v.errf(tp+".url", "URL %q has no host", t.URL)
		case u.RawQuery != "" || u.Fragment != "" || u.User != nil:
			v.errf(tp+".url", "URL %q must not carry a query, fragment or user info", t.URL)
		case s.Protocol == "h2c" && u.Scheme != "http":
			v.errf(tp+".url", "protocol h2c needs http:// targets (h2c is HTTP/2 without TLS)")
		case s.Protocol == "h2" && u.Scheme != "https":
			v.errf(tp+".url", "protocol h2 needs https:// targets (use h2c for HTTP/2 without TLS)")
		}
		if err == nil && u.Host != "" {
			if _, port, err := net.SplitHostPort(u.Host); err == nil {
				if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
					v.errf(tp+".url", "invalid port %q", port)
				}
			}
		}
		if w := t.Weight; w != nil && (*w < 1 || *w > MaxWeight) {
			v.errf(tp+".weight", "must be between 1 and %d (got %d); to stop sending a target traffic, remove it from targets", MaxWeight, *w)
		}
	}
	switch s.Balancer.Policy {
	case "", "round_robin", "least_requests":
		if s.Balancer.HashOn != "" {
			v.errf(p+".balancer.hash_on", "only used with policy consistent_hash")
		}
	case "consistent_hash":
		if s.Balancer.HashOn == "" {
			v.errf(p+".balancer.hash_on", "missing: consistent_hash needs header:NAME, cookie:NAME or client_ip")
		} else if _, _, err := ParseHashOn(s.Balancer.HashOn); err != nil {
			v.errf(p+".balancer.hash_on", "%v", err)
		}
	default:
		v.errf(p+".balancer.policy", "unknown policy %q: use round_robin, least_requests or consistent_hash", s.Balancer.Policy)
	}
	v.nonNegative(p+".timeouts.connect", s.Timeouts.Connect)
	v.nonNegative(p+".timeouts.response_header", s.Timeouts.ResponseHeader)
	v.nonNegative(p+".timeouts.send", s.Timeouts.Send)
	v.nonNegative(p+".timeouts.read", s.Timeouts.Read)
	v.nonNegative(p+".timeouts.total", s.Timeouts.Total)
	if r := s.Retries; r != nil {
		rp := p + ".retries"
		if a := r.Attempts; a != nil && (*a < 0 || *a > 10) {
			v.errf(rp+".attempts", "must be between 0 and 10 (got %d)", *a)
		}
		for i, on := range r.On {
			if _, err := ParseRetryOn(on); err != nil {
				v.errf(fmt.Sprintf("%s.on[%d]", rp, i), "%v", err)
			}
		}
		if b := r.Budget.Ratio; b != nil && !(*b >= 0 && *b <= 1) { // NaN too
			v.errf(rp+".budget.ratio", "must be between 0 and 1 (got %g)", *b)
		}
		if m := r.Budget.MinPerSecond; m != nil && *m < 0 {
			v.errf(rp+".budget.min_per_second", "must not be negative")
		}
		v.nonNegative(rp+".backoff.base", r.Backoff.Base)
		v.nonNegative(rp+".backoff.max", r.Backoff.Max)
		if r.Backoff.Max > 0 && r.Backoff.Base > r.Backoff.Max {
			v.errf(rp+".backoff.base", "base %s is larger than max %s", r.Backoff.Base, r.Backoff.Max)
		}
	}
	if h := s.HealthCheck; h != nil {
		hp := p + ".health_check"
		if !strings.HasPrefix(h.Path, "/") {
			v.errf(hp+".path", "missing or invalid: give a path starting with '/' such as /healthz")
		} else if strings.Contains(h.Path, "#") {
			v.errf(hp+".path", "%q has a fragment, which is never sent", h.Path)
		}
		if h.Interval < 0 || (h.Interval > 0 && h.Interval < 100*time.Millisecond) {
			v.errf(hp+".interval", "must be at least 100ms (got %s)", h.Interval)
		}
		v.nonNegative(hp+".timeout", h.Timeout)
		if h.HealthyThreshold < 0 {
			v.errf(hp+".healthy_threshold", "must not be negative")
		} else if h.HealthyThreshold > upstream.MaxThreshold {
			v.errf(hp+".healthy_threshold", "must be at most %d (got %d)", upstream.MaxThreshold, h.HealthyThreshold)
		}
		if h.UnhealthyThreshold < 0 {
			v.errf(hp+".unhealthy_threshold", "must not be negative")
		} else if h.UnhealthyThreshold > upstream.MaxThreshold {
			v.errf(hp+".unhealthy_threshold", "must be at most %d (got %d)", upstream.MaxThreshold, h.UnhealthyThreshold)
		}
		if h.ExpectStatus != "" {
			if _, _, err := ParseStatusRange(h.ExpectStatus); err != nil {
				v.errf(hp+".expect_status", "%v", err)
			}
		}
	}
	if o := s.OutlierDetection; o != nil {
		op := p + ".outlier_detection"
		if o.ConsecutiveFailures < 0 {
			v.errf(op+".consecutive_failures", "must not be negative")
		} else if o.ConsecutiveFailures > upstream.MaxThreshold {
			v.errf(op+".consecutive_failures", "must be at most %d (got %d)", upstream.MaxThreshold, o.ConsecutiveFailures)
		}
		v.nonNegative(op+".base_ejection", o.BaseEjection)
		v.nonNegative(op+".max_ejection", o.MaxEjection)
		if base := cmp.Or(o.BaseEjection, upstream.DefaultBaseEjection); o.MaxEjection > 0 && o.MaxEjection < base {
			v.errf(op+".max_ejection", "%s is shorter than base_ejection (%s)", o.MaxEjection, base)
		}
		if m := o.MaxEjectionPercent; m != nil && (*m < 1 || *m > 100) {
			v.errf(op+".max_ejection_percent", "must be between 1 and 100 (got %d); one target may always be ejected, and the last available one never is", *m)
		}
	}
	if t := s.TLS; t != nil {
		if (t.CertFile == "") != (t.KeyFile == "") {
			v.errf(p+".tls", "cert_file and key_file go together")
		}
		hasHTTPS := false
		for _, tg := range s.Targets {
			hasHTTPS = hasHTTPS || strings.HasPrefix(tg.URL, "https://")
		}
		if !hasHTTPS {
			v.errf(p+".tls", "only used with https:// targets")
		}
	}
	if s.MaxConcurrentRequests < 0 {
		v.errf(p+".max_concurrent_requests", "must not be negative")
	}
}

var (
	headerNameRE = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
	hostRE       = regexp.MustCompile(`^(\*\.)?([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$`)
	methodRE     = regexp.MustCompile("^[A-Z][A-Z0-9_-]{0,31}$")
)

func (v *validator) route(p string, r *Route) {
	v.name(p+".name", r.Name)
	m := &r.Match
	for i, h := range m.Hosts {
		if h != strings.ToLower(h) || !hostRE.MatchString(h) && net.ParseIP(strings.TrimSuffix(strings.TrimPrefix(h, "["), "]")) == nil {
			v.errf(fmt.Sprintf("%s.match.hosts[%d]", p, i), "invalid host %q: use a lower-case name such as api.example.com or *.example.com, or an IP address such as 192.0.2.1 or [2001:db8::1] (no port)", h)
		}
	}
	var tmpl *router.Template
	switch {
	case m.Path != "" && m.PathPrefix != "":
		v.errf(p+".match", "set path or path_prefix, not both")
	case m.Path != "":
		if !strings.HasPrefix(m.Path, "/") {
			v.errf(p+".match.path", "must start with '/' (got %q)", m.Path)
		} else if msg := decodedPathProblem(m.Path); msg != "" {
			v.errf(p+".match.path", "%s", msg)
		} else if t, err := router.ParseTemplate(m.Path); err != nil {
			v.errf(p+".match.path", "%v", err)
		} else {
			tmpl = t
		}
	case m.PathPrefix != "":
		if !strings.HasPrefix(m.PathPrefix, "/") {
			v.errf(p+".match.path_prefix", "must start with '/' (got %q)", m.PathPrefix)
		} else if strings.ContainsAny(m.PathPrefix, "{}") {
			v.errf(p+".match.path_prefix", "must be a literal path (no '{' or '}'); use path for templates")
		} else if msg := decodedPathProblem(m.PathPrefix); msg != "" {
			v.errf(p+".match.path_prefix", "%s", msg)
		}
	}
	for _, seg := range strings.Split(m.Path+m.PathPrefix, "/") {
		if seg == "." || seg == ".." {
			v.errf(p+".match", "path must not contain '.' or '..' segments: requests are matched after dot segments are removed")
			break
		}
	}
	hostAt := make(map[string]int, len(m.Hosts))
	for i, h := range m.Hosts {
		if j, dup := hostAt[h]; dup {
			v.errf(fmt.Sprintf("%s.match.hosts[%d]", p, i), "%s listed twice (also hosts[%d])", h, j)
		} else {
			hostAt[h] = i
		}
	}
	seen := make(map[string]int, len(m.Methods))
	for i, meth := range m.Methods {
		if !methodRE.MatchString(meth) {
			v.errf(fmt.Sprintf("%s.match.methods[%d]", p, i), "invalid method %q: use upper case such as GET", meth)
		} else if meth == "CONNECT" {
			v.errf(fmt.Sprintf("%s.match.methods[%d]", p, i), "CONNECT is answered by the gateway (501: it is not a forward proxy) and never reaches a route")
		} else if j, dup := seen[meth]; dup {
			v.errf(fmt.Sprintf("%s.match.methods[%d]", p, i), "%s listed twice (also methods[%d])", meth, j)
		} else {
			seen[meth] = i
		}
	}
	v.valueMatches(p+".match.headers", m.Headers, true)
	v.valueMatches(p+".match.query", m.Query, false)
	if rw := r.Rewrite; rw != nil {
		if rw.Path != "" {
			if rw.StripPrefix {
				v.errf(p+".rewrite", "set path or strip_prefix, not both")
			}
			if !strings.HasPrefix(rw.Path, "/") {
				v.errf(p+".rewrite.path", "must start with '/' (got %q)", rw.Path)
			} else if why := rewritePathProblem(rw.Path); why != "" {
				v.errf(p+".rewrite.path", "%s (got %q)", why, rw.Path)
			} else if t, err := router.ParseTemplate(rw.Path); err != nil {
				v.errf(p+".rewrite.path", "%v", err)
			} else {
				have := map[string]bool{}
				if tmpl != nil {
					for _, name := range tmpl.Vars() {
						have[name] = true
					}
				}
				for _, name := range t.Vars() {
					if !have[name] {
						v.errf(p+".rewrite.path", "uses {%s}, which match.path does not define", name)
					}
				}
			}
		}
		if rw.StripPrefix && m.PathPrefix == "" {
			v.errf(p+".rewrite.strip_prefix", "needs match.path_prefix")
		}
		if rw.Host != "" && !validRewriteHost(rw.Host) {
			v.errf(p+".rewrite.host", "invalid host %q: want a host name, an IPv4 address or a bracketed IPv6 one, with an optional port of 1 to 65535 (it is sent as written, template parameters included)", rw.Host)
		}
	}
	v.headerOps(p+".request_headers", &r.RequestHeaders, false)
	v.headerOps(p+".response_headers", &r.ResponseHeaders, true)
	if r.Limits.MaxRequestBody < 0 {
		v.errf(p+".limits.max_request_body", "must not be negative")
	}
	if r.Limits.MaxResponseBody < 0 {
		v.errf(p+".limits.max_response_body", "must not be negative")
	}
}

func (v *validator) valueMatches(p string, ms []ValueMatch, header bool) {
	for i, m := range ms {
		mp := fmt.Sprintf("%s[%d]", p, i)
		if m.Name == "" {
			v.errf(mp+".name", "missing")
		} else if header && !headerNameRE.MatchString(m.Name) {
			v.errf(mp+".name", "invalid header name %q", m.Name)
		} else if header && isHopByHop(m.Name) && !strings.EqualFold(m.Name, "Upgrade") {
			v.errf(mp+".name", "%q is a hop-by-hop header, about the client's connection, not its request: a route cannot match on it", m.Name)
		} else if header && strings.EqualFold(m.Name, "X-Forwarded-Client-Cert") {
			v.errf(mp+".name", "%q is dropped from every client (only the gateway vouches for client certificates, after routing): a route cannot match on it", m.Name)
		}
		n := 0
		for _, s := range []string{m.Exact, m.Prefix, m.Regex} {
			if s != "" {
				n++
			}
		}
		if n > 1 {
			v.errf(mp, "set at most one of exact, prefix and regex")
		}
		if m.Regex != "" {
			// The expression alone first, so that the error quotes what
			// was written, not the anchored form matching compiles.
			if _, err := regexp.Compile(m.Regex); err != nil {
				v.errf(mp+".regex", "invalid regular expression: %v", err)
			} else if _, err := regexp.Compile("^(?:" + m.Regex + ")$"); err != nil {
				v.errf(mp+".regex", "invalid regular expression: %v", err)
			}
		}
	}
}

func (v *validator) headerOps(p string, ops *HeaderOps, response bool) {
	check := func(field, name, value string) {
		if !headerNameRE.MatchString(name) {
			v.errf(p+"."+field, "invalid header name %q", name)
		}
		if i := strings.IndexFunc(value, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }); i >= 0 {
			v.errf(p+"."+field, "value of %q holds the control character %U: a field value holds visible characters, spaces and tabs (RFC 9110 5.5)", name, value[i])
		} else if strings.TrimLeft(value, " \t") != value || strings.TrimRight(value, " \t") != value {
			v.errf(p+"."+field, "value of %q begins or ends with a space or tab, which cannot be part of a field value (RFC 9110 5.5)", name)
		}
		switch strings.ToLower(name) {
		case "host":
			v.errf(p+"."+field, "%q cannot be changed by a header operation; use the route's rewrite.host", name)
		case "content-length", "transfer-encoding":
			v.errf(p+"."+field, "%q frames the message, which the gateway does itself, and cannot be changed by a route", name)
		case "expect":
			if !response {
				v.errf(p+"."+field, "%q is answered by the gateway itself (100-continue), and cannot be sent on by a route", name)
			}
		case "date":
			if response {
				v.errf(p+"."+field, "%q cannot be changed in a response: a proxy adds the time when it is missing (RFC 9110 6.6.1)", name)
			}
		default:
			if isHopByHop(name) {
				v.errf(p+"."+field, "%q is a hop-by-hop header and cannot be changed by a route", name)
			}
		}
	}
	// In a fixed order (set, add; names sorted), so that a document's
	// errors come the same way each time.
	for _, f := range []struct {
		field string
		m     map[string]string
	}{{"set", ops.Set}, {"add", ops.Add}} {
		field, m := f.field, f.m
		seen := map[string]string{}
		for _, name := range slices.Sorted(maps.Keys(m)) {
			value := m[name]
			check(field, name, value)
			// Header names are case-insensitive: two spellings of one
			// name would leave one of them silently unused.
			if other, dup := seen[strings.ToLower(name)]; dup {
				a, b := min(name, other), max(name, other)
				v.errf(p+"."+field, "%q and %q are the same header", a, b)
			}
			seen[strings.ToLower(name)] = name
		}
	}
	for _, name := range ops.Remove {
		check("remove", name, "")
	}
}

// validRewriteHost reports whether h is a Host the gateway may send: a
// host name (labels of letters, digits, '-' and '_'), an IPv4 address or a
// bracketed IPv6 one, and an optional port of 1 to 65535.
func validRewriteHost(h string) bool {
	host, port, hasPort := h, "", false
	if strings.HasPrefix(h, "[") {
		end := strings.IndexByte(h, ']')
		if end < 0 {
			return false
		}
		if a, err := netip.ParseAddr(h[1:end]); err != nil || !a.Is6() || a.Zone() != "" {
			return false
		}
		rest := h[end+1:]
		if rest == "" {
			return true
		}
		if rest[0] != ':' {
			return false
		}
		host, port, hasPort = "", rest[1:], true
	} else if i := strings.IndexByte(h, ':'); i >= 0 {
		host, port, hasPort = h[:i], h[i+1:], true
	}
	if hasPort {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '+' || port[0] == '0' {
			return false
		}
	}
	if host == "" {
		return h[0] == '['
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Is4()
	}
	if len(host) > 253 {
		return false
	}
	for _, label := range strings.Split(host, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// decodedPathProblem says what is wrong with a route's match path or
// prefix written other than as the decoded path it is matched against,
// "" if nothing.
func decodedPathProblem(path string) string {
	switch {
	case strings.ContainsAny(path, "?#"):
		return "must be a path alone, without a query or fragment (a '?' here would match only an escaped %3F)"
	case strings.Contains(path, "%"):
		return "must be written decoded, without %-escapes: requests are matched by their decoded path (a '%2F' here would match only a client's '%252F')"
	}
	return ""
}

func isHopByHop(name string) bool {
	switch strings.ToLower(name) {
	case "connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "http2-settings":
		return true
	}
	return false
}

// ParseHashOn parses a consistent-hash key: "header:NAME", "cookie:NAME" or
// "client_ip".
func ParseHashOn(s string) (kind, name string, err error) {
	if s == "client_ip" {
		return "client_ip", "", nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || (kind != "header" && kind != "cookie") || name == "" {
		return "", "", fmt.Errorf("invalid hash_on %q: use header:NAME, cookie:NAME or client_ip", s)
	}
	if kind == "header" && !headerNameRE.MatchString(name) {
		return "", "", fmt.Errorf("invalid header name %q in hash_on", name)
	}
	return kind, name, nil
}

// RetryOn is one parsed retry condition.
type RetryOn struct {
	Condition string // "connect_failure", "timeout", "reset" or "status"
	Status    int    // for "status"
}

// ParseRetryOn parses a retry condition.
func ParseRetryOn(s string) (RetryOn, error) {
	switch s {
	case "connect_failure", "timeout", "reset":
		return RetryOn{Condition: s}, nil
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 500 && n <= 599 {
		return RetryOn{Condition: "status", Status: n}, nil
	}
	return RetryOn{}, fmt.Errorf("unknown retry condition %q: use connect_failure, timeout, reset or a 5xx status code", s)
}

// ParseStatusRange parses "200-399" or "200".
func ParseStatusRange(s string) (lo, hi int, err error) {
	a, b, found := strings.Cut(s, "-")
	lo, err1 := strconv.Atoi(strings.TrimSpace(a))
	hi = lo
	var err2 error
	if found {
		hi, err2 = strconv.Atoi(strings.TrimSpace(b))
	}
	if err1 != nil || err2 != nil || lo < 100 || hi > 599 || lo > hi {
		return 0, 0, fmt.Errorf("invalid status range %q: use a code such as 200 or a range such as 200-399", s)
	}
	return lo, hi, nil
}

// rewritePathProblem says what is wrong with a rewrite path's literal text,
// which is a decoded path (the gateway escapes it), or "" if nothing is.
func rewritePathProblem(path string) string {
	switch {
	case strings.ContainsAny(path, "?#"):
		return "must be a path alone: the request's query is kept, and a fragment is never sent"
	case strings.Contains(path, "%"):
		return "must be written decoded, without %-escapes: the gateway escapes what needs it"
	}
	for _, seg := range strings.Split(path[1:], "/") {
		if seg == "." || seg == ".." {
			return "must not have . or .. segments: the upstream would resolve them elsewhere"
		}
	}
	for _, c := range []byte(path) {
		if c < 0x20 || c == 0x7f {
			return "must not hold control characters"
		}
	}
	return ""
}
