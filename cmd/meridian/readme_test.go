package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/node"
)

// Every YAML example in the README must be valid, as `meridian validate`
// would judge it.
func TestReadmeExamplesValidate(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) < 2 {
		t.Fatalf("found %d yaml examples in the README; want at least 2", len(blocks))
	}
	// The examples name files under /etc/meridian; give them real ones.
	dir := writeExampleFiles(t)
	for i, b := range blocks {
		kind, _, err := validateBytes(bytes.ReplaceAll(b[1], []byte("/etc/meridian/"), []byte(dir+"/")))
		if err != nil {
			t.Errorf("README yaml example %d (%s) is invalid:\n%v", i+1, kind, err)
		}
	}
}

func TestValidateCommand(t *testing.T) {
	dir := t.TempDir()
	good := dir + "/good.yaml"
	bad := dir + "/bad.yaml"
	os.WriteFile(good, []byte("services: [{name: a, targets: [{url: 'http://127.0.0.1:1'}]}]\nroutes: [{name: r, service: a}]\n"), 0o600)
	os.WriteFile(bad, []byte("node:\n  listen: {http: nowhere}\ngateway:\n  routes: [{name: r, service: a}]\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"validate", good}, &out, &errb); code != 0 {
		t.Fatalf("validate good: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "valid gateway document") {
		t.Errorf("validate good: got %q", out.String())
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"validate", bad}, &out, &errb); code != 1 {
		t.Fatalf("validate bad: exit %d; want 1", code)
	}
	for _, want := range []string{"line 2: node.listen.http", "line 4: gateway.routes[0].service"} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("validate bad: output %q lacks %q", errb.String(), want)
		}
	}
	if code := run([]string{"validate"}, &out, &errb); code != 2 {
		t.Errorf("validate without a file: exit %d; want 2", code)
	}
	if code := run([]string{"bogus"}, &out, &errb); code != 2 {
		t.Errorf("unknown command: exit %d; want 2", code)
	}
}

// "-" is standard input, for validate and for config apply -f.
func TestStdinInput(t *testing.T) {
	const doc = "services: [{name: a, targets: [{url: 'http://127.0.0.1:1'}]}]\nroutes: [{name: r, service: a}]\n"
	defer func(r io.Reader) { stdin = r }(stdin)
	stdin = strings.NewReader(doc)
	var out, errb bytes.Buffer
	if code := run([]string{"validate", "-"}, &out, &errb); code != 0 || !strings.Contains(out.String(), "standard input: valid gateway document") {
		t.Errorf("validate -: exit %d, %q %q", code, out.String(), errb.String())
	}
	var got []byte
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, _ = io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"version": 2, "hash": "h"}`)
	}))
	defer srv.Close()
	stdin = strings.NewReader(doc)
	if code := run([]string{"config", "apply", "-f", "-", "-admin", srv.URL, "-token", "t"}, &out, &errb); code != 0 || string(got) != doc {
		t.Errorf("config apply -f -: exit %d, sent %q (%s)", code, got, errb.String())
	}
	stdin = strings.NewReader("routes: []\n")
	errb.Reset()
	if code := run([]string{"config", "apply", "-f", "-", "-admin", srv.URL}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "standard input has no routes") {
		t.Errorf("config apply -f - without routes: exit %d, %q", code, errb.String())
	}
}

// writeExampleFiles writes a certificate and key under every name the
// README's examples use.
func writeExampleFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "example"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kd, _ := x509.MarshalECPrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd})
	for _, name := range []string{"ca-root.pem", "partner-cas.pem", "internal-ca.pem", "gw-client.crt"} {
		os.WriteFile(filepath.Join(dir, name), certPEM, 0o600)
	}
	os.WriteFile(filepath.Join(dir, "gw-client.key"), keyPEM, 0o600)
	// tls.certificates: a server certificate that names its host.
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "shop.example.com"}, DNSNames: []string{"shop.example.com"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	leafDER, err := x509.CreateCertificate(rand.Reader, leaf, leaf, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "shop.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leafDER}), 0o600)
	os.WriteFile(filepath.Join(dir, "shop.key"), keyPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "admin-token"), []byte("0123456789abcdef0123\n"), 0o600)
	// The cluster example's files.
	os.Mkdir(filepath.Join(dir, "cluster"), 0o700)
	os.WriteFile(filepath.Join(dir, "cluster", "ca.crt"), certPEM, 0o600)
	// The node's certificate is for its name (node.name par-1).
	nodeCert := &x509.Certificate{SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "par-1"},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}
	nodeDER, err := x509.CreateCertificate(rand.Reader, nodeCert, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "cluster", "par-1.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: nodeDER}), 0o600)
	os.WriteFile(filepath.Join(dir, "cluster", "par-1.key"), keyPEM, 0o600)
	os.WriteFile(filepath.Join(dir, "cluster", "gossip.keys"), []byte(base64.StdEncoding.EncodeToString(make([]byte, 32))+"\n"), 0o600)
	return dir
}

// Flags and arguments a command does not take are refused, not ignored,
// and a token file named explicitly must be readable.
func TestCLIRefusesWhatItDoesNotTake(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"serve", "-config", "x.yaml", "extra"}, 2, "serve takes no arguments"},
		{[]string{"config", "get", "-f", "doc.yaml"}, 2, "flag provided but not defined: -f"},
		{[]string{"config", "get", "extra"}, 2, "config get takes no arguments"},
		{[]string{"config", "apply", "-f", "doc.yaml", "-token-file", "/nonexistent/token"}, 1, "cannot read the token file"},
		{[]string{"config", "delete"}, 2, `unknown config command "delete"`},
		{[]string{"version", "extra"}, 2, "version takes no arguments"},
		{[]string{"cluster", "keygen", "extra"}, 2, "cluster keygen takes no arguments"},
		{[]string{"cluster", "status", "extra", "-admin", "http://127.0.0.1:1"}, 2, "cluster status takes no arguments"},
		{[]string{"cluster", "status", "-admin", "http://127.0.0.1:1", "-token-file", "/nonexistent/token"}, 1, "cannot read the token file"},
		{[]string{"cluster", "ca", "create", "-dir", "/nonexistent/x", "extra"}, 2, "cluster ca create takes no arguments"},
		// Cluster commands say what is wrong before the usage.
		{[]string{"cluster"}, 2, "meridian: cluster needs a command"},
		{[]string{"cluster", "bogus"}, 2, `unknown cluster command "bogus"`},
		{[]string{"cluster", "ca"}, 2, "cluster ca needs a command (create)"},
		{[]string{"cluster", "ca", "bogus"}, 2, `unknown cluster ca command "bogus"`},
		{[]string{"cluster", "ca", "create"}, 2, "cluster ca create needs -dir DIR"},
		{[]string{"cluster", "cert"}, 2, "cluster cert needs -ca DIR and -name NODE"},
		{[]string{"cluster", "cert", "-ca", "/x"}, 2, "cluster cert needs -name NODE"},
		{[]string{"cluster", "cert", "-name", "n1"}, 2, "cluster cert needs -ca DIR"},
		{[]string{"dev", "extra"}, 2, "dev takes no arguments"},
		{[]string{"dev", "-port-offset", "60000"}, 2, "-port-offset must be between 0 and 55000"},
		{[]string{"dev", "-nodes", "0"}, 2, "-nodes must be between 1 and 9"},
		{[]string{"dev", "-port-offset", "0x10"}, 2, "not a decimal integer"},
		{[]string{"dev", "-nodes", "010"}, 2, "-nodes must be between 1 and 9 (got 10)"}, // not octal 8
		{[]string{"dev", "-nodes", "10"}, 2, "-nodes must be between 1 and 9"},
		{[]string{"ca", "root", "extra"}, 2, "ca root takes no arguments"},
		// An admin address without a scheme is an error, not a panic.
		{[]string{"config", "get", "-admin", "127.0.0.1:9901"}, 2, "must be a URL such as http://127.0.0.1:9901"},
		{[]string{"config", "apply", "-f", "doc.yaml", "-admin", "127.0.0.1:9901"}, 2, "must be a URL"},
		{[]string{"cluster", "status", "-admin", "127.0.0.1:9901"}, 2, "must be a URL"},
		// -h is not an error.
		{[]string{"config", "apply", "-h"}, 0, "-allow-empty"},
		{[]string{"validate", "-h"}, 0, "usage: meridian validate FILE"},
		{[]string{"config", "-h"}, 0, "usage: meridian config get|apply"},
		{[]string{"cluster", "-h"}, 0, ""},
		{[]string{"cluster", "keygen", "-h"}, 0, ""},
		{[]string{"cluster", "ca", "create", "-h"}, 0, "-dir"},
		{[]string{"ca", "-h"}, 0, ""},
		{[]string{"cluster", "ca", "-h"}, 0, ""},
		{[]string{"cluster", "help"}, 0, ""},
		{[]string{"version", "-h"}, 0, ""},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("meridian %q: exit %d, %q; want exit %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
}

// A token file named explicitly must hold a token, -token and -token-file
// do not go together, and a document over the node's limit is refused
// before it is sent, from a file as from standard input.
func TestCLITokenFileAndInputChecks(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, []byte("\n\n"), 0o600)
	big := filepath.Join(dir, "big.yaml")
	os.WriteFile(big, bytes.Repeat([]byte("#\n"), node.MaxFileBytes/2+1), 0o600)
	// A node file whose gateway section names no service: refused before
	// it is sent, at the file's line; its node section (files of another
	// machine) is not read.
	nodeFile := filepath.Join(dir, "node.yaml")
	os.WriteFile(nodeFile, []byte("node:\n  name: x\n  listen: {http: 127.0.0.1:1}\n  admin: {token_file: /not/on/this/machine}\ngateway:\n  services:\n    - name: app\n      targets: [{url: 'http://127.0.0.1:1'}]\n  routes:\n    - name: r\n      service: nope\n"), 0o600)
	// One whose node section could not start a node (an unknown field):
	// refused before anything is sent, as validate and serve refuse it.
	badNode := filepath.Join(dir, "bad-node.yaml")
	os.WriteFile(badNode, []byte("node:\n  name: x\n  bogus: 1\ngateway:\n  services:\n    - name: app\n      targets: [{url: 'http://127.0.0.1:1'}]\n  routes:\n    - name: r\n      service: app\n"), 0o600)
	badPort := filepath.Join(dir, "bad-port.yaml")
	os.WriteFile(badPort, []byte("node:\n  name: x\n  listen: {http: 127.0.0.1:99999}\ngateway:\n  services:\n    - name: app\n      targets: [{url: 'http://127.0.0.1:1'}]\n  routes:\n    - name: r\n      service: app\n"), 0o600)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"config", "get", "-admin", "http://127.0.0.1:1", "-token-file", empty}, 1, "holds no token"},
		{[]string{"cluster", "status", "-admin", "http://127.0.0.1:1", "-token-file", empty}, 1, "holds no token"},
		{[]string{"config", "get", "-admin", "http://127.0.0.1:1", "-token", "t", "-token-file", empty}, 2, "not both"},
		{[]string{"config", "apply", "-admin", "http://127.0.0.1:1", "-f", big}, 1, "more than 8 MiB"},
		{[]string{"validate", big}, 1, "more than 8 MiB"},
		{[]string{"config", "apply", "-admin", "http://127.0.0.1:1", "-token", "t", "-f", nodeFile}, 1, `line 11: gateway.routes[0].service: unknown service "nope"`},
		{[]string{"serve", "-config", big}, 1, "more than 8 MiB"},
		{[]string{"config", "apply", "-admin", "http://127.0.0.1:1", "-token", "t", "-f", badNode}, 1, `line 3: node.bogus: unknown field "bogus"`},
		{[]string{"config", "apply", "-admin", "http://127.0.0.1:1", "-token", "t", "-f", badPort}, 1, `line 3: node.listen.http: invalid port in "127.0.0.1:99999"`},
	} {
		var out, errb bytes.Buffer
		if code := run(tc.args, &out, &errb); code != tc.code || !strings.Contains(errb.String(), tc.want) {
			t.Errorf("meridian %q: exit %d, %q; want exit %d and %q", tc.args, code, errb.String(), tc.code, tc.want)
		}
	}
}

// Every command that calls the admin API takes the token from -token-file,
// which beats MERIDIAN_TOKEN.
func TestCLITokenFile(t *testing.T) {
	t.Setenv("MERIDIAN_TOKEN", "tok-from-env-0123456789")
	var auth []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = append(auth, r.Header.Get("Authorization"))
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, "[]")
	}))
	defer srv.Close()
	tf := filepath.Join(t.TempDir(), "token")
	os.WriteFile(tf, []byte("tok-from-file\nsecond line ignored\n"), 0o600)
	for _, args := range [][]string{{"cluster", "status"}, {"config", "get"}} {
		auth = nil
		var out, errb bytes.Buffer
		run(append(args, "-admin", srv.URL, "-token-file", tf), &out, &errb)
		if len(auth) != 1 || auth[0] != "Bearer tok-from-file" {
			t.Errorf("meridian %q sent Authorization %q; want the file's first line", args, auth)
		}
	}
}

// The token taken from the environment is a secret: help and flag errors
// do not print it as a default.
func TestCLIDoesNotPrintTheEnvironmentToken(t *testing.T) {
	t.Setenv("MERIDIAN_TOKEN", "supersecret-token-0123456789")
	for _, args := range [][]string{{"config", "apply", "-h"}, {"config", "get", "-tokn", "x"}, {"cluster", "status", "-h"}} {
		var out, errb bytes.Buffer
		run(args, &out, &errb)
		if strings.Contains(out.String()+errb.String(), "supersecret") {
			t.Errorf("meridian %q printed the token from MERIDIAN_TOKEN:\n%s", args, errb.String())
		}
	}
}

func TestParseMemoryLimit(t *testing.T) {
	for in, want := range map[string]int64{"536870912\n": 536870912, "max\n": 0, "9223372036854771712\n": 0, "": 0, "0": 0} {
		got, ok := parseMemoryLimit(in)
		if got != want || ok != (want > 0) {
			t.Errorf("parseMemoryLimit(%q) = %d, %v; want %d", in, got, ok, want)
		}
	}
}

// A node file is told from a gateway document by its top-level keys alone,
// without decoding the rest: one with a mistake deeper down (a key given
// twice) is still a node file.
func TestLooksLikeNodeFile(t *testing.T) {
	for doc, want := range map[string]bool{
		"node:\n  name: a\n  name: b\ngateway: {}\n": true,
		"gateway:\n  routes: []\n":                   true,
		"services: []\nroutes: []\n":                 false,
		"[node, gateway]\n":                          false,
		"":                                           false,
		"{node: [":                                   false,
	} {
		if got := looksLikeNodeFile([]byte(doc)); got != want {
			t.Errorf("looksLikeNodeFile(%q) = %v; want %v", doc, got, want)
		}
	}
}

// Errors only the node finds in a node file's gateway section (the files
// its services name) come back with the lines of the section sent; the CLI
// says them at the file's lines and paths, as validate would.
func TestCLIApplyNodeFileServerErrorsAtFileLines(t *testing.T) {
	var sent string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		sent = string(b)
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusUnprocessableEntity)
		io.WriteString(w, `{"title": "Invalid Configuration", "errors": ["line 6: services[0].tls.ca_file: open /nonexistent/ca.pem: no such file or directory", "line 2: a line with no path"]}`)
	}))
	defer srv.Close()
	f := filepath.Join(t.TempDir(), "node.yaml")
	os.WriteFile(f, []byte("node:\n  name: other\ngateway:\n  services:\n    - name: app\n      targets:\n        - url: https://127.0.0.1:1\n      tls:\n        ca_file: /nonexistent/ca.pem\n  routes:\n    - name: r\n      service: app\n"), 0o600)
	var out, errb bytes.Buffer
	if code := run([]string{"config", "apply", "-admin", srv.URL, "-token", "t", "-f", f}, &out, &errb); code != 1 {
		t.Fatalf("exit %d; want 1 (%s)", code, errb.String())
	}
	if !strings.HasPrefix(sent, "services:\n") {
		t.Errorf("sent %q; want the gateway section, dedented", sent)
	}
	for _, want := range []string{`"line 9: gateway.services[0].tls.ca_file: open /nonexistent/ca.pem`, `"line 5: a line with no path"`} {
		if !strings.Contains(errb.String(), want) {
			t.Errorf("stderr %s; want %s", errb.String(), want)
		}
	}
}

// The default token file is the default node's: sent to another node on
// loopback (meridian dev's), which takes reads without a token but refuses
// a wrong one, a read is sent again without it. A token given is not.
func TestCLIDefaultTokenRefusedOnARead(t *testing.T) {
	cache := t.TempDir()
	t.Setenv("XDG_CACHE_HOME", cache)
	t.Setenv("HOME", cache)
	t.Setenv("MERIDIAN_TOKEN", "")
	os.MkdirAll(filepath.Join(cache, "meridian"), 0o700)
	os.WriteFile(filepath.Join(cache, "meridian", "admin-token"), []byte("the-default-nodes-token\n"), 0o600)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `[]`)
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"cluster", "status", "-admin", srv.URL, "-json"}, &out, &errb); code != 0 {
		t.Errorf("cluster status with the default token file, refused: exit %d (%s); want 0 (sent again without it)", code, errb.String())
	}
	errb.Reset()
	if code := run([]string{"cluster", "status", "-admin", srv.URL, "-token", "given-token"}, &out, &errb); code != 1 {
		t.Errorf("cluster status with a given token, refused: exit %d; want 1", code)
	}
}

// cluster status shows what it does not know as "-", not as a place at
// 0,0 or a version heard of (an outside check).
func TestClusterStatusTableUnknowns(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `[{"name":"n1","region":"eu","lat":48.85,"lon":2.35,"gossip_state":"alive","raft_role":"leader","config_version":3,"http_addr":"10.0.0.1:80","cluster_addr":"10.0.0.1:7001"},
{"name":"n2","region":"us","gossip_state":"alive","raft_role":"voter","config_version":3,"http_addr":"10.0.0.2:80","cluster_addr":"10.0.0.2:7001"},
{"name":"n3","gossip_state":"unknown","raft_role":"voter","cluster_addr":"10.0.0.3:7001"}]`)
	}))
	defer srv.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"cluster", "status", "-admin", srv.URL, "-token", "0123456789abcdef0123"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 4 {
		t.Fatalf("table:\n%s", out.String())
	}
	for i, want := range [][]string{
		{"n1", "eu", "48.85,2.35", "alive", "leader", "v3"},
		{"n2", "us", "-", "alive", "voter", "v3"},
		{"n3", "-", "-", "unknown", "voter", "-", "-", "10.0.0.3:7001"},
	} {
		if got := strings.Fields(lines[i+1]); !slices.Equal(got[:len(want)], want) {
			t.Errorf("row %d: %q; want it to begin %q", i+1, got, want)
		}
	}
}
