// Package config defines the gateway document: the dynamic, cluster-wide part
// of Meridian's configuration (services and routes), how it is decoded from
// YAML or JSON, and how it is validated.
//
// Decoding is strict: an unknown field, a value of the wrong type or a
// reference to something that does not exist is an error that names the field
// by its path in the document and by its line. A document that passes Parse is
// ready for edge.Compile; a document that does not never reaches the data
// plane.
//
//	doc, err := config.Parse(data)
//	if err != nil {
//		fmt.Println(err) // line 12: routes[2].service: unknown service "userz"
//	}
package config

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/meridian-gw/meridian/edge/upstream"
)

// Document is the gateway configuration document.
type Document struct {
	// Services are the upstream APIs that routes send traffic to.
	Services []Service `yaml:"services" json:"services,omitempty"`
	// Routes decide which service answers a request, and how the request and
	// response are changed on the way.
	Routes []Route `yaml:"routes" json:"routes,omitempty"`
}

// Service is one upstream API: a set of targets and how to talk to them.
type Service struct {
	Name string `yaml:"name" json:"name"`
	// Protocol spoken to the targets: "http1" (default), "h2c" (HTTP/2
	// without TLS, prior knowledge; what gRPC backends speak), or "h2"
	// (HTTP/2 over TLS; targets must be https URLs). https targets with
	// "http1" negotiate by ALPN and prefer HTTP/1.1.
	Protocol string `yaml:"protocol,omitempty" json:"protocol,omitempty"`
	// Targets are the instances of the service. At least one.
	Targets  []Target `yaml:"targets" json:"targets,omitempty"`
	Balancer Balancer `yaml:"balancer,omitempty" json:"balancer,omitempty"`
	Timeouts Timeouts `yaml:"timeouts,omitempty" json:"timeouts,omitempty"`
	// Retries for idempotent requests; nil means no retries.
	Retries *Retries `yaml:"retries,omitempty" json:"retries,omitempty"`
	// HealthCheck is an active health check; nil means none (targets are
	// taken as healthy unless passive outlier detection ejects them).
	HealthCheck *HealthCheck `yaml:"health_check,omitempty" json:"health_check,omitempty"`
	// OutlierDetection ejects targets that keep failing; nil means off.
	OutlierDetection *OutlierDetection `yaml:"outlier_detection,omitempty" json:"outlier_detection,omitempty"`
	// TLS configures how https:// targets are verified and what client
	// certificate is presented to them.
	TLS *UpstreamTLS `yaml:"tls,omitempty" json:"tls,omitempty"`
	// MaxConcurrentRequests caps the requests in flight to the whole
	// service (circuit breaking); beyond it the gateway answers 503 at once.
	// 0 means no cap.
	MaxConcurrentRequests int `yaml:"max_concurrent_requests,omitempty" json:"max_concurrent_requests,omitempty"`
	// ProxyHeaders chooses which fields the gateway writes for the
	// service's targets; nil means all of them.
	ProxyHeaders *ProxyHeaders `yaml:"proxy_headers,omitempty" json:"proxy_headers,omitempty"`
}

// ProxyHeaders chooses which of the fields the gateway writes about a
// request reach a service's targets. Each defaults to true; false is for a
// target that must not learn who the client is (a third party's API) or
// that chokes on a field.
type ProxyHeaders struct {
	// Forwarded (RFC 7239). false: the targets get no Forwarded field, not
	// even a client's (which nothing would have checked).
	Forwarded *bool `yaml:"forwarded,omitempty" json:"forwarded,omitempty"`
	// XForwarded: X-Forwarded-For, -Proto and -Host. false: the targets
	// get none of them, not even a client's.
	XForwarded *bool `yaml:"x_forwarded,omitempty" json:"x_forwarded,omitempty"`
	// Via, on the request and on the response. false: the gateway adds
	// none (a Via the client or target sent passes as it came).
	Via *bool `yaml:"via,omitempty" json:"via,omitempty"`
	// RequestID: X-Request-Id, the client's kept when sane, else one
	// generated. false: the gateway sends none of its own, and a client's
	// passes as it came; the access log still has one.
	RequestID *bool `yaml:"request_id,omitempty" json:"request_id,omitempty"`
	// Traceparent: the W3C trace context, continued or started. false: the
	// gateway starts no trace, and a client's traceparent and tracestate
	// pass as they came.
	Traceparent *bool `yaml:"traceparent,omitempty" json:"traceparent,omitempty"`
}

// Off reports whether a ProxyHeaders switch was set to false.
func Off(b *bool) bool { return b != nil && !*b }

// UpstreamTLS configures TLS to a service's https:// targets.
type UpstreamTLS struct {
	// CAFile is a PEM bundle of roots to trust instead of the system's.
	CAFile string `yaml:"ca_file,omitempty" json:"ca_file,omitempty"`
	// ServerName is the SNI and the name verified; default the target's
	// host.
	ServerName string `yaml:"server_name,omitempty" json:"server_name,omitempty"`
	// CertFile and KeyFile are a client certificate for mutual TLS.
	CertFile string `yaml:"cert_file,omitempty" json:"cert_file,omitempty"`
	KeyFile  string `yaml:"key_file,omitempty" json:"key_file,omitempty"`
}

// Target is one instance of a service.
type Target struct {
	// URL is the target's base: scheme (http or https), host and port. A
	// path, if any, is prefixed to every forwarded request path.
	URL string `yaml:"url" json:"url"`
	// Weight for weighted balancing, 1..MaxWeight; default 1. An explicit 0
	// is refused rather than taken to mean "no traffic" (as some
	// gateways do) or 1: a target is taken out by removing it.
	Weight *int `yaml:"weight,omitempty" json:"weight,omitempty"`
	// Region the target runs in (used by geo routing). Empty means the
	// node's own region.
	Region string `yaml:"region,omitempty" json:"region,omitempty"`
}

// Balancer chooses a target for each request.
type Balancer struct {
	// Policy is "round_robin" (weighted; default), "least_requests" (power
	// of two random choices on in-flight requests) or "consistent_hash".
	Policy string `yaml:"policy,omitempty" json:"policy,omitempty"`
	// HashOn is the key for consistent_hash: "header:NAME", "cookie:NAME"
	// or "client_ip". A missing header or cookie falls back to client IP.
	HashOn string `yaml:"hash_on,omitempty" json:"hash_on,omitempty"`
}

// Timeouts bound each stage of a proxied request. Zero means the default.
type Timeouts struct {
	// Connect bounds the TCP (and TLS) connection to a target. Default 5s.
	Connect time.Duration `yaml:"connect,omitempty" json:"connect,omitempty"`
	// ResponseHeader bounds the wait for the response headers after the
	// request was written. Default 30s.
	ResponseHeader time.Duration `yaml:"response_header,omitempty" json:"response_header,omitempty"`
	// Send bounds how long an HTTP/1.1 upstream may take none of a request
	// body being sent to it (a write to it that long blocked), nginx's
	// proxy_send_timeout and Kong's write_timeout. Default 60s.
	Send time.Duration `yaml:"send,omitempty" json:"send,omitempty"`
	// Read bounds how long the upstream may send nothing while the gateway
	// waits for more of a response body (between two reads; the head is
	// ResponseHeader's), nginx's proxy_read_timeout and Kong's
	// read_timeout. Default 60s.
	Read time.Duration `yaml:"read,omitempty" json:"read,omitempty"`
	// Total bounds the whole exchange including the response body and all
	// retries. Default 0: no total bound (streams may run for long), except
	// that the response header timeout still applies.
	Total time.Duration `yaml:"total,omitempty" json:"total,omitempty"`
}

// Retries re-send idempotent requests (GET, HEAD, OPTIONS, PUT, DELETE,
// TRACE) whose body, if any, fits the retry buffer.
type Retries struct {
	// Attempts is the number of retries after the first try (default 2;
	// 0 means none).
	Attempts *int `yaml:"attempts,omitempty" json:"attempts,omitempty"`
	// On lists the conditions that cause a retry: "connect_failure",
	// "timeout" (response header timeout), "reset" (the connection broke
	// before a response), or an HTTP status code such as 502, 503, 504.
	// Default: connect_failure, reset, 502, 503, 504.
	On []string `yaml:"on,omitempty" json:"on,omitempty" scalar:"text"`
	// Budget caps retries as a share of requests so that retries cannot
	// multiply load on a failing service.
	Budget RetryBudget `yaml:"budget,omitempty" json:"budget,omitempty"`
	// Backoff between attempts: exponential from Base, capped at Max,
	// with full jitter. Defaults 25ms and 250ms.
	Backoff Backoff `yaml:"backoff,omitempty" json:"backoff,omitempty"`
}

// RetryBudget allows retries up to Ratio of the requests of the last 10
// seconds, plus MinPerSecond retries per second regardless of traffic
// (a reserve of 10 × MinPerSecond over the window, as in Linkerd and
// Finagle). Unset fields take the defaults; an explicit 0 means none.
type RetryBudget struct {
	// Ratio of retries to requests over the last 10 seconds; default 0.2.
	Ratio *float64 `yaml:"ratio,omitempty" json:"ratio,omitempty"`
	// MinPerSecond retries always allowed; default 10.
	MinPerSecond *int `yaml:"min_per_second,omitempty" json:"min_per_second,omitempty"`
}

// Backoff is an exponential backoff with jitter.
type Backoff struct {
	Base time.Duration `yaml:"base,omitempty" json:"base,omitempty"`
	Max  time.Duration `yaml:"max,omitempty" json:"max,omitempty"`
}

// HealthCheck is an active HTTP health check sent to every target.
type HealthCheck struct {
	// Path requested with GET; required.
	Path string `yaml:"path" json:"path"`
	// Host header to send; default the target's host.
	Host string `yaml:"host,omitempty" json:"host,omitempty"`
	// Interval between checks; default 10s.
	Interval time.Duration `yaml:"interval,omitempty" json:"interval,omitempty"`
	// Timeout of one check; default 2s.
	Timeout time.Duration `yaml:"timeout,omitempty" json:"timeout,omitempty"`
	// HealthyThreshold successes in a row bring a target back; default 2.
	HealthyThreshold int `yaml:"healthy_threshold,omitempty" json:"healthy_threshold,omitempty"`
	// UnhealthyThreshold failures in a row take it out; default 3.
	UnhealthyThreshold int `yaml:"unhealthy_threshold,omitempty" json:"unhealthy_threshold,omitempty"`
	// ExpectStatus is the accepted status range such as "200-299"; default
	// "200-399".
	ExpectStatus string `yaml:"expect_status,omitempty" json:"expect_status,omitempty" scalar:"text"`
}

// OutlierDetection ejects a target after consecutive failures (connect
// errors, timeouts, 502, 503, 504) for BaseEjection times the number of
// times it was ejected, capped at MaxEjection.
type OutlierDetection struct {
	// ConsecutiveFailures before ejection; default 5.
	ConsecutiveFailures int `yaml:"consecutive_failures,omitempty" json:"consecutive_failures,omitempty"`
	// BaseEjection default 30s; MaxEjection default 300s.
	BaseEjection time.Duration `yaml:"base_ejection,omitempty" json:"base_ejection,omitempty"`
	MaxEjection  time.Duration `yaml:"max_ejection,omitempty" json:"max_ejection,omitempty"`
	// MaxEjectionPercent (1..100) of the targets may be ejected at once;
	// default 50. One may always be, and the last available target always
	// stays in.
	MaxEjectionPercent *int `yaml:"max_ejection_percent,omitempty" json:"max_ejection_percent,omitempty"`
}

// Route sends matching requests to a service.
type Route struct {
	// Name identifies the route in logs, metrics and errors; required,
	// unique.
	Name  string `yaml:"name" json:"name"`
	Match Match  `yaml:"match" json:"match"`
	// Service is the name of the service that answers.
	Service string `yaml:"service" json:"service"`
	// Rewrite changes the request's path and host before forwarding.
	Rewrite *Rewrite `yaml:"rewrite,omitempty" json:"rewrite,omitempty"`
	// RequestHeaders and ResponseHeaders are changed on the way through.
	RequestHeaders  HeaderOps `yaml:"request_headers,omitempty" json:"request_headers,omitempty"`
	ResponseHeaders HeaderOps `yaml:"response_headers,omitempty" json:"response_headers,omitempty"`
	// Limits on body sizes.
	Limits Limits `yaml:"limits,omitempty" json:"limits,omitempty"`
	// AllowPlainHTTP serves the route on the plain HTTP listener too,
	// instead of redirecting to HTTPS (for plain-HTTP APIs and clients).
	// Without an HTTPS listener every route is served on plain HTTP.
	AllowPlainHTTP bool `yaml:"allow_plain_http,omitempty" json:"allow_plain_http,omitempty"`
}

// Match is what a request must have for a route to take it. All given
// conditions must hold. Exactly one of Path and PathPrefix may be set; with
// neither, the route matches every path (as PathPrefix "/").
type Match struct {
	// Hosts the route serves: exact names or "*.example.com" wildcards
	// (one or more labels). Empty means any host.
	Hosts []string `yaml:"hosts,omitempty" json:"hosts,omitempty"`
	// Path is an exact path ("/status") or a template with parameters
	// ("/users/{id}", "/files/{rest...}") that rewrites can use.
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	// PathPrefix matches the path and everything below it, on segment
	// boundaries: "/api" matches "/api" and "/api/x", not "/apix".
	PathPrefix string `yaml:"path_prefix,omitempty" json:"path_prefix,omitempty"`
	// Methods allowed; empty means any. GET also admits HEAD.
	Methods []string `yaml:"methods,omitempty" json:"methods,omitempty"`
	// Headers and Query that must be present (and match, if a value is
	// given).
	Headers []ValueMatch `yaml:"headers,omitempty" json:"headers,omitempty"`
	Query   []ValueMatch `yaml:"query,omitempty" json:"query,omitempty"`
}

// ValueMatch tests one header or query parameter. Set at most one of Exact,
// Prefix and Regex; with none, the parameter need only be present.
type ValueMatch struct {
	Name   string `yaml:"name" json:"name"`
	Exact  string `yaml:"exact,omitempty" json:"exact,omitempty" scalar:"text"`
	Prefix string `yaml:"prefix,omitempty" json:"prefix,omitempty" scalar:"text"`
	// Regex must match the whole value (RE2 syntax).
	Regex string `yaml:"regex,omitempty" json:"regex,omitempty" scalar:"text"`
}

// Rewrite changes what is forwarded.
type Rewrite struct {
	// Path replaces the request path. It may use the parameters of the
	// route's path template: "/v2/users/{id}". The query is kept.
	Path string `yaml:"path,omitempty" json:"path,omitempty"`
	// StripPrefix removes the route's path_prefix from the path before
	// forwarding ("/api/users" with prefix "/api" becomes "/users").
	StripPrefix bool `yaml:"strip_prefix,omitempty" json:"strip_prefix,omitempty"`
	// Host sets the Host header sent upstream. Default: the client's Host
	// is kept.
	Host string `yaml:"host,omitempty" json:"host,omitempty"`
}

// HeaderOps change headers: Remove first, then Set (replace), then Add
// (append).
type HeaderOps struct {
	Set    map[string]string `yaml:"set,omitempty" json:"set,omitempty" scalar:"text"`
	Add    map[string]string `yaml:"add,omitempty" json:"add,omitempty" scalar:"text"`
	Remove []string          `yaml:"remove,omitempty" json:"remove,omitempty"`
}

// Limits bound request and response bodies. Zero means the node default.
type Limits struct {
	// MaxRequestBody: larger requests get 413. Default 10 MiB.
	MaxRequestBody ByteSize `yaml:"max_request_body,omitempty" json:"max_request_body,omitempty"`
	// MaxResponseBody: a larger upstream response is cut off (502 if
	// known before the headers are sent, else the stream is aborted).
	// Default 0: unlimited.
	MaxResponseBody ByteSize `yaml:"max_response_body,omitempty" json:"max_response_body,omitempty"`
}

// Hash returns the content hash of the document: the hex SHA-256 of its
// canonical JSON encoding, so that its formatting (YAML or JSON, layout,
// key order, quoting, comments, anchors, how a duration is spelled) does
// not change it. Two spellings of one meaning otherwise (a header name's
// case, a default written out) have different hashes.
func (d *Document) Hash() string {
	b, err := json.Marshal(d)
	if err != nil {
		// Document holds only strings, numbers, slices and string maps.
		panic("config: cannot encode document: " + err.Error())
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// MaxWeight is the largest target weight: the balancers' own bound, which
// keeps the consistent-hash ring small.
const MaxWeight = upstream.MaxWeight
