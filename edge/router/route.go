package router

import (
	"errors"
	"fmt"
	"net/netip"
	"net/textproto"
	"regexp"
	"slices"
	"strings"
)

// PathKind says how Route.Path is compared with the request path.
type PathKind uint8

const (
	// PathExact matches the path byte for byte. It is the zero value, so a
	// route that forgets to set Kind matches less, not more.
	PathExact PathKind = iota
	// PathPrefix matches the path and everything below it, on '/'
	// boundaries: "/api" matches "/api", "/api/" and "/api/x" but not
	// "/apix"; "/api/" matches "/api/" and "/api/x" but not "/api"; "/"
	// matches every path.
	PathPrefix
	// PathTemplate matches a template such as "/users/{id}" or
	// "/files/{path...}"; see ParseTemplate for the syntax.
	PathTemplate
)

// String returns the Go name of the kind, for error messages and logs.
func (k PathKind) String() string {
	switch k {
	case PathExact:
		return "PathExact"
	case PathPrefix:
		return "PathPrefix"
	case PathTemplate:
		return "PathTemplate"
	}
	return fmt.Sprintf("PathKind(%d)", uint8(k))
}

// HeaderMatch requires a request header. Set exactly one of Exact, Prefix
// or Regex, or set Present alone to only require that the header exists.
// (An empty Exact or Prefix counts as unset, so "header is present with an
// empty value" is expressed as Regex ^$.) A header sent several times
// matches if any of its values matches; values are not split on commas.
type HeaderMatch struct {
	// Name is canonicalised by New (textproto.CanonicalMIMEHeaderKey).
	// "Host" is rejected because net/http moves it out of the header map;
	// use Route.Hosts.
	Name   string
	Exact  string
	Prefix string
	// Regex is called with MatchString on each value; anchor it (^...$)
	// if the whole value must match.
	Regex   *regexp.Regexp
	Present bool
}

// QueryMatch requires a query parameter, with the same rules as
// HeaderMatch. Names and values are compared after URL-decoding, exactly
// as url.ParseQuery would decode them.
type QueryMatch struct {
	Name    string
	Exact   string
	Prefix  string
	Regex   *regexp.Regexp
	Present bool
}

// Route is one entry of the table. All of its conditions must hold for it
// to match; see the package documentation for how competing routes are
// ranked.
type Route struct {
	// Hosts lists "api.example.com" (exact) or "*.example.com" (wildcard:
	// one or more extra labels, so a.example.com and a.b.example.com but
	// not example.com). Empty means any host. Names are case-insensitive
	// and must not carry a port.
	Hosts   []string
	Path    string
	Kind    PathKind
	Methods []string // upper-case method tokens; empty means any method
	Headers []HeaderMatch
	Query   []QueryMatch
	// Value is the caller's payload, handed back untouched on a match.
	Value any
}

// RouteError reports why New rejected a route. New returns all of them,
// joined with errors.Join, so a config loader can report every mistake at
// once and map Index back to its source location.
type RouteError struct {
	Index int // position in the slice given to New
	Err   error
}

func (e *RouteError) Error() string { return fmt.Sprintf("router: route %d: %v", e.Index, e.Err) }
func (e *RouteError) Unwrap() error { return e.Err }

// canonRoute validates r and returns the canonical copy that the table
// keeps (lower-case hosts without duplicates, canonical header names), plus
// the parsed template for PathTemplate routes.
func canonRoute(r Route) (Route, *Template, error) {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	c := r
	c.Hosts = nil
	for _, h := range r.Hosts {
		canon, err := canonRouteHost(h)
		if err != nil {
			fail("host %q: %v", h, err)
			continue
		}
		if !slices.Contains(c.Hosts, canon) {
			c.Hosts = append(c.Hosts, canon)
		}
	}

	var tmpl *Template
	switch r.Kind {
	case PathExact, PathPrefix:
		if !strings.HasPrefix(r.Path, "/") {
			fail("path %q: must start with '/'", r.Path)
		}
	case PathTemplate:
		t, err := parseTemplate(r.Path)
		if err != nil {
			fail("path template %q: %v", r.Path, err)
		}
		tmpl = t
	default:
		fail("unknown path kind %v", r.Kind)
	}

	c.Methods = nil
	for _, m := range r.Methods {
		if !isToken(m) || strings.ToUpper(m) != m {
			fail("method %q: want an upper-case HTTP token such as GET", m)
			continue
		}
		if !slices.Contains(c.Methods, m) {
			c.Methods = append(c.Methods, m)
		}
	}

	c.Headers = make([]HeaderMatch, len(r.Headers))
	for i, h := range r.Headers {
		if !isToken(h.Name) {
			fail("header %d: invalid name %q", i, h.Name)
		}
		h.Name = textproto.CanonicalMIMEHeaderKey(h.Name)
		if h.Name == "Host" {
			fail("header %d: Host cannot be matched as a header (net/http removes it); match on hosts instead", i)
		}
		if err := checkCriterion(h.Exact, h.Prefix, h.Regex, h.Present); err != nil {
			fail("header %d (%s): %v", i, h.Name, err)
		}
		c.Headers[i] = h
	}

	c.Query = append([]QueryMatch(nil), r.Query...)
	for i, q := range r.Query {
		if q.Name == "" {
			fail("query %d: empty name", i)
		}
		if err := checkCriterion(q.Exact, q.Prefix, q.Regex, q.Present); err != nil {
			fail("query %d (%s): %v", i, q.Name, err)
		}
	}
	return c, tmpl, errors.Join(errs...)
}

// checkCriterion enforces "exactly one of Exact/Prefix/Regex, or Present
// alone", shared by headers and query parameters.
func checkCriterion(exact, prefix string, re *regexp.Regexp, present bool) error {
	n := 0
	if exact != "" {
		n++
	}
	if prefix != "" {
		n++
	}
	if re != nil {
		n++
	}
	switch {
	case present && n > 0:
		return errors.New("the criterion Present must be used alone, without Exact, Prefix or Regex")
	case !present && n == 0:
		return errors.New("no criterion: set one of Exact, Prefix, Regex or Present")
	case n > 1:
		return errors.New("set only one of Exact, Prefix and Regex")
	}
	return nil
}

// canonRouteHost validates a configured host and returns it lower-cased
// with any trailing dot removed, the same form normalizeHost produces for
// request hosts.
func canonRouteHost(h string) (string, error) {
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if h == "*" {
		return "", errors.New(`"*" is not a host pattern; leave Hosts empty to match any host`)
	}
	name, wildcard := strings.CutPrefix(h, "*.")
	if strings.HasPrefix(name, "[") || strings.Count(name, ":") > 1 {
		// An IPv6 literal, "[::1]" or "::1": stored bracketed and in
		// canonical form, as normalizeHost turns request hosts.
		if wildcard {
			return "", errors.New("wildcard of an IP literal")
		}
		lit := name
		if strings.HasPrefix(name, "[") {
			if !strings.HasSuffix(name, "]") {
				return "", errors.New("invalid bracketed IPv6 literal")
			}
			lit = name[1 : len(name)-1]
		}
		a, err := netip.ParseAddr(lit)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", errors.New("invalid IPv6 literal")
		}
		return "[" + a.String() + "]", nil
	}
	if err := checkHostname(name); err != nil {
		return "", err
	}
	return h, nil
}

// checkHostname accepts DNS names and IPv4 literals: dot-separated labels of
// 1-63 characters from [a-z0-9-_] (underscore appears in real service
// names), 253 characters at most. Ports, '*' in other positions and empty
// labels are the mistakes this catches.
func checkHostname(name string) error {
	if name == "" {
		return errors.New("empty host name")
	}
	if len(name) > 253 {
		return errors.New("host name longer than 253 characters")
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return fmt.Errorf("label %q must be 1 to 63 characters", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				if c == ':' {
					return errors.New("must not include a port")
				}
				if c == '*' {
					return errors.New(`'*' is only allowed as a leading "*." label`)
				}
				return fmt.Errorf("invalid character %q", c)
			}
		}
	}
	return nil
}

// isToken reports whether s is a non-empty RFC 9110 token, the grammar of
// both method names and header field names.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' {
			continue
		}
		if !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}
