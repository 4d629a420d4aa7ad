package edge

import (
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/meridian-gw/meridian/edge/upstream"
)

// metrics holds the gateway's Prometheus series. Per-route series are
// resolved once per route, method and status class and then reached through
// atomic pointers, so the hot path does no label hashing.
type metrics struct {
	reg         *prometheus.Registry
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	upstreamDur *prometheus.HistogramVec
	inFlight    prometheus.GaugeFunc
	inFlightN   atomic.Int64 // what inFlight reports: an add, not a float CAS loop, per request
	// pruned counts the prunes that deleted a service's series, so that
	// routeStats.lastUpstream is not trusted across one.
	pruned         atomic.Uint64
	retries        *prometheus.CounterVec
	retryOverflow  *prometheus.CounterVec
	resends        *prometheus.CounterVec
	upstreamErrors *prometheus.CounterVec
	requestErrors  *prometheus.CounterVec
	resetFloods    prometheus.Counter
	configVersion  prometheus.Gauge
	configApplied  *prometheus.CounterVec
	healthChanges  *prometheus.CounterVec
	handshakes     *prometheus.CounterVec

	// mu guards routes and services, and the creation of a route's
	// series (so that none is made for a route prune has retired).
	mu       sync.Mutex
	routes   map[string]*routeStats
	services map[string]bool // the services of the snapshot served
}

func methodIndex(m string) int {
	switch m {
	case "GET":
		return 0
	case "HEAD":
		return 1
	case "POST":
		return 2
	case "PUT":
		return 3
	case "DELETE":
		return 4
	case "PATCH":
		return 5
	case "OPTIONS":
		return 6
	}
	return 7
}

var methodNames = [8]string{"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"}

// routeStats are the series of one route (or of unrouted requests).
//
// Series are made at a route's first count, and deleted when a reload
// removes the route (prune); its stats are then retired, and requests still
// finishing on it are no longer counted.
type routeStats struct {
	m        *metrics
	name     string
	retired  atomic.Bool
	duration atomic.Pointer[prometheus.Observer]
	counters [8][6]atomic.Pointer[prometheus.Counter] // method x status class (1xx..5xx, other)
	upstream sync.Map                                 // service name -> prometheus.Observer
	// lastUpstream is the entry of upstream used last (a route's requests
	// all go to its one service): no lookup while it stays the same.
	lastUpstream atomic.Pointer[upstreamObserver]
}

type upstreamObserver struct {
	service string
	o       prometheus.Observer
	gen     uint64 // metrics.pruned when it was looked up
}

func newMetrics(g *Gateway) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), routes: map[string]*routeStats{}, services: map[string]bool{}}
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_requests_total", Help: "Requests answered, by route, method and status class.",
	}, []string{"route", "method", "code"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "meridian_request_duration_seconds", Help: "Time from request start to the end of the response, by route.", Buckets: buckets,
	}, []string{"route"})
	m.upstreamDur = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "meridian_upstream_duration_seconds", Help: "Time spent waiting for upstream response headers (all attempts), by service; requests that got none are not observed.", Buckets: buckets,
	}, []string{"service"})
	m.inFlight = prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "meridian_requests_in_flight", Help: "Requests being served now."},
		func() float64 { return float64(m.inFlightN.Load()) })
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_upstream_retries_total", Help: "Retries sent to a service."}, []string{"service"})
	m.retryOverflow = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_upstream_retry_budget_exhausted_total", Help: "Retries the retry policy allowed but the service's retry budget refused."}, []string{"service"})
	m.resends = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_upstream_resends_total",
		Help: "Bodyless idempotent requests sent once more on a new upstream connection because the reused one closed before any byte of an answer (stale_connection) or answered with bytes of no answer (stray_bytes); not retries.",
	}, []string{"reason"})
	m.upstreamErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_upstream_errors_total", Help: "Requests the gateway answered with an error of its own, by route and Proxy-Status error type.",
	}, []string{"route", "error"})
	m.requestErrors = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "meridian_request_errors_total", Help: "Requests that ended for the client's part or a drain's deadline (client_canceled, client_header_timeout, client_body_timeout, client_send_timeout, http_request_error, drain_timeout), by route.",
	}, []string{"route", "error"})
	m.resetFloods = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "meridian_http2_reset_floods_total", Help: "HTTP/2 connections closed because the client reset most of their streams before any answer (rapid reset).",
	})
	m.configVersion = prometheus.NewGauge(prometheus.GaugeOpts{Name: "meridian_config_version", Help: "Version of the gateway document being served."})
	m.configApplied = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_config_applies_total", Help: "Attempts to apply a gateway document, by result."}, []string{"result"})
	m.healthChanges = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_upstream_health_changes_total", Help: "Active health check transitions, by service and new state."}, []string{"service", "state"})
	m.handshakes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "meridian_tls_handshakes_total", Help: "Completed TLS handshakes, by transport (tcp, quic), ALPN and TLS version."}, []string{"transport", "alpn", "version"})
	m.reg.MustRegister(m.handshakes, m.requests, m.duration, m.upstreamDur, m.inFlight, m.retries, m.retryOverflow, m.resends, m.upstreamErrors, m.requestErrors, m.resetFloods, m.configVersion, m.configApplied, m.healthChanges,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}), &upstreamCollector{g: g})
	return m
}

// route returns the stats of a route name, shared across snapshots.
func (m *metrics) route(name string) *routeStats {
	m.mu.Lock()
	defer m.mu.Unlock()
	rs := m.routes[name]
	if rs == nil {
		rs = &routeStats{m: m, name: name}
		m.routes[name] = rs
	}
	return rs
}

func (rs *routeStats) observe(method string, status int, seconds float64) {
	mi := methodIndex(method)
	ci := status/100 - 1
	if ci < 0 || ci > 4 {
		ci = 5
	}
	p := rs.counters[mi][ci].Load()
	d := rs.duration.Load()
	if p == nil || d == nil {
		class := "other"
		if ci < 5 {
			class = strconv.Itoa(ci+1) + "xx"
		}
		rs.m.mu.Lock()
		if !rs.retired.Load() {
			c := rs.m.requests.WithLabelValues(rs.name, methodNames[mi], class)
			rs.counters[mi][ci].CompareAndSwap(nil, &c)
			o := rs.m.duration.WithLabelValues(rs.name)
			rs.duration.CompareAndSwap(nil, &o)
		}
		rs.m.mu.Unlock()
		p, d = rs.counters[mi][ci].Load(), rs.duration.Load()
		if p == nil || d == nil {
			return // the route is gone
		}
	}
	(*p).Inc()
	(*d).Observe(seconds)
}

// prune deletes the series of the routes and services that s, the
// snapshot now served, no longer has: without it every route ever applied
// kept a histogram, and /metrics grew with each reload that renamed routes.
func (m *metrics) prune(s *Snapshot) {
	routes := make(map[string]bool, len(s.routes)+1)
	routes[""] = true // requests that matched no route
	for _, rt := range s.routes {
		routes[rt.name] = true
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for name, rs := range m.routes {
		if routes[name] {
			continue
		}
		rs.retired.Store(true)
		delete(m.routes, name)
		m.requests.DeletePartialMatch(prometheus.Labels{"route": name})
		m.duration.DeleteLabelValues(name)
		m.upstreamErrors.DeletePartialMatch(prometheus.Labels{"route": name})
		m.requestErrors.DeletePartialMatch(prometheus.Labels{"route": name})
	}
	for name := range m.services {
		if s.services[name] != nil {
			continue
		}
		delete(m.services, name)
		for _, vec := range []interface {
			DeletePartialMatch(prometheus.Labels) int
		}{m.upstreamDur, m.retries, m.retryOverflow, m.healthChanges} {
			vec.DeletePartialMatch(prometheus.Labels{"service": name})
		}
		for _, rs := range m.routes {
			rs.upstream.Delete(name)
		}
		m.pruned.Add(1)
	}
	for name := range s.services {
		m.services[name] = true
	}
}

// countError counts an error of a request of rs's route, unless a reload
// removed the route (prune), whose series must not come back: the client's
// (or a drain's) apart from the gateway's answers about its upstreams, so
// that clients that leave or send garbage do not raise upstream alerts.
func (m *metrics) countError(rs *routeStats, kind string) {
	vec := m.upstreamErrors
	if clientSide(kind) {
		vec = m.requestErrors
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !rs.retired.Load() {
		vec.WithLabelValues(rs.name, kind).Inc()
	}
}

// clientSide reports whether an access log error kind is the client's
// part (or a drain's), not a Proxy-Status error type about an upstream.
func clientSide(kind string) bool {
	return strings.HasPrefix(kind, "client_") || kind == "http_request_error" || kind == "drain_timeout"
}

// countService adds one to vec's series for service, unless a reload
// removed the service (prune), whose series must not come back.
func (m *metrics) countService(vec *prometheus.CounterVec, service string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.services[service] {
		vec.WithLabelValues(service).Inc()
	}
}

func (rs *routeStats) observeUpstream(service string, seconds float64) {
	gen := rs.m.pruned.Load()
	if l := rs.lastUpstream.Load(); l != nil && l.service == service && l.gen == gen {
		l.o.Observe(seconds) // the route's service, as the last time
		return
	}
	o, ok := rs.upstream.Load(service)
	if ok {
		// Kept with the prune count read before the lookup: an entry a
		// prune deleted meanwhile is not used again.
		rs.lastUpstream.Store(&upstreamObserver{service, o.(prometheus.Observer), gen})
	} else {
		m := rs.m
		m.mu.Lock()
		if m.services[service] { // else removed by a reload (prune)
			o, _ = rs.upstream.LoadOrStore(service, m.upstreamDur.WithLabelValues(service))
		}
		m.mu.Unlock()
		if o == nil {
			return
		}
	}
	o.(prometheus.Observer).Observe(seconds)
}

func (m *metrics) healthChanged(service string, t *upstream.Target, healthy bool) {
	state := "down"
	if healthy {
		state = "up"
	}
	m.healthChanges.WithLabelValues(service, state).Inc()
}

// upstreamCollector reports the live state of the current snapshot's
// targets at scrape time.
type upstreamCollector struct{ g *Gateway }

var (
	targetHealthyDesc  = prometheus.NewDesc("meridian_upstream_target_healthy", "1 if the target is available (healthy and not ejected), else 0.", []string{"service", "target", "region"}, nil)
	targetEjectedDesc  = prometheus.NewDesc("meridian_upstream_target_ejected", "1 if outlier detection has ejected the target.", []string{"service", "target", "region"}, nil)
	targetInFlightDesc = prometheus.NewDesc("meridian_upstream_target_in_flight", "Requests in flight to the target.", []string{"service", "target", "region"}, nil)
	connsOpenDesc      = prometheus.NewDesc("meridian_connections_open", "Client connections open on the proxy listener.", nil, nil)
	connsRejectedDesc  = prometheus.NewDesc("meridian_connections_rejected_total", "Client connections closed at once because max_connections was reached.", nil, nil)
	connsParkedDesc    = prometheus.NewDesc("meridian_connections_parked", "Idle keep-alive client connections parked: no goroutine, their sockets waiting in the gateway's own epoll set.", nil, nil)
)

func (c *upstreamCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- targetHealthyDesc
	ch <- targetEjectedDesc
	ch <- targetInFlightDesc
	ch <- connsOpenDesc
	ch <- connsRejectedDesc
	ch <- connsParkedDesc
}

func (c *upstreamCollector) Collect(ch chan<- prometheus.Metric) {
	if s := c.g.snap.Load(); s != nil {
		for _, sh := range s.Health() {
			for _, t := range sh.Targets {
				healthy, ejected := 0.0, 0.0
				if t.Healthy && !t.Ejected {
					healthy = 1
				}
				if t.Ejected {
					ejected = 1
				}
				ch <- prometheus.MustNewConstMetric(targetHealthyDesc, prometheus.GaugeValue, healthy, sh.Name, t.URL, t.Region)
				ch <- prometheus.MustNewConstMetric(targetEjectedDesc, prometheus.GaugeValue, ejected, sh.Name, t.URL, t.Region)
				ch <- prometheus.MustNewConstMetric(targetInFlightDesc, prometheus.GaugeValue, float64(t.InFlight), sh.Name, t.URL, t.Region)
			}
		}
	}
	var open, rejected, parked int64
	c.g.lmu.Lock()
	for _, l := range c.g.listeners {
		open += l.open.Load()
		rejected += l.rejected.Load()
		if l.parked != nil {
			parked += l.parked.Load()
		}
	}
	c.g.lmu.Unlock()
	ch <- prometheus.MustNewConstMetric(connsOpenDesc, prometheus.GaugeValue, float64(open))
	ch <- prometheus.MustNewConstMetric(connsRejectedDesc, prometheus.CounterValue, float64(rejected))
	ch <- prometheus.MustNewConstMetric(connsParkedDesc, prometheus.GaugeValue, float64(parked))
}
