package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

const validDoc = `
services:
  - name: users
    protocol: h2c
    targets:
      - url: http://10.0.0.1:8080
        weight: 3
        region: eu-west
      - url: http://10.0.0.2:8080
    balancer: {policy: consistent_hash, hash_on: "header:X-User"}
    timeouts: {connect: 2s, response_header: 5s, total: 30s}
    retries:
      attempts: 2
      on: [connect_failure, "503"]
      budget: {ratio: 0.1, min_per_second: 5}
      backoff: {base: 10ms, max: 100ms}
    health_check: {path: /healthz, interval: 2s, expect_status: "200-299"}
    outlier_detection: {consecutive_failures: 3, base_ejection: 10s}
    max_concurrent_requests: 100
routes:
  - name: get-user
    match:
      hosts: [api.example.com, "*.example.com"]
      path: /users/{id}
      methods: [GET]
      headers: [{name: X-Client, exact: mobile}]
      query: [{name: debug}]
    service: users
    rewrite: {path: "/v1/users/{id}", host: users.internal}
    request_headers: {set: {X-Env: prod}, remove: [Cookie]}
    response_headers: {add: {X-Served-By: meridian}}
    limits: {max_request_body: 1MiB, max_response_body: 10MB}
`

func TestParseValid(t *testing.T) {
	doc, err := Parse([]byte(validDoc))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if got, want := len(doc.Services[0].Targets), 2; got != want {
		t.Fatalf("targets: got %d; want %d", got, want)
	}
	if got, want := doc.Routes[0].Limits.MaxRequestBody, ByteSize(1<<20); got != want {
		t.Errorf("max_request_body: got %d; want %d", got, want)
	}
	if got, want := doc.Routes[0].Limits.MaxResponseBody, ByteSize(10_000_000); got != want {
		t.Errorf("max_response_body: got %d; want %d", got, want)
	}
	if got := doc.Services[0].Timeouts.Connect.String(); got != "2s" {
		t.Errorf("connect timeout: got %s; want 2s", got)
	}
}

func TestParseJSON(t *testing.T) {
	j := `{"services":[{"name":"a","targets":[{"url":"http://127.0.0.1:1"}]}],
	"routes":[{"name":"r","match":{"path_prefix":"/"},"service":"a"}]}`
	doc, err := Parse([]byte(j))
	if err != nil {
		t.Fatalf("Parse JSON: %v", err)
	}
	if doc.Routes[0].Service != "a" {
		t.Fatalf("got service %q; want a", doc.Routes[0].Service)
	}
}

// Free text (header values, match values, status ranges, retry
// conditions) may be written as a YAML number or boolean: it is the text
// as written. Names and references may not (TestParseErrors).
func TestNumbersAsFreeText(t *testing.T) {
	doc, err := Parse([]byte(`services:
  - name: s
    targets: [{url: "http://h:1"}]
    health_check: {path: /h, expect_status: 200}
    retries: {on: [502, reset]}
routes:
  - name: r
    match: {path_prefix: /, headers: [{name: X-V, exact: 2}], query: [{name: page, prefix: 10}]}
    service: s
    request_headers: {set: {X-N: 12, X-B: true}, add: {X-F: 1.50}}
`))
	if err != nil {
		t.Fatal(err)
	}
	s, r := doc.Services[0], doc.Routes[0]
	got := []string{s.HealthCheck.ExpectStatus, s.Retries.On[0], r.Match.Headers[0].Exact, r.Match.Query[0].Prefix,
		r.RequestHeaders.Set["X-N"], r.RequestHeaders.Set["X-B"], r.RequestHeaders.Add["X-F"]}
	want := []string{"200", "502", "2", "10", "12", "true", "1.50"}
	if !slices.Equal(got, want) {
		t.Errorf("free-text fields = %q; want %q", got, want)
	}
}

func TestHashIgnoresFormatting(t *testing.T) {
	a, err := Parse([]byte("services: [{name: a, targets: [{url: 'http://h:1'}]}]\nroutes: []\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse([]byte("# comment\nservices:\n  - name: a\n    targets:\n      - url: http://h:1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Hash() != b.Hash() {
		t.Fatalf("same document, different hashes: %s vs %s", a.Hash(), b.Hash())
	}
	c, _ := Parse([]byte("services: [{name: b, targets: [{url: 'http://h:1'}]}]\n"))
	if c.Hash() == a.Hash() {
		t.Fatal("different documents, same hash")
	}
}

// Each case must fail with an error naming the line and the field path.
func TestParseErrors(t *testing.T) {
	base := "services:\n  - name: s\n    targets: [{url: 'http://127.0.0.1:1'}]\nroutes:\n"
	cases := []struct {
		name, doc string
		line      int
		contains  []string
	}{
		{"unknown field", base + "  - name: r\n    service: s\n    sevice: s\n", 7, []string{"routes[0].sevice", `unknown field "sevice"`}},
		{"wrong type", base + "  - name: r\n    service: s\n    limits: {max_request_body: lots}\n", 7, []string{"invalid size"}},
		{"string for an integer", "services:\n  - name: s\n    targets: [{url: 'http://h:1', weight: heavy}]\n", 3, []string{"services[0].targets[0].weight", `wrong type: want an integer, got the string "heavy"`}},
		{"list for a string", base + "  - name: [r]\n    service: s\n", 5, []string{"routes[0].name:", "wrong type: want a string, got a list"}},
		{"two fields on a line", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    timeouts: {connect: 1s, total: forever}\n", 4, []string{"services[0].timeouts.total:", `got the string "forever"`}},
		{"unknown field before a list on its line", base + "  - name: r\n    service: s\n    tags: [a, b]\n", 7, []string{"routes[0].tags:", `unknown field "tags"`}},
		{"first of two on a line", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    timeouts: {connect: whenever, total: 1s}\n", 4, []string{"services[0].timeouts.connect:", `got the string "whenever"`}},
		{"string for a bool", base + "  - name: r\n    service: s\n    allow_plain_http: sometimes\n", 7, []string{"routes[0].allow_plain_http", `wrong type: want true or false, got the string "sometimes"`}},
		{"duplicate key in one-line JSON", `{"services":[{"name":"s","targets":[{"url":"http://h:1"}]}],"routes":[{"name":"r","service":"s","service":"t","match":{"path_prefix":"/"}}]}`, 1, []string{"routes[0].service:", `mapping key "service" already defined`}},
		{"quoted no for a bool", base + "  - name: r\n    service: s\n    allow_plain_http: \"no\"\n", 7, []string{"routes[0].allow_plain_http", `wrong type: want true or false, got the string "no"`}},
		{"quoted on for a bool", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    proxy_headers: {via: 'on'}\n", 4, []string{"services[0].proxy_headers.via", `wrong type: want true or false, got the string "on"`}},
		{"bad duration", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    timeouts: {connect: soon}\n", 4, []string{"services[0].timeouts.connect"}},
		{"unknown service", base + "  - name: r\n    service: nope\n", 6, []string{"routes[0].service", `unknown service "nope"`}},
		{"duplicate route", base + "  - name: r\n    service: s\n  - name: r\n    service: s\n", 7, []string{"routes[1].name", "duplicate"}},
		{"bad template", base + "  - name: r\n    service: s\n    match: {path: '/a/{x'}\n", 7, []string{"routes[0].match.path"}},
		{"rewrite var", base + "  - name: r\n    service: s\n    match: {path: '/a/{x}'}\n    rewrite: {path: '/b/{y}'}\n", 8, []string{"routes[0].rewrite.path", "{y}"}},
		{"rewrite escaped", base + "  - name: r\n    service: s\n    match: {path: '/a/{x}'}\n    rewrite: {path: '/b%2Fc/{x}'}\n", 8, []string{"routes[0].rewrite.path", "without %-escapes"}},
		{"rewrite dot segment", base + "  - name: r\n    service: s\n    match: {path: '/a/{x}'}\n    rewrite: {path: '/b/../{x}'}\n", 8, []string{"routes[0].rewrite.path", ". or .. segments"}},
		{"rewrite query", base + "  - name: r\n    service: s\n    match: {path: '/a/{x}'}\n    rewrite: {path: '/b/{x}?v=1'}\n", 8, []string{"routes[0].rewrite.path", "query is kept"}},
		{"bad scheme", "services:\n  - name: s\n    targets:\n      - url: ftp://h\n", 4, []string{"services[0].targets[0].url", "ftp"}},
		{"no targets", "services:\n  - name: s\n", 2, []string{"services[0].targets"}},
		{"bad policy", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    balancer: {policy: random}\n", 4, []string{"services[0].balancer.policy"}},
		{"bad regex", base + "  - name: r\n    service: s\n    match:\n      headers: [{name: X, regex: '('}]\n", 8, []string{"routes[0].match.headers[0].regex"}},
		// The error quotes what was written, not the anchored form.
		{"bad regex quoted as written", base + "  - name: r\n    service: s\n    match:\n      headers: [{name: X, regex: '([\"'}]\n", 8, []string{"routes[0].match.headers[0].regex: invalid regular expression: error parsing regexp: missing closing ]: `[\"`"}},
		{"control character in a header value", base + "  - name: r\n    service: s\n    request_headers: {set: {X-A: \"a\\u0001b\"}}\n", 7, []string{"routes[0].request_headers.set", `value of "X-A" holds the control character U+0001`}},
		{"DEL in a response header value", base + "  - name: r\n    service: s\n    response_headers: {add: {X-A: \"a\\u007fb\"}}\n", 7, []string{"routes[0].response_headers.add", `value of "X-A" holds the control character U+007F`}},
		{"padded header value", base + "  - name: r\n    service: s\n    request_headers: {set: {X-A: ' padded '}}\n", 7, []string{"routes[0].request_headers.set", `value of "X-A" begins or ends with a space or tab`}},
		{"hop header op", base + "  - name: r\n    service: s\n    request_headers: {set: {Connection: x}}\n", 7, []string{"routes[0].request_headers.set", "hop-by-hop"}},
		{"same header twice", base + "  - name: r\n    service: s\n    request_headers: {set: {X-A: a, x-a: b}}\n", 7, []string{"routes[0].request_headers.set", `"X-A" and "x-a" are the same header`}},
		{"host header op", base + "  - name: r\n    service: s\n    request_headers: {set: {Host: x}}\n", 7, []string{"routes[0].request_headers.set", "rewrite.host"}},
		{"length header op", base + "  - name: r\n    service: s\n    response_headers: {remove: [Content-Length]}\n", 7, []string{"routes[0].response_headers.remove", "frames the message"}},
		{"date response op", base + "  - name: r\n    service: s\n    response_headers: {remove: [Date]}\n", 7, []string{"routes[0].response_headers.remove", "RFC 9110"}},
		{"path and prefix", base + "  - name: r\n    service: s\n    match: {path: /a, path_prefix: /b}\n", 7, []string{"routes[0].match", "not both"}},
		{"control character in a comment", base + "  - name: r # a bell \a\n", 5, []string{"control characters are not allowed"}},
		{"control character after CR line ends", strings.ReplaceAll(base, "\n", "\r") + "  - name: r # a bell \a\r", 5, []string{"control characters are not allowed"}},
		{"control character after CR LF line ends", strings.ReplaceAll(base, "\n", "\r\n") + "  - name: r # a bell \a\r\n", 5, []string{"control characters are not allowed"}},
		{"bytes that are not UTF-8", base + "  - name: r\xff\n", 5, []string{"invalid leading UTF-8 octet"}},
		{"dot segment", base + "  - name: r\n    service: s\n    match: {path_prefix: /a/../b}\n", 7, []string{"'..'"}},
		{"upper host", base + "  - name: r\n    service: s\n    match: {hosts: [API.example.com]}\n", 7, []string{"routes[0].match.hosts[0]"}},
		{"h2c https", "services:\n  - name: s\n    protocol: h2c\n    targets: [{url: 'https://h:1'}]\n", 4, []string{"h2c"}},
		{"weight 0", "services:\n  - name: s\n    targets: [{url: 'http://h:1', weight: 0}]\n", 3, []string{"services[0].targets[0].weight: must be between 1 and 1000 (got 0); to stop sending a target traffic, remove it"}},
		{"weight over the largest", "services:\n  - name: s\n    targets: [{url: 'http://h:1', weight: 1001}]\n", 3, []string{"services[0].targets[0].weight: must be between 1 and 1000 (got 1001)"}},
		{"fraction for an integer", "services:\n  - name: s\n    targets: [{url: 'http://h:1', weight: 2.9}]\n", 3, []string{`services[0].targets[0].weight: wrong type: want an integer, got the number "2.9"`}},
		{"fraction for a threshold", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    health_check:\n      path: /h\n      healthy_threshold: 2.7\n", 6, []string{`services[0].health_check.healthy_threshold: wrong type: want an integer, got the number "2.7"`}},
		{"bad size in flow style", base + "  - name: r\n    service: s\n    limits: {max_request_body: 1.5MiB, max_response_body: 1GB}\n", 7, []string{`routes[0].limits.max_request_body: invalid size "1.5MiB"`}},
		{"NaN ratio", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    retries: {budget: {ratio: .nan}}\n", 4, []string{"services[0].retries.budget.ratio: must be between 0 and 1 (got NaN)"}},
		{"same target twice", "services:\n  - name: s\n    targets:\n      - url: http://h:1\n      - url: HTTP://H:1/\n", 5, []string{`services[0].targets[1].url: "HTTP://H:1/" is the same destination as targets[0] ("http://h:1")`}},
		{"default port named", "services:\n  - name: s\n    targets:\n      - url: https://h\n      - url: https://h:443\n", 5, []string{"services[0].targets[1].url", "same destination as targets[0]"}},
		{"huge threshold", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    health_check:\n      path: /h\n      healthy_threshold: 1000000000000\n", 6, []string{"services[0].health_check.healthy_threshold: must be at most 1000 (got 1000000000000)"}},
		{"huge consecutive failures", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    outlier_detection:\n      consecutive_failures: 1001\n", 5, []string{"services[0].outlier_detection.consecutive_failures: must be at most 1000 (got 1001)"}},
		{"fragment in health path", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    health_check:\n      path: /h?x=1#frag\n", 5, []string{`services[0].health_check.path: "/h?x=1#frag" has a fragment`}},
		{"integer too large", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    max_concurrent_requests: 99999999999999999999\n", 4, []string{"services[0].max_concurrent_requests: out of range: 99999999999999999999 is beyond what the field can hold"}},
		{"integer too small", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    max_concurrent_requests: -9223372036854775809\n", 4, []string{"services[0].max_concurrent_requests: out of range: -9223372036854775809"}},
		{"duration too long", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    timeouts: {connect: 9999999h}\n", 4, []string{`services[0].timeouts.connect: out of range: "9999999h" is longer than the longest duration`}},
		{"match on a hop-by-hop header", base + "  - name: r\n    service: s\n    match: {headers: [{name: Connection, exact: x}]}\n", 7, []string{`routes[0].match.headers[0].name: "Connection" is a hop-by-hop header`}},
		{"match on HTTP2-Settings", base + "  - name: r\n    service: s\n    match: {headers: [{name: HTTP2-Settings}]}\n", 7, []string{`routes[0].match.headers[0].name: "HTTP2-Settings" is a hop-by-hop header`}},
		{"match on X-Forwarded-Client-Cert", base + "  - name: r\n    service: s\n    match: {headers: [{name: x-forwarded-client-cert}]}\n", 7, []string{`"x-forwarded-client-cert" is dropped from every client`}},
		{"Expect set on requests", base + "  - name: r\n    service: s\n    request_headers: {set: {Expect: 100-continue}}\n", 7, []string{`routes[0].request_headers.set: "Expect" is answered by the gateway itself`}},
		{"escaped match path", base + "  - name: r\n    service: s\n    match: {path: /a/%2F}\n", 7, []string{"routes[0].match.path: must be written decoded"}},
		{"query in a prefix", base + "  - name: r\n    service: s\n    match: {path_prefix: '/a?b'}\n", 7, []string{"routes[0].match.path_prefix: must be a path alone"}},
		{"host listed twice", base + "  - name: r\n    service: s\n    match: {hosts: [a.test, a.test]}\n", 7, []string{"routes[0].match.hosts[1]: a.test listed twice (also hosts[0])"}},
		{"CONNECT route", base + "  - name: r\n    service: s\n    match: {methods: [CONNECT]}\n", 7, []string{"routes[0].match.methods[0]: CONNECT is answered by the gateway"}},
		{"rewrite host with a template", base + "  - name: r\n    service: s\n    rewrite: {host: '{x}.internal'}\n", 7, []string{`routes[0].rewrite.host: invalid host "{x}.internal"`}},
		{"octal integer", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    retries: {attempts: 011}\n", 4, []string{"services[0].retries.attempts: wrong spelling: write integers in plain decimal digits (got 011, which YAML reads as 9)"}},
		{"hex and underscored integers", "services:\n  - name: s\n    targets: [{url: 'http://h:1', weight: 0x10}]\n    max_concurrent_requests: 1_000\n", 3, []string{"services[0].targets[0].weight: wrong spelling: write integers in plain decimal digits (got 0x10, which YAML reads as 16)", "services[0].max_concurrent_requests: wrong spelling: write integers in plain decimal digits (got 1_000, which YAML reads as 1000)"}},
		{"binary tag", "services:\n  - name: !!binary cw==\n    targets: [{url: 'http://h:1'}]\n", 2, []string{"services[0].name: YAML tag !!binary is not taken"}},
		{"application tag", "services:\n  - name: s\n    targets: [{url: !!python/object:os.system 'http://h:1'}]\n", 3, []string{"YAML tag !!python/object:os.system is not taken"}},
		{"local tag on a mapping", "services:\n  - !svc\n    name: s\n    targets: [{url: 'http://h:1'}]\n", 2, []string{"services[0]: YAML tag !svc is not taken"}},
		{"duration too long, many digits", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    timeouts: {connect: 99999999999999999999999999s}\n", 4, []string{`out of range: "99999999999999999999999999s"`}},
		{"negative threshold", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    health_check:\n      path: /h\n      unhealthy_threshold: -1\n", 6, []string{"services[0].health_check.unhealthy_threshold: must not be negative"}},
		{"max ejection percent 0", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    outlier_detection:\n      max_ejection_percent: 0\n", 5, []string{"services[0].outlier_detection.max_ejection_percent: must be between 1 and 100"}},
		{"max ejection under the default base", "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    outlier_detection:\n      max_ejection: 1s\n", 5, []string{"services[0].outlier_detection.max_ejection: 1s is shorter than base_ejection (30s)"}},
		{"syntax", "services: [\n", 0, []string{"invalid YAML"}},
		{"list item indented wrong", "services:\n  - name: app\n   targets: [{url: 'http://h:1'}]\n", 2, []string{"invalid YAML: did not find expected '-' indicator (on this line or below it"}},
		{"map key indented wrong", "a:\n  b: 1\n c: 2\n", 3, []string{"invalid YAML: did not find expected key"}},
		{"flow list not closed", "x: 1\ny: [1, 2\nz: 3\n", 2, []string{"invalid YAML: did not find expected ',' or ']' (in the list or map opened on this line)"}},
		{"flow list on the first line not closed", "services: [\nroutes: x", 1, []string{"invalid YAML: did not find expected ',' or ']' (in the list or map opened on this line)"}},
		{"inner flow map not closed", "a: 'x [ # y'\nb: [1, {c: 2}\nd: 3\n", 2, []string{"(in the list or map opened on this line)"}},
		{"alias used as the wrong type", "services:\n  - name: a\n    targets: &t [{url: 'http://h:1'}]\nroutes:\n  - name: all\n    match: {path_prefix: /, methods: *t}\n    service: a\n", 3, []string{"services[0].targets[0]: wrong type: want a string, got a mapping (the value is anchored as &t, used through *t on line 6: the error may be where it is used)"}},
		{"number for a name", "services:\n  - name: 5\n    targets: [{url: 'http://h:1'}]\n", 2, []string{"services[0].name: wrong type: want a string, got the integer 5 (quote it if the text is meant)"}},
		{"boolean for a name in JSON", `{"services": [{"name": true, "targets": [{"url": "http://h:1"}]}]}`, 1, []string{"services[0].name: wrong type: want a string, got the boolean true"}},
		{"scanner error", "a: 1\n b: 2\nc: 3\n", 2, []string{"invalid YAML: mapping values are not allowed in this context"}},
		{"JSON syntax", "{\"services\": [{\"name\": \"a\"}\n", 0, []string{"invalid JSON"}},
		{"two docs", "services: []\n---\nroutes: []\n", 3, []string{"more than one YAML document"}},
		{"JSON and more", "{\"services\": []}\n{\"routes\": []}\n", 0, []string{"content after the JSON document ends"}},
		{"merge of a list", "x-a: &a [1, 2]\nservices:\n  - name: s\n    <<: *a\n", 4, []string{"services[0]: a merge key (<<) takes a mapping"}},
		{"merge of a scalar", "services:\n  - name: s\n    <<: 5\n", 3, []string{"a merge key (<<) takes a mapping"}},
		{"JSON and more after a blank line", "{\"services\": []}\n\n  {\"routes\": []}\n", 3, []string{"content after the JSON document ends"}},
		{"YAML flow document and more", "{services: [], routes: []} # ]\n\ngarbage\n", 3, []string{"content after the document's closing bracket"}},
		{"JSON, a comment, and more", "{\"services\": []}\n# a note\ngarbage\n", 3, []string{"content after the JSON document ends"}},
		{"JSON after a BOM, and more", "\ufeff{\"services\": []}\n\n\n{\"x\": 1}\n", 4, []string{"content after the JSON document ends"}},
		{"JSON and more on its line", "{\"services\": []} {\"routes\": []}\n", 1, []string{"content after the JSON document ends"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.doc))
			if err == nil {
				t.Fatal("Parse: got no error; want one")
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("got %T (%v); want config.Errors", err, err)
			}
			msg := err.Error()
			for _, c := range tc.contains {
				if !strings.Contains(msg, c) {
					t.Errorf("error %q does not contain %q", msg, c)
				}
			}
			if tc.line > 0 && es[0].Line != tc.line {
				t.Errorf("line: got %d; want %d (%s)", es[0].Line, tc.line, msg)
			}
		})
	}
}

func TestParseEmpty(t *testing.T) {
	for _, in := range []string{"", "   \n", "# only a comment\n"} {
		if _, err := Parse([]byte(in)); !errors.Is(err, ErrEmpty) {
			t.Errorf("Parse(%q): got %v; want ErrEmpty", in, err)
		}
	}
}

func TestByteSize(t *testing.T) {
	cases := map[string]ByteSize{"0": 0, "512": 512, "64KiB": 64 << 10, "10MiB": 10 << 20, "1GiB": 1 << 30, "10KB": 10000, "2MB": 2000000, "7B": 7}
	for in, want := range cases {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "-1", "ten", "1.5MiB", "1TiB", "99999999999GiB"} {
		if _, err := ParseByteSize(bad); err == nil {
			t.Errorf("ParseByteSize(%q): got no error", bad)
		}
	}
	// Too large is said so, not taken for a malformed number.
	for _, big := range []string{"99999999999GiB", "9223372036854775807", "99999999999999999999", "1048577GiB"} {
		if _, err := ParseByteSize(big); err == nil || !strings.Contains(err.Error(), "too large") {
			t.Errorf("ParseByteSize(%q): %v; want too large", big, err)
		}
	}
	if _, err := ParseByteSize("1048576GiB"); err != nil {
		t.Errorf("ParseByteSize(1048576GiB), the largest: %v", err)
	}
	if _, err := ParseByteSize("-99999999999999999999"); err == nil || strings.Contains(err.Error(), "too large") {
		t.Errorf("ParseByteSize of a huge negative: %v; want the usual error", err)
	}
}

func TestLineOfAndPathAt(t *testing.T) {
	src := "a:\n  b:\n    - x: 1\n    - x: 2\n      y: 3\n"
	var v map[string]any
	root, err := DecodeStrict([]byte(src), &v)
	if err != nil {
		t.Fatal(err)
	}
	if got := LineOf(root, "a.b[1].y"); got != 5 {
		t.Errorf("LineOf a.b[1].y: got %d; want 5", got)
	}
	if got := LineOf(root, "a.b[1].missing"); got != 4 {
		t.Errorf("LineOf of a missing field: got %d; want the parent's line 4", got)
	}
	if got := PathAt(root, 5); got != "a.b[1].y" {
		t.Errorf("PathAt 5: got %q; want a.b[1].y", got)
	}
}

// Finding the path of an error on a line walks the document without
// building a string per level: 5,000 levels of nested lists on one line
// cost a handful of allocations, not thousands (with one string per level,
// each of them the whole path so far, 20 such lists took 19 s and 500 MB).
func TestPathAtDeepNestingIsCheap(t *testing.T) {
	const depth = 5000
	src := "services:\n  - " + strings.Repeat("[", depth) + strings.Repeat("]", depth) + "\n"
	var root yaml.Node
	if err := yaml.Unmarshal([]byte(src), &root); err != nil {
		t.Fatal(err)
	}
	var got string
	allocs := testing.AllocsPerRun(3, func() { got = PathAt(&root, 2) })
	if got != "services[0]" {
		t.Errorf("PathAt = %q; want services[0]", got)
	}
	if allocs > 100 {
		t.Errorf("PathAt made %.0f allocations over %d levels; want them independent of the depth", allocs, depth)
	}
}

// A bool field written YAML 1.1's way (yes, on) is a JSON bool in the
// admin API's JSON view, as the decoder reads it.
func TestToJSONBoolFields(t *testing.T) {
	js, err := ToJSON([]byte("services: [{name: s, targets: [{url: 'http://h:1'}]}]\nroutes: [{name: r, service: s, allow_plain_http: yes, match: {path_prefix: /a}, rewrite: {strip_prefix: on}}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"allow_plain_http": true`) || !strings.Contains(string(js), `"strip_prefix": true`) {
		t.Errorf("JSON view:\n%s\nwant allow_plain_http and strip_prefix as true", js)
	}
}

// A document with mistakes all through is refused with the first MaxErrors
// of them and a count of the rest, not with an error list larger than the
// document.
func TestErrorsAreCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString("services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n")
	for i := range 150 {
		fmt.Fprintf(&b, "    u%d: 1\n", i)
	}
	_, err := Parse([]byte(b.String()))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("Parse: %v; want Errors", err)
	}
	if len(es) != MaxErrors+1 {
		t.Fatalf("%d errors; want the first %d and one for the rest", len(es), MaxErrors)
	}
	if first := es[0].Error(); first != `line 4: services[0].u0: unknown field "u0" in service` {
		t.Errorf("first error %q", first)
	}
	if last := es[MaxErrors].Msg; !strings.Contains(last, "and 50 more errors") {
		t.Errorf("last error %q; want it to count the 50 not listed", last)
	}
	// A wrong type the decoder lets through (a fraction for an integer)
	// is counted with the rest too.
	_, err = Parse([]byte(b.String() + "    retries: {attempts: 2.5}\n"))
	if !errors.As(err, &es) || len(es) != MaxErrors+1 {
		t.Fatalf("with a fraction for attempts: %v; want the first %d and one for the rest", err, MaxErrors)
	}
	if last := es[MaxErrors].Msg; !strings.Contains(last, "and 51 more errors") {
		t.Errorf("with a fraction for attempts, last error %q; want it to count 51 not listed", last)
	}

	// Validation's errors: the first 100 by line, the count last.
	b.Reset()
	b.WriteString("services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\nroutes:\n")
	for i := range 250 {
		fmt.Fprintf(&b, "  - {name: r%d, service: nope, match: {path_prefix: /}}\n", i)
	}
	_, err = Parse([]byte(b.String()))
	if !errors.As(err, &es) || len(es) != MaxErrors+1 {
		t.Fatalf("250 routes naming no service: %v; want the first %d and one for the rest", err, MaxErrors)
	}
	if first, last := es[0].Error(), es[MaxErrors-1].Error(); !strings.HasPrefix(first, "line 5: routes[0].service: unknown service") || !strings.HasPrefix(last, "line 104: routes[99].service") {
		t.Errorf("errors from %q to %q; want routes[0] to routes[99]", first, last)
	}
	if last := es[MaxErrors].Msg; !strings.Contains(last, "and 150 more errors") {
		t.Errorf("last error %q; want it to count the 150 not listed", last)
	}
}

func TestMethodListedTwice(t *testing.T) {
	doc := "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\nroutes:\n  - name: r\n    service: s\n    match: {path_prefix: /, methods: [GET, POST, GET]}\n"
	_, err := Parse([]byte(doc))
	if err == nil || !strings.Contains(err.Error(), "routes[0].match.methods[2]: GET listed twice (also methods[0])") {
		t.Fatalf("Parse: %v; want GET refused as listed twice", err)
	}
}

// A mapping of more keys than any field takes is refused before the
// decoder compares each of its keys with every other.
func TestOversizedMappingIsRefused(t *testing.T) {
	var b strings.Builder
	b.WriteString("services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    timeouts:\n")
	for i := range MaxMappingKeys + 1 {
		fmt.Fprintf(&b, "      k%d: 1s\n", i)
	}
	_, err := Parse([]byte(b.String()))
	var es Errors
	if !errors.As(err, &es) || len(es) != 1 {
		t.Fatalf("Parse: %v; want one error", err)
	}
	if got, want := es[0].Error(), fmt.Sprintf("line 5: services[0].timeouts: a mapping of %d keys; at most %d are taken", MaxMappingKeys+1, MaxMappingKeys); got != want {
		t.Errorf("error %q; want %q", got, want)
	}
}

// A key given many times is one error per repeat (the decoder's own check
// reports every pair: 1,225 errors for 50 repeats).
func TestRepeatedKeyIsOneErrorPerRepeat(t *testing.T) {
	var b strings.Builder
	b.WriteString("services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n")
	for range 50 {
		b.WriteString("    weight: 1\n")
	}
	_, err := Parse([]byte(b.String()))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("Parse: %v; want Errors", err)
	}
	if len(es) != 49 {
		t.Fatalf("%d errors; want 49, one per repeat", len(es))
	}
	for i, e := range es {
		if want := fmt.Sprintf(`line %d: services[0].weight: mapping key "weight" already defined at line 4`, 5+i); e.Error() != want {
			t.Fatalf("error %d: %q; want %q", i, e.Error(), want)
		}
	}
}

// Two errors of the same kind on one line (flow style) name their own
// fields, in order, not both the first.
func TestSameMistakeTwiceOnALine(t *testing.T) {
	doc := "services: [{name: s, targets: [{url: 'http://h:1'}], u: 1}, {name: t, targets: [{url: 'http://h:2'}], u: 1}]\n"
	_, err := Parse([]byte(doc))
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("Parse: %v; want two errors", err)
	}
	for i, want := range []string{"services[0].u", "services[1].u"} {
		if es[i].Path != want || es[i].Line != 1 {
			t.Errorf("error %d at line %d path %q; want line 1 path %q", i, es[i].Line, es[i].Path, want)
		}
	}
}

// The decoder's type errors and the ones it lets through are one stage:
// all of them are reported at once, in line order.
func TestTypeErrorsReportedTogether(t *testing.T) {
	doc := "services: [{name: a, targets: [{url: 'http://h:1'}], retries: {attempts: 2.5}}]\nroutes: [{name: r, service: a, match: {path_prefix: /a, methods: GET}}]\n"
	_, err := Parse([]byte(doc))
	var es Errors
	if !errors.As(err, &es) || len(es) != 2 {
		t.Fatalf("Parse: %v; want two errors", err)
	}
	if es[0].Path != "services[0].retries.attempts" || !strings.Contains(es[0].Msg, `got the number "2.5"`) || es[0].Line != 1 {
		t.Errorf("first error %v; want services[0].retries.attempts on line 1", es[0])
	}
	if es[1].Path != "routes[0].match.methods" || es[1].Line != 2 {
		t.Errorf("second error %v; want routes[0].match.methods on line 2", es[1])
	}
}

// A key given twice is reported with the other errors of its stage, as
// the decoder finds them; only a key given many times, or a mapping too
// large, ends the check early.
func TestKeyGivenTwiceBesideOtherErrors(t *testing.T) {
	doc := "services:\n  - name: a\n    name: b\n    targets: [{url: 'http://h:1'}]\nroutes:\n  - name: r\n    match: {path_prefix: /, methods: GET}\n    service: a\n    bogus: 1\n"
	_, err := Parse([]byte(doc))
	var es Errors
	if !errors.As(err, &es) {
		t.Fatalf("Parse: %v; want Errors", err)
	}
	var got []string
	for _, e := range es {
		got = append(got, e.Error())
	}
	for _, want := range []string{`line 3: services[0].name: mapping key "name" already defined at line 2`, "line 7: routes[0].match.methods:", `line 9: routes[0].bogus: unknown field "bogus"`} {
		found := false
		for _, g := range got {
			found = found || strings.HasPrefix(g, want)
		}
		if !found {
			t.Errorf("errors %q lack %q", got, want)
		}
	}
}

// A document's errors come in the same order every time, header edits
// given as maps included.
func TestErrorOrderIsStable(t *testing.T) {
	doc := "services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\nroutes:\n  - name: r\n    service: s\n" +
		"    request_headers: {set: {X-A: \" a\", X-B: \" b\", X-C: \" c\", X-D: \" d\"}, add: {X-E: \" e\", X-F: \" f\"}}\n"
	_, err := Parse([]byte(doc))
	if err == nil {
		t.Fatal("Parse: no error; want six")
	}
	first := err.Error()
	for range 20 {
		if _, err := Parse([]byte(doc)); err.Error() != first {
			t.Fatalf("errors came in another order:\n%s\nthen\n%s", first, err.Error())
		}
	}
	if i, j := strings.Index(first, `"X-A"`), strings.Index(first, `"X-E"`); i < 0 || j < 0 || i > j {
		t.Errorf("set's errors should come before add's, names sorted:\n%s", first)
	}
}

// A value an alias repeats is reported where it is written, once.
func TestErrorGivenOnceForItsAliases(t *testing.T) {
	doc := "x: &v {weight: heavy}\nservices:\n  - name: s\n    targets: [*v, *v, *v]\n"
	_, err := Parse([]byte(doc))
	if err == nil {
		t.Fatal("Parse: nil; want an error")
	}
	if n := strings.Count(err.Error(), "want an integer"); n != 1 {
		t.Errorf("the error is given %d times:\n%v\nwant once", n, err)
	}
}

func TestRewriteHost(t *testing.T) {
	for h, want := range map[string]bool{
		"api.internal": true, "API.internal:8080": true, "10.0.0.1": true, "10.0.0.1:80": true, "[::1]": true, "[::1]:443": true,
		"svc_1.local": true, "localhost": true,
		"{x}.internal": false, "[::1": false, "a?b#c": false, "x.test:99999": false, "x.test:0": false, "x.test:": false,
		"a@b": false, "a:b:c": false, "a..b": false, ".a": false, "a.": false, "a,b": false, `a"b`: false, "é.test": false,
		"*.x": false, "-a.x": false, "::1": false, "[fe80::1%eth0]": false, "1.2.3.4.5": true, "x:+80": false,
	} {
		if got := validRewriteHost(h); got != want {
			t.Errorf("validRewriteHost(%q) = %v; want %v", h, got, want)
		}
	}
}
