package router

import (
	"net/http"
	"net/textproto"
	"slices"
	"strings"
)

// This file holds a deliberately simple reference matcher: a linear scan
// over all routes that computes each candidate's precedence key straight
// from the rules in the package documentation and keeps the smallest. It
// shares no matching code with the Table (only normalizeHost, which has
// its own tests), so agreement between the two is meaningful evidence.

type refKey struct {
	hostTier  int       // 0 exact host, 1 wildcard, 2 no hosts
	suffixLen int       // wildcard suffix length; longer wins
	pathClass int       // 0 exact, 1 template, 2 prefix
	kinds     []segKind // template segment kinds
	prefixLen int       // longer wins
	conds     int       // more wins
	index     int       // lower wins
}

// refLess reports whether a has precedence over b.
func refLess(a, b refKey) bool {
	if a.hostTier != b.hostTier {
		return a.hostTier < b.hostTier
	}
	if a.suffixLen != b.suffixLen {
		return a.suffixLen > b.suffixLen
	}
	if a.pathClass != b.pathClass {
		return a.pathClass < b.pathClass
	}
	for i := 0; i < len(a.kinds) && i < len(b.kinds); i++ {
		if a.kinds[i] != b.kinds[i] {
			return a.kinds[i] < b.kinds[i]
		}
	}
	if len(a.kinds) != len(b.kinds) {
		return len(a.kinds) > len(b.kinds)
	}
	if a.prefixLen != b.prefixLen {
		return a.prefixLen > b.prefixLen
	}
	if a.conds != b.conds {
		return a.conds > b.conds
	}
	return a.index < b.index
}

func refMatch(routes []Route, r *http.Request, host, path string) (Result, bool) {
	if !strings.HasPrefix(path, "/") {
		return Result{}, false
	}
	host = normalizeHost(host)
	best, found := Result{}, false
	var bestKey refKey
	for i := range routes {
		rt := &routes[i]
		key := refKey{index: i}
		var ok bool
		if key.hostTier, key.suffixLen, ok = refHost(rt.Hosts, host); !ok {
			continue
		}
		var params Params
		if key.pathClass, key.kinds, key.prefixLen, params, ok = refPath(rt, path); !ok {
			continue
		}
		if key.conds, ok = refConds(rt, r); !ok {
			continue
		}
		if !found || refLess(key, bestKey) {
			best, bestKey, found = Result{Route: rt, Index: i, Params: params}, key, true
		}
	}
	return best, found
}

func refHost(hosts []string, host string) (tier, suffixLen int, ok bool) {
	if len(hosts) == 0 {
		return 2, 0, true
	}
	tier = 3
	for _, h := range hosts {
		h = strings.TrimSuffix(strings.ToLower(h), ".")
		if h == host {
			return 0, 0, true
		}
		if s, wild := strings.CutPrefix(h, "*"); wild && strings.HasSuffix(host, s) && len(host) > len(s) {
			if tier == 3 || len(s) > suffixLen {
				tier, suffixLen = 1, len(s)
			}
		}
	}
	return tier, suffixLen, tier < 3
}

func refPath(rt *Route, path string) (class int, kinds []segKind, prefixLen int, params Params, ok bool) {
	switch rt.Kind {
	case PathExact:
		return 0, nil, 0, nil, path == rt.Path
	case PathPrefix:
		p := rt.Path
		ok = p == "/" || path == p ||
			strings.HasPrefix(path, p) && (strings.HasSuffix(p, "/") || path[len(p)] == '/')
		return 2, nil, len(p), nil, ok
	}
	tsegs := strings.Split(rt.Path[1:], "/")
	psegs := strings.Split(path[1:], "/")
	off := 1 // where psegs[i] starts in path
	for i, ts := range tsegs {
		if i >= len(psegs) {
			return 0, nil, 0, nil, false
		}
		if i > 0 {
			off += len(psegs[i-1]) + 1
		}
		switch {
		case strings.HasSuffix(ts, "...}"):
			rest := strings.Join(psegs[i:], "/")
			if rest == "" {
				return 0, nil, 0, nil, false
			}
			kinds = append(kinds, segCatchAll)
			params = append(params, Param{ts[1 : len(ts)-4], rest, off})
			return 1, kinds, 0, params, true
		case strings.HasPrefix(ts, "{"):
			if psegs[i] == "" {
				return 0, nil, 0, nil, false
			}
			kinds = append(kinds, segParam)
			params = append(params, Param{ts[1 : len(ts)-1], psegs[i], off})
		default:
			if psegs[i] != ts {
				return 0, nil, 0, nil, false
			}
			kinds = append(kinds, segLiteral)
		}
	}
	if len(psegs) != len(tsegs) {
		return 0, nil, 0, nil, false
	}
	return 1, kinds, 0, params, true
}

func refConds(rt *Route, r *http.Request) (int, bool) {
	n := len(rt.Headers) + len(rt.Query)
	if len(rt.Methods) > 0 {
		n++
	}
	if n == 0 {
		return 0, true
	}
	if r == nil {
		return n, false
	}
	if len(rt.Methods) > 0 {
		m := r.Method
		if m == "" {
			m = "GET"
		}
		// HEAD is GET without a body (RFC 9110 9.3.2): a GET route
		// answers it too, as net/http's ServeMux does.
		if !slices.Contains(rt.Methods, m) && (m != http.MethodHead || !slices.Contains(rt.Methods, http.MethodGet)) {
			return n, false
		}
	}
	for _, h := range rt.Headers {
		vals := r.Header.Values(textproto.CanonicalMIMEHeaderKey(h.Name))
		if !refAny(vals, h.Exact, h.Prefix, h.Regex != nil, h.Present, func(v string) bool { return h.Regex.MatchString(v) }) {
			return n, false
		}
	}
	if len(rt.Query) > 0 {
		q := r.URL.Query()
		for _, m := range rt.Query {
			if !refAny(q[m.Name], m.Exact, m.Prefix, m.Regex != nil, m.Present, func(v string) bool { return m.Regex.MatchString(v) }) {
				return n, false
			}
		}
	}
	return n, true
}

func refAny(vals []string, exact, prefix string, hasRe, present bool, re func(string) bool) bool {
	for _, v := range vals {
		switch {
		case present:
			return true
		case hasRe:
			if re(v) {
				return true
			}
		case prefix != "":
			if strings.HasPrefix(v, prefix) {
				return true
			}
		default:
			if v == exact {
				return true
			}
		}
	}
	return false
}
