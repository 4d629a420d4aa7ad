package router

import (
	"cmp"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Table is a compiled, immutable route table. Build one with New whenever
// the configuration changes and publish it (for example through an
// atomic.Pointer); Match never locks and never writes, so any number of
// goroutines may call it concurrently.
type Table struct {
	routes    []Route          // canonical copies; Result.Route points here
	exact     map[string]*node // host tier 1: "api.example.com"
	wildcards map[string]*node // host tier 2, keyed by suffix ".example.com"
	anyHost   *node            // host tier 3: routes without Hosts; may be nil
	headers   bool             // some route has header conditions
}

// ReadsHeaders reports whether some route has header conditions: Match
// needs the request's header map only then.
func (t *Table) ReadsHeaders() bool { return t.headers }

// Result describes the winning route.
type Result struct {
	// Route is the table's canonical copy of the route (lower-case hosts,
	// canonical header names). Treat it as read-only: it is shared by all
	// requests.
	Route *Route
	// Index is the route's position in the slice given to New.
	Index int
	// Params holds the variables captured by a PathTemplate route, in
	// template order; nil when the route captured nothing.
	Params Params
}

// node is one segment-trie node. The depth of a node is the number of path
// segments consumed to reach it, where a path "/s1/s2/.../sn" has the n
// segments s1..sn (so "/" has one empty segment and "/a/" has "a" and "").
//
// Exact and prefix routes hang off nodes reached through literal children
// only; template routes may also pass through param children. The entry
// lists are sorted by (more conditions, lower index) at build time so the
// first entry whose conditions hold is the winner for that list.
type node struct {
	literal map[string]*node
	param   *node

	exact       []*entry // exact paths that end at this node
	prefix      []*entry // prefixes "/s1/.../sk": match at depth k, any rest
	prefixSlash []*entry // prefixes "/s1/.../sk/": need at least one more segment
	template    []*entry // templates whose last segment ends here
	catchAll    []*entry // templates whose catch-all starts below this node

	// templates is set when this subtree holds template entries, so the
	// template walk can skip branches that only carry exact or prefix
	// routes.
	templates bool
}

// entry is the compiled, per-route part of the table: the conditions that
// are checked after the path matched. One entry is shared by every host
// tier the route appears in.
type entry struct {
	route   *Route
	index   int
	conds   int // precedence rule 3: methods-present + headers + query
	methods []string
	headers []cond
	query   []cond
	params  []paramRef // capture plan for template routes
}

// paramRef says where a template variable is in a matching path: it is
// segment seg (0-based), or with rest everything from that segment on.
// Because the template fixes these positions, captures are extracted once
// for the winner instead of being tracked while the trie is searched.
type paramRef struct {
	name string
	seg  int
	rest bool
}

type condOp uint8

const (
	opExact condOp = iota
	opPrefix
	opRegex
	opPresent
)

// cond is a header or query matcher in a form that needs no nil checks.
type cond struct {
	name  string
	op    condOp
	value string
	re    *regexp.Regexp
}

func newCond(name, exact, prefix string, re *regexp.Regexp, present bool) cond {
	switch {
	case present:
		return cond{name: name, op: opPresent}
	case re != nil:
		return cond{name: name, op: opRegex, re: re}
	case prefix != "":
		return cond{name: name, op: opPrefix, value: prefix}
	}
	return cond{name: name, op: opExact, value: exact}
}

func (c *cond) matchValue(v string) bool {
	switch c.op {
	case opExact:
		return v == c.value
	case opPrefix:
		return strings.HasPrefix(v, c.value)
	case opRegex:
		return c.re.MatchString(v)
	}
	return true // opPresent: the value exists
}

// New validates routes and compiles them into a Table. The slice is copied;
// later changes to it do not affect the table. If any route is invalid, New
// returns a nil Table and one *RouteError per invalid route, joined.
func New(routes []Route) (*Table, error) {
	t := &Table{routes: make([]Route, len(routes))}
	var errs []error
	tmpls := make([]*Template, len(routes))
	for i, r := range routes {
		c, tmpl, err := canonRoute(r)
		if err != nil {
			errs = append(errs, &RouteError{Index: i, Err: err})
			continue
		}
		t.routes[i], tmpls[i] = c, tmpl
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}

	for i := range t.routes {
		r := &t.routes[i]
		e := newEntry(r, i, tmpls[i])
		if len(r.Hosts) == 0 {
			if t.anyHost == nil {
				t.anyHost = new(node)
			}
			t.anyHost.insert(e, r, tmpls[i])
		}
		for _, h := range r.Hosts {
			tier := &t.exact
			if suffix, ok := strings.CutPrefix(h, "*"); ok {
				tier, h = &t.wildcards, suffix // keep the dot: ".example.com"
			}
			if *tier == nil {
				*tier = make(map[string]*node)
			}
			root := (*tier)[h]
			if root == nil {
				root = new(node)
				(*tier)[h] = root
			}
			root.insert(e, r, tmpls[i])
		}
	}

	// Routes were inserted in index order, so a stable sort on the
	// condition count yields (more conditions, lower index) everywhere.
	byConds := func(a, b *entry) int { return cmp.Compare(b.conds, a.conds) }
	sortAll := func(root *node) {
		root.walk(func(n *node) {
			for _, l := range [][]*entry{n.exact, n.prefix, n.prefixSlash, n.template, n.catchAll} {
				slices.SortStableFunc(l, byConds)
			}
		})
	}
	for _, root := range t.exact {
		sortAll(root)
	}
	for _, root := range t.wildcards {
		sortAll(root)
	}
	if t.anyHost != nil {
		sortAll(t.anyHost)
	}
	for i := range t.routes {
		if len(t.routes[i].Headers) > 0 {
			t.headers = true
		}
	}
	return t, nil
}

func newEntry(r *Route, index int, tmpl *Template) *entry {
	e := &entry{route: r, index: index, methods: r.Methods}
	if len(r.Methods) > 0 {
		e.conds++
	}
	for _, h := range r.Headers {
		e.headers = append(e.headers, newCond(h.Name, h.Exact, h.Prefix, h.Regex, h.Present))
	}
	for _, q := range r.Query {
		e.query = append(e.query, newCond(q.Name, q.Exact, q.Prefix, q.Regex, q.Present))
	}
	e.conds += len(e.headers) + len(e.query)
	if tmpl != nil {
		for i, s := range tmpl.segs {
			if s.kind != segLiteral {
				e.params = append(e.params, paramRef{name: s.text, seg: i, rest: s.kind == segCatchAll})
			}
		}
	}
	return e
}

// insert attaches e to the trie rooted at root according to the path of r.
func (root *node) insert(e *entry, r *Route, tmpl *Template) {
	switch r.Kind {
	case PathExact:
		n := root.literalPath(strings.Split(r.Path[1:], "/"))
		n.exact = append(n.exact, e)
	case PathPrefix:
		switch {
		case r.Path == "/":
			root.prefixSlash = append(root.prefixSlash, e)
		case strings.HasSuffix(r.Path, "/"):
			n := root.literalPath(strings.Split(r.Path[1:len(r.Path)-1], "/"))
			n.prefixSlash = append(n.prefixSlash, e)
		default:
			n := root.literalPath(strings.Split(r.Path[1:], "/"))
			n.prefix = append(n.prefix, e)
		}
	case PathTemplate:
		n := root
		for _, s := range tmpl.segs {
			n.templates = true
			switch s.kind {
			case segLiteral:
				n = n.child(s.text)
			case segParam:
				if n.param == nil {
					n.param = new(node)
				}
				n = n.param
			case segCatchAll:
				n.catchAll = append(n.catchAll, e)
				return // a catch-all is always last
			}
		}
		n.templates = true
		n.template = append(n.template, e)
	}
}

func (n *node) child(seg string) *node {
	c := n.literal[seg]
	if c == nil {
		if n.literal == nil {
			n.literal = make(map[string]*node)
		}
		c = new(node)
		n.literal[seg] = c
	}
	return c
}

func (n *node) literalPath(segs []string) *node {
	for _, s := range segs {
		n = n.child(s)
	}
	return n
}

func (n *node) walk(fn func(*node)) {
	fn(n)
	for _, c := range n.literal {
		c.walk(fn)
	}
	if n.param != nil {
		n.param.walk(fn)
	}
}

// Match returns the highest-precedence route whose host, path, method,
// header and query conditions all hold for the request.
//
// host should be the request host, lower-cased and without port; Match
// normalises it again cheaply (no allocation when it is already clean).
// path is the decoded, normalised request path and is matched exactly as
// given; a path that does not start with '/' (such as "*") matches
// nothing. r supplies the method, headers and, only when a candidate route
// has query matchers, r.URL.RawQuery. A nil r behaves like a request
// without method, headers or query.
//
// Match allocates only to return captured template parameters (one slice),
// to lower-case a host the caller did not lower-case, or to decode query
// parameters that contain escapes.
func (t *Table) Match(r *http.Request, host, path string) (Result, bool) {
	if path == "" || path[0] != '/' {
		return Result{}, false
	}
	host = normalizeHost(host)

	e := (*entry)(nil)
	if root := t.exact[host]; root != nil {
		e = root.match(r, path)
	}
	if e == nil && len(t.wildcards) > 0 {
		// Suffixes starting at successive dots get shorter, so the first
		// hit is the longest matching wildcard. i starts at 1 because a
		// wildcard needs at least one extra label before the suffix.
		for i := 1; i < len(host) && e == nil; i++ {
			if host[i] == '.' {
				if root := t.wildcards[host[i:]]; root != nil {
					e = root.match(r, path)
				}
			}
		}
	}
	if e == nil && t.anyHost != nil {
		e = t.anyHost.match(r, path)
	}
	if e == nil {
		return Result{}, false
	}
	res := Result{Route: e.route, Index: e.index}
	if len(e.params) > 0 {
		res.Params = e.capture(path)
	}
	return res, true
}

// match searches one host tier in path precedence order: exact, then
// templates (most specific first), then prefixes (longest first).
func (root *node) match(r *http.Request, path string) *entry {
	// Follow literal children as far as the path goes. The chain of
	// visited nodes serves both the exact check (if the walk consumed the
	// whole path) and the prefix check (deepest node first). Paths deeper
	// than the array spill to the heap, which is rare and still correct.
	var buf [16]*node
	chain := append(buf[:0], root)
	n, pos, full := root, 1, false
	for {
		seg, next := nextSegment(path, pos)
		c := n.literal[seg]
		if c == nil {
			break
		}
		n = c
		chain = append(chain, n)
		if next > len(path) {
			full = true
			break
		}
		pos = next
	}

	if full {
		if e := firstMatch(n.exact, r); e != nil {
			return e
		}
	}
	if root.templates {
		if e := root.matchTemplate(r, path, 1); e != nil {
			return e
		}
	}
	// chain[k] has depth k. A trailing-slash prefix at depth k needs a
	// segment k+1, which exists unless k is the depth of the whole path.
	for k := len(chain) - 1; k >= 0; k-- {
		if !full || k < len(chain)-1 {
			if e := firstMatch(chain[k].prefixSlash, r); e != nil {
				return e
			}
		}
		if e := firstMatch(chain[k].prefix, r); e != nil {
			return e
		}
	}
	return nil
}

// matchTemplate searches the template routes below n, where pos is the
// start of the next unconsumed segment (len(path)+1 once all segments are
// consumed). Trying the literal child, then the param child, then the
// catch-all visits templates in exactly the precedence order of rule 2,
// so the first entry whose conditions hold wins. Every trie node sits at
// one depth and the path has one segment per depth, so each node is
// visited at most once: the search is bounded by the trie, not
// exponential.
func (n *node) matchTemplate(r *http.Request, path string, pos int) *entry {
	if pos > len(path) {
		return firstMatch(n.template, r)
	}
	seg, next := nextSegment(path, pos)
	if c := n.literal[seg]; c != nil && c.templates {
		if e := c.matchTemplate(r, path, next); e != nil {
			return e
		}
	}
	if n.param != nil && seg != "" {
		if e := n.param.matchTemplate(r, path, next); e != nil {
			return e
		}
	}
	if pos < len(path) { // the catch-all needs a non-empty rest
		return firstMatch(n.catchAll, r)
	}
	return nil
}

// nextSegment returns the segment starting at pos and the start of the one
// after it; the latter is len(path)+1 when seg is the last segment.
func nextSegment(path string, pos int) (seg string, next int) {
	seg = path[pos:]
	if i := strings.IndexByte(seg, '/'); i >= 0 {
		seg = seg[:i]
	}
	return seg, pos + len(seg) + 1
}

// capture extracts the template variables of e from a path it matched.
func (e *entry) capture(path string) Params {
	ps := make(Params, len(e.params))
	seg, pos := 0, 1
	for i, ref := range e.params {
		for ; seg < ref.seg; seg++ {
			_, pos = nextSegment(path, pos)
		}
		v := path[pos:]
		if !ref.rest {
			v, _ = nextSegment(path, pos)
		}
		ps[i] = Param{Name: ref.name, Value: v, Off: pos}
	}
	return ps
}

func firstMatch(list []*entry, r *http.Request) *entry {
	for _, e := range list {
		if e.conditionsHold(r) {
			return e
		}
	}
	return nil
}

// conditionsHold checks method, headers and query, cheapest first.
func (e *entry) conditionsHold(r *http.Request) bool {
	if e.conds == 0 {
		return true
	}
	if r == nil {
		return false
	}
	if len(e.methods) > 0 {
		m := r.Method
		if m == "" {
			m = http.MethodGet // net/http: empty means GET
		}
		// HEAD is GET without a body (RFC 9110 9.3.2): a GET route
		// answers it too, as net/http's ServeMux does.
		if !slices.Contains(e.methods, m) && (m != http.MethodHead || !slices.Contains(e.methods, http.MethodGet)) {
			return false
		}
	}
	for i := range e.headers {
		c := &e.headers[i]
		// Names are canonical, and so are the keys net/http stores, so a
		// direct map read avoids Header.Values' re-canonicalisation.
		if !c.anyValue(r.Header[c.name]) {
			return false
		}
	}
	if len(e.query) > 0 {
		raw := ""
		if r.URL != nil {
			raw = r.URL.RawQuery
		}
		for i := range e.query {
			if !e.query[i].matchQuery(raw) {
				return false
			}
		}
	}
	return true
}

func (c *cond) anyValue(vals []string) bool {
	for _, v := range vals {
		if c.matchValue(v) {
			return true
		}
	}
	return false
}

// maxQueryParams mirrors net/url's default limit: url.ParseQuery treats a
// query with more parameters as empty, and so does the router, which also
// bounds the work an attacker can cause per matcher.
const maxQueryParams = 10000

// matchQuery reports whether any value of the query parameter c.name in raw
// satisfies c. It walks the raw query instead of calling r.URL.Query so
// that matching allocates nothing unless a pair needs unescaping, while
// keeping url.ParseQuery's semantics: '&' separates pairs, pairs containing
// ';' or failing to unescape are skipped.
func (c *cond) matchQuery(raw string) bool {
	if raw == "" || strings.Count(raw, "&")+1 > maxQueryParams {
		return false
	}
	for raw != "" {
		var pair string
		pair, raw, _ = strings.Cut(raw, "&")
		if pair == "" || strings.IndexByte(pair, ';') >= 0 {
			continue
		}
		k, v, _ := strings.Cut(pair, "=")
		k, ok := queryUnescape(k)
		if !ok || k != c.name {
			continue
		}
		if v, ok = queryUnescape(v); ok && c.matchValue(v) {
			return true
		}
	}
	return false
}

func queryUnescape(s string) (string, bool) {
	if strings.IndexByte(s, '%') < 0 && strings.IndexByte(s, '+') < 0 {
		return s, true
	}
	u, err := url.QueryUnescape(s)
	return u, err == nil
}

// normalizeHost lower-cases h and strips a port and a trailing dot. An
// IPv6 literal, bracketed or not ("[::1]:8080", "[0:0::1]", "::1"), becomes
// its canonical bracketed form ("[::1]"), as canonRouteHost stores it. It
// returns h itself, without allocating, when there is nothing to do.
func normalizeHost(h string) string {
	if i := strings.LastIndexByte(h, ':'); i >= 0 {
		switch {
		case strings.HasPrefix(h, "["):
			if j := strings.IndexByte(h, ']'); j >= 0 {
				return canonIPv6(h[1:j], h[:j+1]) // "[::1]:8080" -> "[::1]"
			}
		case strings.IndexByte(h, ':') == i:
			h = h[:i] // "example.com:8080"
		default:
			return canonIPv6(h, h) // a bare IPv6 literal
		}
	}
	h = strings.TrimSuffix(h, ".")
	return strings.ToLower(h) // returns h unchanged if already lower-case
}

// canonIPv6 returns "[addr]" in canonical form if addr is an IPv6 address,
// else fallback lower-cased.
func canonIPv6(addr, fallback string) string {
	if a, err := netip.ParseAddr(addr); err == nil && a.Is6() && a.Zone() == "" {
		return "[" + a.String() + "]"
	}
	return strings.ToLower(fallback)
}
