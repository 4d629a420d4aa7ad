package upstream

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// TargetSpec describes one upstream target of a service.
type TargetSpec struct {
	// URL is the base URL requests are sent to; the scheme must be http or
	// https and the host must be set.
	URL *url.URL
	// Weight is the relative share of traffic; 0 means 1. It must not be
	// negative or larger than MaxWeight.
	Weight int
	// Region is informational (reported in Status).
	Region string
}

// MaxWeight bounds TargetSpec.Weight. It keeps the consistent-hash ring (100
// virtual nodes per weight unit) and the round-robin arithmetic small.
const MaxWeight = 1000

// MaxThreshold bounds the health check thresholds and the outlier
// detector's consecutive failures: a count in the millions would keep a
// dead target in (or a recovered one out) for ever, which is a typo, not a
// policy.
const MaxThreshold = 1000

// BalancerKind selects the load-balancing algorithm of a pool.
type BalancerKind string

const (
	// RoundRobin is smooth weighted round robin as implemented by nginx:
	// a target of weight w receives w picks in every cycle of total-weight
	// picks, interleaved rather than in bursts. It is the default.
	RoundRobin BalancerKind = "round_robin"
	// LeastRequests samples two distinct available targets at random and
	// picks the one with fewer in-flight requests per unit of weight.
	LeastRequests BalancerKind = "least_requests"
	// ConsistentHash maps a request key (see HashSource) onto a ring of
	// virtual nodes, so the same key keeps reaching the same target and a
	// change of membership only moves the keys of the affected target.
	ConsistentHash BalancerKind = "consistent_hash"
)

// Hash key sources for HashSource.Kind.
const (
	HashHeader   = "header"
	HashCookie   = "cookie"
	HashClientIP = "client_ip"
)

// HashSource says what a consistent-hash pool hashes on. When the header or
// cookie is absent from a request the client IP is used instead, so such
// requests still stick to one target.
type HashSource struct {
	// Kind is "header", "cookie" or "client_ip"; empty means "client_ip".
	Kind string
	// Name is the header or cookie name; required for those kinds.
	Name string
}

// HealthCheckSpec configures active health checks. Zero values take the
// documented defaults.
type HealthCheckSpec struct {
	// Path is requested with GET on every target; default "/". It may carry
	// a query string and must start with "/".
	Path string
	// Host, when set, overrides the Host header of the check request (for
	// targets addressed by IP that route on virtual host).
	Host string
	// Interval between two checks of one target; default 10s.
	Interval time.Duration
	// Timeout of one check; default 2s.
	Timeout time.Duration
	// HealthyThreshold is the number of consecutive successes that bring a
	// down target back; default 2.
	HealthyThreshold int
	// UnhealthyThreshold is the number of consecutive failures that take a
	// target down; default 3.
	UnhealthyThreshold int
	// ExpectStatusMin and ExpectStatusMax bound the response status codes
	// counted as success; defaults 200 and 399. Redirects are not followed
	// by the default client, so a 3xx counts as a response.
	ExpectStatusMin, ExpectStatusMax int
}

// OutlierSpec configures passive outlier detection. Zero values take the
// documented defaults.
type OutlierSpec struct {
	// ConsecutiveFailures is the number of Failure outcomes in a row that
	// eject a target; default 5.
	ConsecutiveFailures int
	// BaseEjection is the ejection time of a first ejection; the n-th
	// ejection lasts n*BaseEjection. Default 30s.
	BaseEjection time.Duration
	// MaxEjection caps the ejection time; default 300s. A target that has
	// stayed in service for MaxEjection since its last ejection ended starts
	// again from BaseEjection.
	MaxEjection time.Duration
	// MaxEjectionPercent is the largest share of the pool's targets that
	// may be ejected at the same time; 0 means the default of 50. At least
	// one target always stays in, whatever the percentage.
	MaxEjectionPercent int
}

// Spec is the configuration of one service's pool.
type Spec struct {
	Service  string
	Targets  []TargetSpec
	Balancer BalancerKind // empty means RoundRobin
	HashOn   HashSource   // used by ConsistentHash only
	// HealthCheck enables active health checks; nil disables them.
	HealthCheck *HealthCheckSpec
	// Outlier enables passive outlier detection; nil disables it.
	Outlier *OutlierSpec
	// MaxConcurrent caps the requests in flight to the service; 0 means
	// unlimited.
	MaxConcurrent int
}

// Defaults applied by NewPool to zero fields.
const (
	DefaultHealthInterval      = 10 * time.Second
	DefaultHealthTimeout       = 2 * time.Second
	DefaultHealthyThreshold    = 2
	DefaultUnhealthyThreshold  = 3
	DefaultExpectStatusMin     = 200
	DefaultExpectStatusMax     = 399
	DefaultConsecutiveFailures = 5
	DefaultBaseEjection        = 30 * time.Second
	DefaultMaxEjection         = 300 * time.Second
	DefaultMaxEjectionPercent  = 50
	DefaultHealthPath          = "/"
)

// errSpec builds a validation error naming the service, so a config loader
// that reports it verbatim points the operator at the right place.
func errSpec(service, format string, args ...any) error {
	return fmt.Errorf("upstream: service %q: %s", service, fmt.Sprintf(format, args...))
}

// Destination is what two target URLs that send requests to the same
// place have in common, however written: scheme and host in any case, the
// scheme's default port named or not, an empty path or "/".
func Destination(u *url.URL) string {
	scheme, port := strings.ToLower(u.Scheme), u.Port()
	if port == "" && scheme == "http" {
		port = "80"
	} else if port == "" && scheme == "https" {
		port = "443"
	}
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port) + path + "?" + u.RawQuery
}

// normalize validates spec and returns a copy with defaults filled in. The
// copy owns its HealthCheck and Outlier values so later changes by the
// caller cannot race with the pool.
func normalize(spec Spec) (Spec, error) {
	out := spec
	if strings.TrimSpace(spec.Service) == "" {
		return Spec{}, errors.New("upstream: service name is empty")
	}
	if len(spec.Targets) == 0 {
		return Spec{}, errSpec(spec.Service, "no targets")
	}
	out.Targets = make([]TargetSpec, len(spec.Targets))
	seen := make(map[string]int, len(spec.Targets))
	for i, ts := range spec.Targets {
		if ts.URL == nil {
			return Spec{}, errSpec(spec.Service, "target %d: URL is nil", i)
		}
		if ts.URL.Scheme != "http" && ts.URL.Scheme != "https" {
			return Spec{}, errSpec(spec.Service, "target %d (%s): scheme %q is not supported, want http or https",
				i, ts.URL.Redacted(), ts.URL.Scheme)
		}
		if ts.URL.Host == "" {
			return Spec{}, errSpec(spec.Service, "target %d (%s): URL has no host", i, ts.URL.Redacted())
		}
		if ts.Weight < 0 || ts.Weight > MaxWeight {
			return Spec{}, errSpec(spec.Service, "target %d (%s): weight %d out of range 0..%d",
				i, ts.URL.Redacted(), ts.Weight, MaxWeight)
		}
		key := Destination(ts.URL)
		if j, dup := seen[key]; dup {
			// Two entries for one destination would double its share,
			// count it twice toward max_ejection_percent, and keep it
			// in traffic while one of them is ejected or down; the
			// operator should merge them and raise the weight instead.
			if first := spec.Targets[j].URL; first.String() != ts.URL.String() {
				return Spec{}, errSpec(spec.Service, "targets %d (%s) and %d (%s) are the same destination",
					j, first.Redacted(), i, ts.URL.Redacted())
			}
			return Spec{}, errSpec(spec.Service, "targets %d and %d have the same URL %s", j, i, ts.URL.Redacted())
		}
		seen[key] = i
		u := *ts.URL // private copy: the pool must not see later edits
		ts.URL = &u
		if ts.Weight == 0 {
			ts.Weight = 1
		}
		out.Targets[i] = ts
	}

	switch spec.Balancer {
	case "":
		out.Balancer = RoundRobin
	case RoundRobin, LeastRequests:
	case ConsistentHash:
		h, err := normalizeHash(spec.Service, spec.HashOn)
		if err != nil {
			return Spec{}, err
		}
		out.HashOn = h
	default:
		return Spec{}, errSpec(spec.Service, "unknown balancer %q, want %q, %q or %q",
			spec.Balancer, RoundRobin, LeastRequests, ConsistentHash)
	}

	if spec.HealthCheck != nil {
		hc, err := normalizeHealth(spec.Service, *spec.HealthCheck)
		if err != nil {
			return Spec{}, err
		}
		out.HealthCheck = &hc
	}
	if spec.Outlier != nil {
		o, err := normalizeOutlier(spec.Service, *spec.Outlier)
		if err != nil {
			return Spec{}, err
		}
		out.Outlier = &o
	}
	if spec.MaxConcurrent < 0 {
		return Spec{}, errSpec(spec.Service, "max concurrent %d is negative", spec.MaxConcurrent)
	}
	return out, nil
}

func normalizeHash(service string, h HashSource) (HashSource, error) {
	switch h.Kind {
	case "", HashClientIP:
		return HashSource{Kind: HashClientIP}, nil
	case HashHeader:
		if h.Name == "" {
			return HashSource{}, errSpec(service, "consistent hash on header needs a header name")
		}
		// Canonicalize once so Header.Get on the hot path does not have to.
		h.Name = http.CanonicalHeaderKey(h.Name)
		return h, nil
	case HashCookie:
		if h.Name == "" {
			return HashSource{}, errSpec(service, "consistent hash on cookie needs a cookie name")
		}
		return h, nil
	default:
		return HashSource{}, errSpec(service, "unknown hash source %q, want %q, %q or %q",
			h.Kind, HashHeader, HashCookie, HashClientIP)
	}
}

func normalizeHealth(service string, hc HealthCheckSpec) (HealthCheckSpec, error) {
	if hc.Path == "" {
		hc.Path = DefaultHealthPath
	}
	if !strings.HasPrefix(hc.Path, "/") {
		return hc, errSpec(service, "health check path %q must start with /", hc.Path)
	}
	if _, err := url.Parse(hc.Path); err != nil {
		return hc, errSpec(service, "health check path %q: %v", hc.Path, err)
	}
	if strings.Contains(hc.Path, "#") {
		return hc, errSpec(service, "health check path %q has a fragment, which is never sent", hc.Path)
	}
	if hc.Interval < 0 || hc.Timeout < 0 {
		return hc, errSpec(service, "health check interval and timeout must not be negative")
	}
	if hc.Interval == 0 {
		hc.Interval = DefaultHealthInterval
	}
	if hc.Timeout == 0 {
		hc.Timeout = DefaultHealthTimeout
	}
	if hc.HealthyThreshold < 0 || hc.UnhealthyThreshold < 0 {
		return hc, errSpec(service, "health check thresholds must not be negative")
	}
	if hc.HealthyThreshold > MaxThreshold || hc.UnhealthyThreshold > MaxThreshold {
		return hc, errSpec(service, "health check thresholds %d and %d: at most %d", hc.HealthyThreshold, hc.UnhealthyThreshold, MaxThreshold)
	}
	if hc.HealthyThreshold == 0 {
		hc.HealthyThreshold = DefaultHealthyThreshold
	}
	if hc.UnhealthyThreshold == 0 {
		hc.UnhealthyThreshold = DefaultUnhealthyThreshold
	}
	if hc.ExpectStatusMin == 0 {
		hc.ExpectStatusMin = DefaultExpectStatusMin
	}
	if hc.ExpectStatusMax == 0 {
		hc.ExpectStatusMax = DefaultExpectStatusMax
	}
	if hc.ExpectStatusMin < 100 || hc.ExpectStatusMax > 599 || hc.ExpectStatusMin > hc.ExpectStatusMax {
		return hc, errSpec(service, "health check expected status range %d..%d is invalid (want 100 <= min <= max <= 599)",
			hc.ExpectStatusMin, hc.ExpectStatusMax)
	}
	return hc, nil
}

func normalizeOutlier(service string, o OutlierSpec) (OutlierSpec, error) {
	if o.ConsecutiveFailures < 0 || o.BaseEjection < 0 || o.MaxEjection < 0 {
		return o, errSpec(service, "outlier detection settings must not be negative")
	}
	if o.ConsecutiveFailures > MaxThreshold {
		return o, errSpec(service, "outlier consecutive failures %d: at most %d", o.ConsecutiveFailures, MaxThreshold)
	}
	if o.ConsecutiveFailures == 0 {
		o.ConsecutiveFailures = DefaultConsecutiveFailures
	}
	if o.BaseEjection == 0 {
		o.BaseEjection = DefaultBaseEjection
	}
	if o.MaxEjection == 0 {
		o.MaxEjection = max(DefaultMaxEjection, o.BaseEjection)
	}
	if o.MaxEjection < o.BaseEjection {
		return o, errSpec(service, "outlier max ejection %v is shorter than base ejection %v", o.MaxEjection, o.BaseEjection)
	}
	if o.MaxEjectionPercent < 0 || o.MaxEjectionPercent > 100 {
		return o, errSpec(service, "outlier max ejection percent %d out of range 0..100", o.MaxEjectionPercent)
	}
	if o.MaxEjectionPercent == 0 {
		o.MaxEjectionPercent = DefaultMaxEjectionPercent
	}
	return o, nil
}
