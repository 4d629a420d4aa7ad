package edge

import (
	"math/rand/v2"
	"net/textproto"
	"strings"
	"testing"
)

// The word-at-a-time checks agree with the byte loops they replace, for
// every byte value at every position of every length up to 40, and for
// random strings that mix in tabs, DELs and high bytes.
func TestControlCharChecksMatchByteLoops(t *testing.T) {
	hasCtl := func(v []byte) bool {
		for _, b := range v {
			if b < ' ' && b != '\t' || b == 0x7f {
				return true
			}
		}
		return false
	}
	validVal := func(v string) bool {
		for i := 0; i < len(v); i++ {
			if c := v[i]; c == '\r' || c == '\n' || c == 0 {
				return false
			}
		}
		return true
	}
	check := func(b []byte) {
		t.Helper()
		if got, want := hasControlChar(b), hasCtl(b); got != want {
			t.Fatalf("hasControlChar(%q) = %v, want %v", b, got, want)
		}
		if got, want := validHeaderValue(string(b)), validVal(string(b)); got != want {
			t.Fatalf("validHeaderValue(%q) = %v, want %v", b, got, want)
		}
	}
	for n := 1; n <= 40; n++ {
		for pos := 0; pos < n; pos++ {
			for c := 0; c < 256; c++ {
				b := []byte(strings.Repeat("a", n))
				b[pos] = byte(c)
				check(b)
			}
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := []byte("aZ09 -\t\x7f\x80\xff\x1f\x00\r\n~!")
	for range 20000 {
		b := make([]byte, rng.IntN(70))
		for i := range b {
			if rng.IntN(8) == 0 {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			} else {
				b[i] = byte(0x20 + rng.IntN(0x5f))
			}
		}
		check(b)
	}
}

// tokenCanonical says "canonical" exactly when textproto would return the
// name unchanged, and "valid" exactly for tokens.
func TestTokenCanonicalMatchesTextproto(t *testing.T) {
	names := []string{"Host", "host", "HOST", "Content-Length", "content-length", "X-Forwarded-For",
		"X-forwarded-For", "x", "X", "-", "A-", "-a", "A--B", "a_b", "A_b", "Etag", "ETag",
		"Www-Authenticate", "WWW-Authenticate", "X-1-Y", "X-1-y", "Foo!#$%&'*+.^`|~"}
	rng := rand.New(rand.NewPCG(3, 4))
	alphabet := "abcXYZ-_019!~ :\x7f"
	for range 20000 {
		var sb strings.Builder
		for range 1 + rng.IntN(12) {
			sb.WriteByte(alphabet[rng.IntN(len(alphabet))])
		}
		names = append(names, sb.String())
	}
	for _, n := range names {
		valid, canon := tokenCanonical([]byte(n))
		if valid != validToken([]byte(n)) {
			t.Fatalf("tokenCanonical(%q) valid = %v; validToken says %v", n, valid, !valid)
		}
		if !valid {
			continue
		}
		if want := textproto.CanonicalMIMEHeaderKey(n) == n; canon != want {
			t.Fatalf("tokenCanonical(%q) canonical = %v; textproto gives %q", n, canon, textproto.CanonicalMIMEHeaderKey(n))
		}
	}
}
