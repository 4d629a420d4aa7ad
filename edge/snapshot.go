package edge

import (
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meridian-gw/meridian/edge/config"
	"github.com/meridian-gw/meridian/edge/router"
	"github.com/meridian-gw/meridian/edge/upstream"
	"github.com/meridian-gw/meridian/internal/smallfile"
)

// Defaults used when the gateway document leaves a value at zero.
const (
	DefaultConnectTimeout        = 5 * time.Second
	DefaultResponseHeaderTimeout = 30 * time.Second
	DefaultSendTimeout           = 60 * time.Second
	DefaultReadTimeout           = 60 * time.Second
	DefaultMaxRequestBody        = 10 << 20
	defaultRetryAttempts         = 2
	defaultRetryRatio            = 0.2
	defaultRetryMinPerSecond     = 10
	defaultBackoffBase           = 25 * time.Millisecond
	defaultBackoffMax            = 250 * time.Millisecond
	// retryBufferLimit is the largest request body kept in memory so that
	// the request can be retried. Larger bodies are streamed and never
	// retried.
	retryBufferLimit = 64 << 10
)

// Snapshot is one compiled, immutable version of the gateway document: the
// route table, the upstream pools and every per-route setting, ready for the
// hot path. A Gateway serves from exactly one Snapshot at a time and swaps
// to the next atomically; requests that started on a Snapshot finish on it.
type Snapshot struct {
	// Version increases by one with every applied document.
	Version uint64
	// Hash is the document's content hash (config.Document.Hash).
	Hash string
	// Raw is the document exactly as it was applied (YAML or JSON).
	Raw []byte
	// Doc is the parsed document. Read-only.
	Doc *config.Document
	// AppliedAt is when the snapshot was compiled.
	AppliedAt time.Time

	table    *router.Table
	routes   []*route
	services map[string]*service
	order    []*service // document order, for listings
	stopOnce sync.Once
}

type route struct {
	name        string
	svc         *service
	rewritePath *router.Template
	stripPrefix string
	hostRewrite string
	reqOps      headerOps
	respOps     headerOps
	maxReqBody  int64
	maxRespBody int64
	// allowPlainHTTP: served on the plain listener rather than redirected.
	allowPlainHTTP bool
	// allowTrace: the route names TRACE in its methods; other routes refuse
	// it (an upstream echoing the request would show what the gateway
	// added to it, as nginx and Kong refuse it too).
	allowTrace bool
	// allow is the route's methods as an Allow field says them, "" for
	// a route that takes any.
	allow string
	stats *routeStats
	// lean: requests the lean HTTP/1 path takes (h1lean.go) go out with
	// their heads copied from the client's, as received but for the
	// path's rewrite or strip and the header edits (a service whose every
	// target gets the path as the route makes it).
	lean bool
}

type service struct {
	name      string
	pool      *upstream.Pool
	transport upstreamTransport
	tkey      transportKey // transport's key in Gateway.transports
	h2        bool
	total     time.Duration
	read      time.Duration // the wait for more of a response body (config.Timeouts.Read)
	retry     *retryPolicy
	// The fields of proxy_headers turned off (config.ProxyHeaders).
	noForwarded, noXForwarded, noVia, noRequestID, noTraceparent bool
	// lean: the HTTP/1 transport, every target plain HTTP with no path
	// of its own (the request target goes out as received).
	lean bool
}

type headerOps struct {
	remove []string
	set    [][2]string
	add    [][2]string
}

func (o *headerOps) empty() bool { return len(o.remove)+len(o.set)+len(o.add) == 0 }

// orNil is o, or nil when it does nothing.
func (o *headerOps) orNil() *headerOps {
	if o.empty() {
		return nil
	}
	return o
}

// touches reports whether the operations remove or replace the field
// name (in any case): its values, received or the gateway's, do not go on.
func (o *headerOps) touches(name []byte) bool {
	for _, k := range o.remove {
		if asciiEqualFold(name, k) {
			return true
		}
	}
	for _, kv := range o.set {
		if asciiEqualFold(name, kv[0]) {
			return true
		}
	}
	return false
}

// keeps reports whether the gateway's own field k (canonical) goes on: o
// is nil, or neither removes nor replaces it.
func (o *headerOps) keeps(k string) bool {
	if o == nil {
		return true
	}
	if slices.Contains(o.remove, k) {
		return false
	}
	for _, kv := range o.set {
		if kv[0] == k {
			return false
		}
	}
	return true
}

// mentions reports whether an operation names k (canonical).
func (o *headerOps) mentions(k string) bool {
	if slices.Contains(o.remove, k) {
		return true
	}
	for _, kv := range o.set {
		if kv[0] == k {
			return true
		}
	}
	for _, kv := range o.add {
		if kv[0] == k {
			return true
		}
	}
	return false
}

// appendLines appends the fields set and added, as field lines: after the
// values that stay, as apply and applyOut leave them.
func (o *headerOps) appendLines(b []byte) []byte {
	for _, kv := range o.set {
		b = appendField(b, kv[0], kv[1])
	}
	for _, kv := range o.add {
		b = appendField(b, kv[0], kv[1])
	}
	return b
}

// asciiEqualFold reports whether b and s are equal under ASCII case
// folding.
func asciiEqualFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// applyOut applies the operations to an outbound request's header.
func (o *headerOps) applyOut(h *outHeader) {
	for _, k := range o.remove {
		h.del(k)
	}
	for _, kv := range o.set {
		h.set(kv[0], kv[1])
	}
	for _, kv := range o.add {
		h.add(kv[0], kv[1])
	}
}

func (o *headerOps) apply(h http.Header) {
	for _, k := range o.remove {
		delete(h, k)
	}
	for _, kv := range o.set {
		h[kv[0]] = []string{kv[1]}
	}
	for _, kv := range o.add {
		h[kv[0]] = append(h[kv[0]], kv[1])
	}
}

func compileHeaderOps(c config.HeaderOps) headerOps {
	var o headerOps
	for _, k := range c.Remove {
		o.remove = append(o.remove, textproto.CanonicalMIMEHeaderKey(k))
	}
	for _, k := range sortedKeys(c.Set) {
		o.set = append(o.set, [2]string{textproto.CanonicalMIMEHeaderKey(k), c.Set[k]})
	}
	for _, k := range sortedKeys(c.Add) {
		o.add = append(o.add, [2]string{textproto.CanonicalMIMEHeaderKey(k), c.Add[k]})
	}
	return o
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

// CompileInput is what Compile needs besides the document.
type CompileInput struct {
	Version uint64
	Raw     []byte
	// Hash overrides the document's content hash (when the document
	// compiled is a rewritten copy of the one applied).
	Hash string
	// Prev is the snapshot being replaced, if any: target health and
	// ejection state carry over to the new pools of same-named services.
	Prev *Snapshot
}

// Compile turns a validated document into a Snapshot. It does not start
// anything: call Gateway.Swap, which starts the new snapshot's health
// checks and stops the old one's. An error leaves nothing behind.
func (g *Gateway) Compile(doc *config.Document, in CompileInput) (*Snapshot, error) {
	if err := doc.Validate(); err != nil {
		return nil, err
	}
	s := &Snapshot{
		Version:   in.Version,
		Hash:      in.Hash,
		Raw:       in.Raw,
		Doc:       doc,
		AppliedAt: time.Now(),
		services:  make(map[string]*service, len(doc.Services)),
	}
	if s.Hash == "" {
		s.Hash = doc.Hash()
	}
	// Every error is collected, as Validate does, so that one pass shows
	// them all.
	var errs config.Errors
	for i := range doc.Services {
		svc, err := g.compileService(&doc.Services[i], in.Prev)
		if err != nil {
			// Pools are not started yet, so there is nothing to stop.
			path := fmt.Sprintf("services[%d]", i)
			if fe, ok := errors.AsType[*configFieldError](err); ok {
				path += "." + fe.field
			}
			errs = append(errs, &config.FieldError{Path: path, Msg: err.Error()})
			continue
		}
		s.services[svc.name] = svc
		s.order = append(s.order, svc)
	}
	rts := make([]router.Route, 0, len(doc.Routes))
	index := make([]int, 0, len(doc.Routes)) // rts[k] is routes[index[k]]
	s.routes = make([]*route, len(doc.Routes))
	for i := range doc.Routes {
		rc := &doc.Routes[i]
		rr, err := compileMatch(&rc.Match)
		if err != nil {
			errs = append(errs, &config.FieldError{Path: fmt.Sprintf("routes[%d].match", i), Msg: err.Error()})
			continue
		}
		rt := &route{
			name:           rc.Name,
			svc:            s.services[rc.Service],
			reqOps:         compileHeaderOps(rc.RequestHeaders),
			respOps:        compileHeaderOps(rc.ResponseHeaders),
			maxReqBody:     int64(rc.Limits.MaxRequestBody),
			maxRespBody:    int64(rc.Limits.MaxResponseBody),
			allowPlainHTTP: rc.AllowPlainHTTP,
			allowTrace:     slices.Contains(rc.Match.Methods, http.MethodTrace),
			allow:          strings.Join(rc.Match.Methods, ", "),
			stats:          g.metrics.route(rc.Name),
		}
		if rt.maxReqBody == 0 {
			rt.maxReqBody = g.opts.MaxRequestBody
		}
		if rw := rc.Rewrite; rw != nil {
			if rw.Path != "" {
				t, err := router.ParseTemplate(rw.Path)
				if err != nil {
					errs = append(errs, &config.FieldError{Path: fmt.Sprintf("routes[%d].rewrite.path", i), Msg: err.Error()})
					continue
				}
				rt.rewritePath = t
			}
			if rw.StripPrefix {
				rt.stripPrefix = strings.TrimSuffix(rc.Match.PathPrefix, "/")
			}
			rt.hostRewrite = rw.Host
		}
		// Header edits are made on the lean head and answer too, but for
		// the answer's Via and Alt-Svc, which the gateway and the
		// listener write after the upstream's fields.
		rt.lean = rt.svc != nil && rt.svc.lean && !rt.respOps.mentions("Via") && !rt.respOps.mentions("Alt-Svc") &&
			(notLean == nil || !notLean(rt.name))
		rr.Value = rt
		rts = append(rts, rr)
		index = append(index, i)
		s.routes[i] = rt
	}
	t, err := router.New(rts)
	if err != nil {
		// router.New joins one *RouteError per bad route.
		var list []error
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			list = j.Unwrap()
		} else {
			list = []error{err}
		}
		for _, e := range list {
			var re *router.RouteError
			if errors.As(e, &re) && re.Index >= 0 && re.Index < len(index) {
				errs = append(errs, &config.FieldError{Path: fmt.Sprintf("routes[%d].match", index[re.Index]), Msg: re.Err.Error()})
			} else {
				errs = append(errs, &config.FieldError{Path: "routes", Msg: e.Error()})
			}
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	s.table = t
	return s, nil
}

func compileMatch(m *config.Match) (router.Route, error) {
	r := router.Route{Hosts: m.Hosts, Methods: m.Methods}
	switch {
	case m.Path != "" && strings.Contains(m.Path, "{"):
		r.Kind, r.Path = router.PathTemplate, m.Path
	case m.Path != "":
		r.Kind, r.Path = router.PathExact, m.Path
	case m.PathPrefix != "":
		r.Kind, r.Path = router.PathPrefix, m.PathPrefix
	default:
		r.Kind, r.Path = router.PathPrefix, "/"
	}
	for _, h := range m.Headers {
		re, err := anchored(h.Regex)
		if err != nil {
			return r, err
		}
		r.Headers = append(r.Headers, router.HeaderMatch{Name: h.Name, Exact: h.Exact, Prefix: h.Prefix, Regex: re, Present: h.Exact == "" && h.Prefix == "" && re == nil})
	}
	for _, q := range m.Query {
		re, err := anchored(q.Regex)
		if err != nil {
			return r, err
		}
		r.Query = append(r.Query, router.QueryMatch{Name: q.Name, Exact: q.Exact, Prefix: q.Prefix, Regex: re, Present: q.Exact == "" && q.Prefix == "" && re == nil})
	}
	return r, nil
}

func anchored(re string) (*regexp.Regexp, error) {
	if re == "" {
		return nil, nil
	}
	return regexp.Compile("^(?:" + re + ")$")
}

func (g *Gateway) compileService(c *config.Service, prev *Snapshot) (*service, error) {
	spec := upstream.Spec{
		Service:       c.Name,
		Balancer:      upstream.BalancerKind(c.Balancer.Policy),
		MaxConcurrent: c.MaxConcurrentRequests,
	}
	for _, t := range c.Targets {
		u, err := url.Parse(t.URL)
		if err != nil {
			return nil, err
		}
		region := t.Region
		if region == "" {
			region = g.opts.Region
		}
		var weight int // the default, 1
		if t.Weight != nil {
			weight = *t.Weight
		}
		spec.Targets = append(spec.Targets, upstream.TargetSpec{URL: u, Weight: weight, Region: region})
	}
	if c.Balancer.HashOn != "" {
		kind, name, err := config.ParseHashOn(c.Balancer.HashOn)
		if err != nil {
			return nil, err
		}
		spec.HashOn = upstream.HashSource{Kind: kind, Name: name}
	}
	if h := c.HealthCheck; h != nil {
		hs := &upstream.HealthCheckSpec{
			Path: h.Path, Host: h.Host, Interval: h.Interval, Timeout: h.Timeout,
			HealthyThreshold: h.HealthyThreshold, UnhealthyThreshold: h.UnhealthyThreshold,
		}
		if h.ExpectStatus != "" {
			lo, hi, err := config.ParseStatusRange(h.ExpectStatus)
			if err != nil {
				return nil, err
			}
			hs.ExpectStatusMin, hs.ExpectStatusMax = lo, hi
		}
		spec.HealthCheck = hs
	}
	if o := c.OutlierDetection; o != nil {
		spec.Outlier = &upstream.OutlierSpec{
			ConsecutiveFailures: o.ConsecutiveFailures, BaseEjection: o.BaseEjection,
			MaxEjection: o.MaxEjection, MaxEjectionPercent: upstream.DefaultMaxEjectionPercent,
		}
		if m := o.MaxEjectionPercent; m != nil {
			spec.Outlier.MaxEjectionPercent = *m
		}
	}
	var prevPool *upstream.Pool
	if prev != nil {
		if ps := prev.services[c.Name]; ps != nil {
			prevPool = ps.pool
		}
	}
	// Health checks speak to the targets as the proxied requests do:
	// the service's protocol and TLS settings (an h2c-only gRPC server
	// took HTTP/1.1 checks for garbage, a private CA's target failed
	// them).
	var healthTLS *tls.Config
	if c.TLS != nil && spec.HealthCheck != nil {
		var err error
		if healthTLS, err = upstreamTLSConfig(*c.TLS); err != nil {
			return nil, err
		}
	}
	pool, err := upstream.NewPool(spec, prevPool, upstream.Options{
		Logger:         g.log, // the pool adds "service"
		Client:         g.healthClient,
		TLSConfig:      healthTLS,
		Protocol:       c.Protocol,
		OnHealthChange: g.metrics.healthChanged,
	})
	if err != nil {
		return nil, err
	}
	connect := c.Timeouts.Connect
	if connect == 0 {
		connect = DefaultConnectTimeout
	}
	rht := c.Timeouts.ResponseHeader
	if rht == 0 {
		rht = DefaultResponseHeaderTimeout
	}
	send := c.Timeouts.Send
	if send == 0 {
		send = DefaultSendTimeout
	}
	read := cmp.Or(c.Timeouts.Read, DefaultReadTimeout)
	key := transportKey{protocol: c.Protocol, connect: connect, responseHeader: rht, send: send}
	if c.Protocol == "" || c.Protocol == "http1" {
		key.read = read
	}
	if c.TLS != nil {
		key.tls = *c.TLS
		key.tlsFiles = fileDigest(c.TLS.CAFile, c.TLS.CertFile, c.TLS.KeyFile)
	}
	tr, err := g.transport(key)
	if err != nil {
		return nil, err
	}
	if prev != nil && c.TLS != nil {
		if ps := prev.services[c.Name]; ps != nil && ps.tkey.tls == key.tls && ps.tkey.tlsFiles != key.tlsFiles {
			// Same settings, files changed on disk (a rotated CA or
			// client certificate): say so, or the reload would look
			// like it changed nothing.
			g.log.Info("upstream TLS files changed; new connections use them",
				"service", c.Name, "ca_file", c.TLS.CAFile, "cert_file", c.TLS.CertFile)
		}
	}
	svc := &service{
		name:      c.Name,
		pool:      pool,
		transport: tr,
		tkey:      key,
		h2:        c.Protocol == "h2c" || c.Protocol == "h2",
		total:     c.Timeouts.Total,
		read:      read,
	}
	if ph := c.ProxyHeaders; ph != nil {
		svc.noForwarded = config.Off(ph.Forwarded)
		svc.noXForwarded = config.Off(ph.XForwarded)
		svc.noVia = config.Off(ph.Via)
		svc.noRequestID = config.Off(ph.RequestID)
		svc.noTraceparent = config.Off(ph.Traceparent)
	}
	if r := c.Retries; r != nil {
		var prevBudget *retryBudget
		if prev != nil {
			if ps := prev.services[c.Name]; ps != nil && ps.retry != nil {
				prevBudget = ps.retry.budget
			}
		}
		svc.retry = newRetryPolicy(r, prevBudget)
	}
	if _, ok := tr.(*h1Transport); ok {
		svc.lean = true
		for _, t := range pool.Targets() {
			if u := t.URL; u.Scheme != "http" || u.Path != "" && u.Path != "/" || u.RawPath != "" || u.RawQuery != "" {
				svc.lean = false
			}
		}
	}
	return svc, nil
}

type transportKey struct {
	protocol       string
	connect        time.Duration
	responseHeader time.Duration
	send           time.Duration // HTTP/1.1 only
	read           time.Duration // HTTP/1.1 only (HTTP/2 bodies: copyBody)
	tls            config.UpstreamTLS
	// tlsFiles is a digest of tls's files as they were when the key was
	// made: a reload after they changed (a rotated CA or client
	// certificate) gets a transport that reads them again, as nginx's
	// reload does; one after they did not keeps the warm pool.
	tlsFiles [sha256.Size]byte
}

// fileDigest is a digest of the named files' contents (a file that cannot
// be read counts by its error, which compiling the transport reports).
func fileDigest(names ...string) [sha256.Size]byte {
	h := sha256.New()
	for _, name := range names {
		var b []byte
		var err error
		if name != "" {
			b, err = smallfile.Read(name, smallfile.MaxPEM)
		}
		fmt.Fprintf(h, "%d:%q:%v:", len(b), name, err)
		h.Write(b)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// upstreamTransport sends requests to targets and pools connections.
type upstreamTransport interface {
	http.RoundTripper
	CloseIdleConnections()
}

// transport returns the shared upstream transport for a combination of
// settings, so that a reload keeps warm connection pools. HTTP/1.1 uses
// Meridian's own client (h1client.go); HTTP/2 uses net/http's.
func (g *Gateway) transport(k transportKey) (upstreamTransport, error) {
	g.tmu.Lock()
	defer g.tmu.Unlock()
	if t, ok := g.transports[k]; ok {
		return t, nil
	}
	tlsConf, err := upstreamTLSConfig(k.tls)
	if err != nil {
		return nil, err
	}
	if k.protocol == "" || k.protocol == "http1" {
		t := newH1Transport(k.connect, k.responseHeader)
		t.resent = func(reason string) { g.metrics.resends.WithLabelValues(reason).Inc() }
		t.sendTimeout = k.send
		t.readTimeout = k.read
		t.tlsConfig = tlsConf
		g.transports[k] = t
		return t, nil
	}
	d := &net.Dialer{Timeout: k.connect, KeepAlive: 30 * time.Second}
	t := &http.Transport{
		Proxy: nil, // never take upstream proxies from the environment
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if b, _ := ctx.Value(dialBudgetKey{}).(*dialBudget); b != nil && b.left.Add(-1) < 0 {
				return nil, errTooManyDials // see h2RoundTrip
			}
			c, err := d.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return rawTCP(c), nil // see rawconn.go
		},
		TLSHandshakeTimeout:   k.connect,
		ResponseHeaderTimeout: k.responseHeader,
		// No MaxResponseHeaderBytes at the HTTP/1 client's 64 KiB: over
		// HTTP/2 a head over it is a connection error, which would fail
		// every stream on the connection; the proxy checks the head it
		// gets instead (oversizedHead).
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true, // pass encodings through untouched
		WriteBufferSize:       16 << 10,
		ReadBufferSize:        16 << 10,
		// What an upstream may send on a stream before the client reads
		// it: net/http's default of 4 MiB a stream (1 GiB a connection)
		// let stalled client streams make the gateway hold gigabytes
		// (500 of them: 2.1 GB). A stream's window is the client-facing
		// server's; the connection's stays large, so that streams whose
		// clients stall do not hold back the others sharing it.
		HTTP2: &http.HTTP2Config{MaxReceiveBufferPerStream: 1 << 20},
	}
	switch k.protocol {
	case "h2c":
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		t.Protocols = &p
	case "h2":
		upstream.H2OverTLS(t, t.DialContext, tlsConf, k.connect, errHandshakeTimeout)
	}
	g.transports[k] = t
	return t, nil
}

// configFieldError is a compile error about one field (a path such as
// "tls.ca_file") of the service being compiled.
type configFieldError struct {
	field string
	err   error
}

func (e *configFieldError) Error() string { return e.err.Error() }
func (e *configFieldError) Unwrap() error { return e.err }

// upstreamTLSConfig builds the client TLS config for https targets; nil
// means Go's defaults (system roots, SNI from the URL).
func upstreamTLSConfig(c config.UpstreamTLS) (*tls.Config, error) {
	if c == (config.UpstreamTLS{}) {
		return nil, nil
	}
	tc := &tls.Config{ServerName: c.ServerName, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := smallfile.Read(c.CAFile, smallfile.MaxPEM)
		if err != nil {
			return nil, &configFieldError{"tls.ca_file", err}
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, &configFieldError{"tls.ca_file", fmt.Errorf("%s holds no PEM certificates", c.CAFile)}
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		if _, err := os.Stat(c.KeyFile); err != nil {
			return nil, &configFieldError{"tls.key_file", err}
		}
		cert, err := smallfile.LoadKeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			// The key's own faults (no PEM key in it, not the
			// certificate's key) are the key file's.
			field := "tls.cert_file"
			if _, ok := errors.AsType[*smallfile.KeyFileError](err); ok {
				field = "tls.key_file"
			}
			return nil, &configFieldError{field, fmt.Errorf("client certificate: %w", err)}
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}

// start begins the snapshot's health checks.
func (s *Snapshot) start() {
	for _, svc := range s.order {
		svc.pool.Start()
	}
}

// stop ends the snapshot's health checks. Requests still running on it are
// not affected: the targets they use live on in the next snapshot's pools.
func (s *Snapshot) stop() {
	s.stopOnce.Do(func() {
		for _, svc := range s.order {
			svc.pool.Stop()
		}
	})
}

// RouteInfo describes one route for the admin API.
type RouteInfo struct {
	Name    string       `json:"name"`
	Service string       `json:"service"`
	Match   config.Match `json:"match"`
}

// Routes lists the routes of the snapshot in document order.
func (s *Snapshot) Routes() []RouteInfo {
	out := make([]RouteInfo, len(s.Doc.Routes))
	for i, r := range s.Doc.Routes {
		out[i] = RouteInfo{Name: r.Name, Service: r.Service, Match: r.Match}
	}
	return out
}

// ServiceHealth is the live state of one service's targets.
type ServiceHealth struct {
	Name     string                  `json:"name"`
	InFlight int64                   `json:"in_flight"`
	Targets  []upstream.TargetStatus `json:"targets"`
}

// Health reports the live health of every target of every service.
func (s *Snapshot) Health() []ServiceHealth {
	out := make([]ServiceHealth, 0, len(s.order))
	for _, svc := range s.order {
		out = append(out, ServiceHealth{Name: svc.name, InFlight: svc.pool.InFlight(), Targets: svc.pool.Status()})
	}
	return out
}
