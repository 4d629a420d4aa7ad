package config

import (
	"errors"
	"testing"
)

// FuzzParse feeds arbitrary bytes to the parser: it must never panic, and
// whatever it accepts must validate again and hash stably.
func FuzzParse(f *testing.F) {
	f.Add([]byte(validDoc))
	f.Add([]byte("services: [{name: a, targets: [{url: 'http://h:1'}]}]\nroutes: [{name: r, service: a, match: {path: '/x/{id}'}, rewrite: {path: '/{id}'}}]\n"))
	f.Add([]byte(`{"services":[{"name":"a","targets":[{"url":"http://127.0.0.1:1"}]}]}`))
	f.Add([]byte("routes: [{name: r, service: a}]\n"))
	f.Add([]byte("services: &a [*a]\n"))
	f.Add([]byte("a: b: c\n"))
	f.Add([]byte("services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    timeouts: {connect: -1s}\n"))
	f.Add([]byte("\xff\xfe"))
	f.Add([]byte("&00000: #0")) // a null key, which decoding into a struct skips
	f.Add([]byte("services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    retries: {budget: {ratio: .nan}}\n"))
	f.Add([]byte("services:\n  - name: s\n    targets: [{url: 'http://h:1'}]\n    retries: {budget: {ratio: -0.0}}\nroutes: [{name: r, service: s, request_headers: {set: {X-A: !!binary aGVsbG8=}}}]\n"))
	f.Add([]byte("services:\n  - name: s\n    targets: [{url: 'http://h:1', weight: 0x10}]\n    timeouts: &t {connect: 2s}\n  - name: u\n    targets: [{url: 'http://h:2'}]\n    timeouts: {<<: *t, total: 1m}\nroutes: [{name: r, service: s, request_headers: {set: {X-D: 2001-12-14, X-N: 1e3}}}]\n"))
	f.Add([]byte("services: [{name: s, targets: [{url: 'http://h:1'}]}]\nroutes: [{name: r, service: s, allow_plain_http: yes, match: {path_prefix: /a}, rewrite: {strip_prefix: 'on'}}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		doc, err := Parse(data)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) && !errors.Is(err, ErrEmpty) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			if err.Error() == "" {
				t.Fatal("empty error message")
			}
			return
		}
		if err := doc.Validate(); err != nil {
			t.Fatalf("accepted document fails validation: %v", err)
		}
		if h1, h2 := doc.Hash(), doc.Hash(); h1 != h2 {
			t.Fatal("hash not stable")
		}
		// The admin API's JSON view is the same document.
		js, err := ToJSON(data)
		if err != nil {
			t.Fatalf("accepted document has no JSON view: %v", err)
		}
		again, err := Parse(js)
		if err != nil {
			t.Fatalf("JSON view refused: %v\n%s", err, js)
		}
		if again.Hash() != doc.Hash() {
			t.Fatalf("JSON view is another document:\n%s", js)
		}
	})
}
