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
	})
}
