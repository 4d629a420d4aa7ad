package node

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/cluster/pki"
	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/edge/certs"
	"github.com/meridian-gw/meridian/internal/testutil"
)

func backend(t *testing.T, name string) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	}))
	t.Cleanup(s.Close)
	return s
}

func nodeFile(dataDir, target string) string {
	return fmt.Sprintf(`node:
  name: test
  data_dir: %s
  listen: {http: "127.0.0.1:0"}
  admin: {listen: "127.0.0.1:0", token: "0123456789abcdef0123"}
  access_log: {enabled: false}
  limits: {drain_timeout: 5s}
gateway:
  services:
    - name: app
      targets: [{url: %q}]
  routes:
    - name: all
      match: {path_prefix: /}
      service: app
`, dataDir, target)
}

func gatewayDoc(target string) string {
	return fmt.Sprintf("services:\n  - name: app\n    targets: [{url: %q}]\nroutes:\n  - name: all\n    service: app\n", target)
}

type running struct {
	n    *Node
	path string
}

func startNode(t *testing.T, dir, content string) *running {
	t.Helper()
	path := filepath.Join(dir, "meridian.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := ParseFile([]byte(content))
	if err != nil {
		t.Fatalf("ParseFile: %v", err)
	}
	n, err := New(f, Options{ConfigPath: path, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(f, []byte(content)); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return &running{n: n, path: path}
}

func get(t *testing.T, c *http.Client, url string) (int, string) {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// Reloading again and again, through the admin path and through the file
// (SIGHUP), while clients keep sending requests, loses no request: every
// one is answered 200 by one of the two backends.
func TestReloadUnderLoadLosesNoRequest(t *testing.T) {
	a, b := backend(t, "A"), backend(t, "B")
	dir := t.TempDir()
	r := startNode(t, dir, nodeFile(dir, a.URL))
	defer r.n.Drain(context.Background())
	url := "http://" + r.n.ProxyAddr() + "/x"

	const workers, perWorker = 4, 300
	var wg sync.WaitGroup
	var failures atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second}
			for i := 0; i < perWorker; i++ {
				resp, err := c.Get(url)
				if err != nil {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || (string(body) != "A" && string(body) != "B") {
					failures.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("status %d body %q", resp.StatusCode, body))
				}
			}
		}()
	}
	go func() { wg.Wait(); close(stop) }()

	start := r.n.Gateway().Current().Version
	applies := 0
	for i := 0; ; i++ {
		select {
		case <-stop:
		default:
			target := a.URL
			if i%2 == 0 {
				target = b.URL
			}
			if i%3 == 0 {
				if err := os.WriteFile(r.path, []byte(nodeFile(dir, target)), 0o600); err != nil {
					t.Fatal(err)
				}
				if _, err := r.n.Reload(); err != nil {
					t.Fatalf("Reload: %v", err)
				}
			} else if _, err := r.n.Apply(context.Background(), []byte(gatewayDoc(target)), edge.ApplyOptions{}); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			applies++
			continue
		}
		break
	}
	if n := failures.Load(); n > 0 {
		t.Fatalf("%d of %d requests failed during %d reloads; first: %v", n, workers*perWorker, applies, firstErr.Load())
	}
	if applies < 2 {
		t.Fatalf("only %d reloads happened during the load; the test proved nothing", applies)
	}
	if got, want := r.n.Gateway().Current().Version, start+uint64(applies); got != want {
		t.Fatalf("version after %d applies: got %d; want %d", applies, got, want)
	}
}

// A document that does not validate is refused and the running one keeps
// serving, at the same version.
func TestInvalidConfigKeepsRunningOne(t *testing.T) {
	a := backend(t, "A")
	dir := t.TempDir()
	r := startNode(t, dir, nodeFile(dir, a.URL))
	defer r.n.Drain(context.Background())
	before := r.n.Gateway().Current()

	_, err := r.n.Apply(context.Background(), []byte("services: [{name: app, targets: []}]\nroutes: [{name: r, service: missing}]\n"), edge.ApplyOptions{})
	if err == nil {
		t.Fatal("Apply of an invalid document: got no error")
	}
	if !strings.Contains(err.Error(), "line 2") || !strings.Contains(err.Error(), `unknown service "missing"`) {
		t.Errorf("error does not name line and problem: %v", err)
	}
	// A document without routes (an empty one, say) is refused unless
	// asked for: it would take every route down.
	if _, err := r.n.Apply(context.Background(), []byte("{}\n"), edge.ApplyOptions{}); !errors.Is(err, edge.ErrNoRoutes) {
		t.Errorf("Apply of {}: %v; want ErrNoRoutes", err)
	}
	if got := r.n.Gateway().Current(); got != before {
		t.Fatalf("an empty document replaced the running one")
	}
	// So is a file whose gateway section went missing, on SIGHUP.
	if err := os.WriteFile(r.path, []byte(strings.Split(nodeFile(dir, a.URL), "gateway:")[0]), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.n.Reload(); err == nil || !strings.Contains(err.Error(), "no routes") {
		t.Fatalf("Reload of a file without routes: %v; want it refused", err)
	}
	// A broken file on SIGHUP is refused too.
	if err := os.WriteFile(r.path, []byte("node: {name: x}\ngateway: {routes: [{name: 1}]\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.n.Reload(); err == nil {
		t.Fatal("Reload of a broken file: got no error")
	}
	// And a valid file larger than a node takes (as validate and
	// PUT /config refuse it), padded with comments.
	big := nodeFile(dir, a.URL) + strings.Repeat("#\n", MaxFileBytes/2)
	if err := os.WriteFile(r.path, []byte(big), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := r.n.Reload(); err == nil || !strings.Contains(err.Error(), "more than 8 MiB") {
		t.Fatalf("Reload of a %d-byte file: %v; want it refused", len(big), err)
	}
	if got := r.n.Gateway().Current(); got != before {
		t.Fatalf("snapshot changed after refused documents: version %d -> %d", before.Version, got.Version)
	}
	if code, body := get(t, http.DefaultClient, "http://"+r.n.ProxyAddr()+"/"); code != 200 || body != "A" {
		t.Fatalf("after refused documents: got %d %q; want 200 A", code, body)
	}
}

// A second node on a data dir in use fails to start rather than overwrite
// the first one's state; the dir is free again once the first has drained.
func TestDataDirLocked(t *testing.T) {
	a := backend(t, "A")
	dir := t.TempDir()
	r := startNode(t, dir, nodeFile(dir, a.URL))
	f, err := ParseFile([]byte(nodeFile(dir, a.URL)))
	if err != nil {
		t.Fatal(err)
	}
	second, err := New(f, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Start(f, []byte(nodeFile(dir, a.URL))); err == nil || !strings.Contains(err.Error(), "in use by another meridian node") {
		t.Fatalf("second node on the same data dir: %v; want it refused", err)
	}
	if err := r.n.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
	again := startNode(t, dir, nodeFile(dir, a.URL))
	again.n.Drain(context.Background())
}

// Versions never go backwards across restarts, and a document applied
// through the admin API survives a restart while the file is unchanged.
func TestVersionSurvivesRestart(t *testing.T) {
	a, b := backend(t, "A"), backend(t, "B")
	dir := t.TempDir()
	r := startNode(t, dir, nodeFile(dir, a.URL))
	if _, err := r.n.Apply(context.Background(), []byte(gatewayDoc(b.URL)), edge.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	v := r.n.Gateway().Current().Version
	// A write the node cannot store (state.json made a directory) is
	// refused and leaves the stored document as it was: the restart
	// below serves B, not the refused document, nor the file's.
	state := filepath.Join(dir, "state.json")
	os.Rename(state, state+".bak")
	os.Mkdir(state, 0o700)
	if _, err := r.n.Apply(context.Background(), []byte(gatewayDoc(backend(t, "D").URL)), edge.ApplyOptions{}); err == nil {
		t.Fatal("Apply with state.json a directory: no error")
	}
	os.Remove(state)
	os.Rename(state+".bak", state)
	// Likewise when the stored document cannot be replaced (made a
	// directory), after the state was written.
	applied := filepath.Join(dir, "gateway-applied")
	os.Rename(applied, applied+".bak")
	os.Mkdir(applied, 0o700)
	if _, err := r.n.Apply(context.Background(), []byte(gatewayDoc(backend(t, "E").URL)), edge.ApplyOptions{}); err == nil {
		t.Fatal("Apply with gateway-applied a directory: no error")
	}
	os.Remove(applied)
	os.Rename(applied+".bak", applied)
	if err := r.n.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}

	r2 := startNode(t, dir, nodeFile(dir, a.URL))
	if got := r2.n.Gateway().Current().Version; got != v {
		t.Errorf("after restart with the same file: version %d; want %d", got, v)
	}
	if code, body := get(t, http.DefaultClient, "http://"+r2.n.ProxyAddr()+"/"); code != 200 || body != "B" {
		t.Errorf("after restart: got %d %q; want the admin-applied backend B", code, body)
	}
	if err := r2.n.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}

	// Changing the file: the file wins, with a higher version.
	c := backend(t, "C")
	r3 := startNode(t, dir, nodeFile(dir, c.URL))
	defer r3.n.Drain(context.Background())
	if got := r3.n.Gateway().Current().Version; got != v+1 {
		t.Errorf("after restart with a changed file: version %d; want %d", got, v+1)
	}
	if code, body := get(t, http.DefaultClient, "http://"+r3.n.ProxyAddr()+"/"); code != 200 || body != "C" {
		t.Errorf("after restart with a changed file: got %d %q; want C", code, body)
	}
}

// The admin API reads back exactly what was applied and enforces
// optimistic concurrency.
func TestAdminApplyAndReadBack(t *testing.T) {
	r, admin, doc := adminNode(t)

	put := func(url, body, token string) *http.Response {
		resp, _ := adminPut(t, url, body, token)
		return resp
	}
	if resp := put(admin+"/config", doc, ""); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("PUT without token: got %d; want 401", resp.StatusCode)
	}
	if resp := put(admin+"/config", doc, "wrong-token-wrong-token"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("PUT with a wrong token: got %d; want 401", resp.StatusCode)
	}
	resp := put(admin+"/config", doc, r.n.AdminToken())
	if resp.StatusCode != 200 {
		t.Fatalf("PUT: got %d; want 200", resp.StatusCode)
	}
	v := resp.Header.Get("Meridian-Config-Version")
	code, body := get(t, http.DefaultClient, admin+"/config")
	if code != 200 || body != doc {
		t.Fatalf("GET /config: got %d %q; want the document exactly as applied %q", code, body, doc)
	}
	if resp := put(admin+"/config?if_version=1", doc, r.n.AdminToken()); resp.StatusCode != http.StatusConflict {
		t.Fatalf("PUT with a stale if_version: got %d; want 409", resp.StatusCode)
	}
	if resp, body := adminPut(t, admin+"/config?if_version=999", doc, r.n.AdminToken()); resp.StatusCode != http.StatusConflict || !strings.Contains(body, "version 999 was never applied") || strings.Contains(body, "changed since") {
		t.Fatalf("PUT with a version never applied: got %d %s; want 409 saying so", resp.StatusCode, body)
	}
	if resp := put(admin+"/config?if_version="+v, doc, r.n.AdminToken()); resp.StatusCode != 200 {
		t.Fatalf("PUT with the current if_version: got %d; want 200", resp.StatusCode)
	}
	if resp := put(admin+"/config", "routes: [{name: x, service: nope}]\n", r.n.AdminToken()); resp.StatusCode != http.StatusUnprocessableEntity {
		t.Fatalf("PUT of an invalid document: got %d; want 422", resp.StatusCode)
	}
}

// Draining lets an in-flight request finish and then stops serving.
func TestDrainFinishesInFlight(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-release
		io.WriteString(w, "done")
	}))
	defer slow.Close()
	dir := t.TempDir()
	r := startNode(t, dir, nodeFile(dir, slow.URL))
	url := "http://" + r.n.ProxyAddr() + "/"

	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.Get(url)
		if err != nil {
			res <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{code: resp.StatusCode, body: string(b)}
	}()
	<-started
	drained := make(chan error, 1)
	go func() { drained <- r.n.Drain(context.Background()) }()
	// Readiness drops as soon as the drain starts.
	deadline := time.Now().Add(5 * time.Second)
	for r.n.Ready() {
		if time.Now().After(deadline) {
			t.Fatal("node still ready while draining")
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(release)
	got := <-res
	if got.err != nil || got.code != 200 || got.body != "done" {
		t.Fatalf("in-flight request during drain: got %d %q %v; want 200 done", got.code, got.body, got.err)
	}
	if err := <-drained; err != nil {
		t.Fatalf("Drain: %v", err)
	}
	if _, err := http.Get(url); err == nil {
		t.Fatal("request after drain succeeded; want connection refused")
	}
}

// The embedded default configuration parses and its demo answers the
// README's three curl lines.
func TestDefaultConfigDemo(t *testing.T) {
	f, err := ParseFile(DefaultConfig)
	if err != nil {
		t.Fatalf("embedded default config: %v", err)
	}
	f.Node.Listen.HTTP = "127.0.0.1:0"
	f.Node.Listen.HTTPS = "127.0.0.1:0"
	f.Node.Admin.Listen = "127.0.0.1:0"
	f.Node.DataDir = t.TempDir()
	off := false
	f.Node.AccessLog.Enabled = &off
	n, err := New(f, Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(f, DefaultConfig); err != nil {
		t.Fatal(err)
	}
	defer n.Drain(context.Background())
	base := "http://" + n.ProxyAddr()
	if code, body := get(t, http.DefaultClient, base+"/hello"); code != 200 || !strings.Contains(body, "Hello from the Meridian demo backend") {
		t.Errorf("/hello: got %d %q", code, body)
	}
	if code, body := get(t, http.DefaultClient, base+"/api/users/42"); code != 200 || !strings.Contains(body, `"upstream_path": "/users/42"`) {
		t.Errorf("/api/users/42: got %d %q", code, body)
	}
	if code, body := get(t, http.DefaultClient, base+"/events"); code != 200 || strings.Count(body, "data: ") != 5 {
		t.Errorf("/events: got %d %q; want 5 events", code, body)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if code, _ := get(t, noFollow, base+"/nope"); code != http.StatusPermanentRedirect {
		t.Errorf("plain /nope (no allow_plain_http route): got %d; want 308 to HTTPS", code)
	}

	// HTTPS with the local CA: a client trusting only its root.
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(n.RootPEM()) {
		t.Fatal("RootPEM is not a PEM certificate")
	}
	tc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true}}
	defer tc.CloseIdleConnections()
	_, port, _ := net.SplitHostPort(n.HTTPSAddr())
	resp, err := tc.Get("https://localhost:" + port + "/hello")
	if err != nil {
		t.Fatalf("HTTPS GET with the local CA root: %v", err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(string(b), "Hello") {
		t.Errorf("HTTPS /hello: got %d over HTTP/%d %q; want 200 over HTTP/2", resp.StatusCode, resp.ProtoMajor, b)
	}
	if code, _ := get(t, tc, "https://localhost:"+port+"/nope"); code != 404 {
		t.Errorf("HTTPS /nope: got %d; want 404", code)
	}
	rp, err := certs.LoadRootPEM(f.Node.DataDir)
	if err != nil || string(rp) != string(n.RootPEM()) {
		t.Errorf("LoadRootPEM (what `meridian ca root` prints) differs from the served root: %v", err)
	}
}

// limits.headers_with_underscores takes allow, drop or reject, and the
// error for anything else names the field.
func TestConfigHeadersWithUnderscores(t *testing.T) {
	for _, v := range []string{"allow", "drop", "reject"} {
		if _, err := ParseFile([]byte("node:\n  limits: {headers_with_underscores: " + v + "}\n")); err != nil {
			t.Errorf("%s: %v", v, err)
		}
	}
	_, err := ParseFile([]byte("node:\n  limits: {headers_with_underscores: strip}\n"))
	if err == nil || !strings.Contains(err.Error(), "limits.headers_with_underscores") || !strings.Contains(err.Error(), "allow, drop or reject") {
		t.Errorf("strip: err = %v; want one naming the field and the choices", err)
	}
}

// What serve would refuse at start, validate refuses too, naming the field
// and its line: a port out of range, two listeners on one port, files that
// cannot be read, a data dir that is a file, a DNS provider that does not
// exist.
func TestConfigRefusesWhatServeWould(t *testing.T) {
	dir := t.TempDir()
	notDir := filepath.Join(dir, "file")
	os.WriteFile(notDir, []byte("x"), 0o600)
	short := filepath.Join(dir, "short-token")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	noPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(noPEM, []byte("hello"), 0o600)
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct{ yaml, want string }{
		{"node:\n  listen: {http: '127.0.0.1:99999'}\n", "line 2: node.listen.http: invalid port"},
		{"node:\n  listen: {http: '127.0.0.1:8443', https: '127.0.0.1:8443'}\n", "line 2: node.listen.https: port 8443 is also listen.http's"},
		{"node:\n  listen: {http: '0.0.0.0:9901'}\n  admin: {listen: '127.0.0.1:9901'}\n", "line 3: node.admin.listen: port 9901 is also listen.http's"},
		{"node:\n  admin:\n    token_file: " + missing + "\n", "line 3: node.admin.token_file: admin token file: open " + missing},
		{"node:\n  admin:\n    token_file: " + short + "\n", "node.admin.token_file: admin token file " + short + ": token too short"},
		{"node:\n  admin:\n    token: \" padded-token-0123456789 \"\n", "line 3: node.admin.token: has leading or trailing spaces or a control character"},
		{"node:\n  admin:\n    token: \"abcdefghijklmnop\\0\"\n", "line 3: node.admin.token: has leading or trailing spaces or a control character"},
		{"node:\n  data_dir: " + notDir + "\n", "line 2: node.data_dir: " + notDir + " is not a directory"},
		{"node:\n  access_log: {path: " + missing + "/a.log}\n", "line 2: node.access_log.path: " + missing + "/a.log cannot be created: stat " + missing + ": no such file or directory"},
		{"node:\n  access_log: {path: " + dir + "}\n", "line 2: node.access_log.path: " + dir + " is a directory"},
		{"node:\n  admin: {listen: '127.0.0.1:8080'}\n", "line 2: node.admin.listen: port 8080 is also listen.http's"},
		// insecure: true stays on one machine.
		{"node:\n  cluster:\n    bind: 0.0.0.0:19261\n    advertise: 10.0.0.5:19261\n    gossip_bind: 127.0.0.1:0\n    bootstrap: true\n    insecure: true\n", "node.cluster.bind: 0.0.0.0:19261 is not a loopback address: insecure: true"},
		{"node:\n  cluster:\n    bind: 127.0.0.1:0\n    gossip_bind: 10.0.0.5:7946\n    bootstrap: true\n    insecure: true\n", "node.cluster.gossip_bind: 10.0.0.5:7946 is not a loopback address"},
		// A cluster address on every interface needs the one peers dial.
		{"node:\n  cluster:\n    bind: 0.0.0.0:19625\n    gossip_bind: 127.0.0.1:0\n    bootstrap: true\n    insecure: true\n", "node.cluster.advertise: missing: cluster.bind 0.0.0.0:19625 listens on every interface"},
		{"node:\n  cluster:\n    bind: ':19625'\n    advertise: '[::]:19625'\n    gossip_bind: 127.0.0.1:0\n    bootstrap: true\n    insecure: true\n", "node.cluster.advertise: [::]:19625 is not an address peers can dial"},
		// A port as net.Listen reads it.
		{"node:\n  listen: {http: '127.0.0.1:19520'}\n  admin: {listen: '127.0.0.1:019520'}\n", "line 3: node.admin.listen: port 19520 is also listen.http's"},
		{"node:\n  listen: {http: '127.0.0.1:http'}\n  admin: {listen: '127.0.0.1:80'}\n", "line 3: node.admin.listen: port 80 is also listen.http's"},
		// A name, by the addresses it resolves to.
		{"node:\n  listen: {http: '127.0.0.1:19255'}\n  admin: {listen: 'localhost:19255'}\n", "line 3: node.admin.listen: port 19255 is also listen.http's"},
		{"node:\n  listen: {https: '127.0.0.1:8443'}\n  tls:\n    client_auth:\n      - hosts: [a.example]\n        ca_file: " + noPEM + "\n", "line 6: node.tls.client_auth[0].ca_file: " + noPEM + " holds no PEM certificates"},
		{"node:\n  listen: {https: '127.0.0.1:8443'}\n  tls:\n    acme:\n      dns_provider: cloudflare\n", "line 5: node.tls.acme.dns_provider: no DNS provider is built in yet"},
		{"node:\n  listen: {https: '127.0.0.1:8443'}\n  tls:\n    certificates:\n      - {cert_file: " + missing + ", key_file: " + noPEM + "}\n", "line 5: node.tls.certificates[0].cert_file: " + missing + ": no such file or directory"},
		{"node:\n  listen: {https: '127.0.0.1:8443'}\n  tls:\n    certificates:\n      - {cert_file: " + noPEM + ", key_file: " + noPEM + "}\n", "line 5: node.tls.certificates[0].cert_file: " + noPEM + ": no PEM CERTIFICATE block"},
		{"node:\n  listen: {https: '127.0.0.1:8443'}\n  tls:\n    certificates:\n      - {key_file: " + noPEM + "}\n", "line 5: node.tls.certificates[0].cert_file: missing"},
		{"node:\n  listen: {https: '127.0.0.1:8443'}\n  tls:\n    certificates:\n      - cert_file: " + missing + "\n        key_file: " + missing + ".key\n", "line 6: node.tls.certificates[0].key_file: " + missing + ".key: no such file or directory"},
		{"node:\n  listen: {https: '127.0.0.1:8443'}\n  tls:\n    certificates:\n      - {cert_file: " + noPEM + "}\n", "line 5: node.tls.certificates[0].key_file: missing"},
		{"node:\n  tls:\n    certificates:\n      - {cert_file: " + noPEM + ", key_file: " + noPEM + "}\n", "line 3: node.tls.certificates: certificates need listen.https"},
		{"gateway:\n  services:\n    - name: s\n      targets: [{url: 'https://h:1'}]\n      tls:\n        server_name: h\n        ca_file: " + missing + "\n  routes: []\n", "line 7: gateway.services[0].tls.ca_file: open " + missing},
		{"gateway:\n  services:\n    - name: s\n      targets: [{url: 'https://h:1'}]\n      tls:\n        cert_file: " + noPEM + "\n        key_file: " + missing + "\n  routes: []\n", "line 7: gateway.services[0].tls.key_file: stat " + missing},
		{"node:\n  cluster:\n    bind: 127.0.0.1:0\n    gossip_bind: 127.0.0.1:0\n    bootstrap: true\n    insecure: true\n    tls: {ca_file: " + noPEM + ", cert_file: " + noPEM + ", key_file: " + missing + "}\n", "node.cluster.tls.key_file: stat " + missing},
		// Both files missing: both said.
		{"node:\n  cluster:\n    bind: 127.0.0.1:0\n    gossip_bind: 127.0.0.1:0\n    bootstrap: true\n    insecure: true\n    tls: {cert_file: " + missing + ".crt, key_file: " + missing + ".key}\n", "node.cluster.tls.cert_file: stat " + missing + ".crt"},
		{"node:\n  cluster:\n    bind: 127.0.0.1:0\n    gossip_bind: 127.0.0.1:0\n    bootstrap: true\n    insecure: true\n    tls: {cert_file: " + missing + ".crt, key_file: " + missing + ".key}\n", "node.cluster.tls.key_file: stat " + missing + ".key"},
	} {
		_, err := ParseFile([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v; want one containing %q", tc.yaml, err, tc.want)
		}
	}
	// Ports 0 never clash; the same port on different addresses is fine.
	for _, ok := range []string{
		"node:\n  listen: {http: '127.0.0.1:0', https: '127.0.0.1:0'}\n  admin: {listen: '127.0.0.1:0'}\n",
		"node:\n  listen: {http: '127.0.0.2:8080'}\n  admin: {listen: '127.0.0.1:8080'}\n",
		"node:\n  listen: {http: '127.0.0.2:8080'}\n  admin: {listen: 'localhost:8080'}\n",
	} {
		if _, err := ParseFile([]byte(ok)); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
}

// CheckPortable refuses what ParseFile refuses but for the files the node
// section names (another machine's, for config apply -f).
func TestCheckPortable(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	gw := "gateway:\n  services:\n    - name: s\n      targets: [{url: 'http://127.0.0.1:1'}]\n  routes:\n    - {name: r, service: s}\n"
	for _, tc := range []struct{ yaml, want string }{
		{"node:\n  listen: {http: '127.0.0.1:99999'}\n" + gw, "line 2: node.listen.http: invalid port"},
		{"node:\n  listen: {http: '127.0.0.1:8080'}\n  admin: {listen: '127.0.0.1:8080'}\n" + gw, "line 3: node.admin.listen: port 8080 is also listen.http's"},
		{"node:\n  location: {lat: 91}\n" + gw, "line 2: node.location: latitude must be within"},
		{"node:\n  admin: {token_file: " + missing + "}\n" + gw, ""},
		{"node:\n  listen: {https: '127.0.0.1:8443'}\n  tls:\n    certificates:\n      - {cert_file: " + missing + ", key_file: " + missing + "}\n" + gw, ""},
		{"node:\n  data_dir: " + missing + "\n" + gw, ""},
	} {
		err := CheckPortable([]byte(tc.yaml))
		if tc.want == "" && err != nil {
			t.Errorf("%q: %v; want it taken (its files may be another machine's)", tc.yaml, err)
		}
		if tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%q: err = %v; want one containing %q", tc.yaml, err, tc.want)
		}
	}
}

// The gateway section of a node file is read back as written (comments,
// layout), dedented; what cannot be cut out exactly is re-encoded.
func TestGatewayYAMLKeepsTheText(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"node:\n  name: a\n# about the gateway\ngateway:\n  # services first\n  services:\n    - name: s   # the one\n      targets: [{url: 'http://x:1'}]\n\n  routes: []\n# about other\nother: 1\n",
			"# services first\nservices:\n  - name: s   # the one\n    targets: [{url: 'http://x:1'}]\n\nroutes: []\n"},
		{"gateway:\n    services: []\n    routes:\n    - name: r\n      service: s\n      x: |\n        literal\n          more\n",
			"services: []\nroutes:\n- name: r\n  service: s\n  x: |\n    literal\n      more\n"},
		{"gateway:\r\n  services: []\r\n  routes: []\r\n", "services: []\r\nroutes: []\r\n"},
		{"gateway: {services: [], routes: []}\n", "{services: [], routes: []}\n"},
		{"node: {}\n", "{}\n"},
		// An alias to an anchor of the node section: re-encoded with the
		// value in its place, so the section stands alone.
		{"node:\n  limits: {drain_timeout: &d 2s}\ngateway:\n  services:\n    - name: s\n      timeouts: {connect: *d}\n", "services:\n    - name: s\n      timeouts: {connect: 2s}\n"},
	} {
		got, err := GatewayYAML([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("GatewayYAML(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// The node section's errors come in line order and speak of the document
// (an unknown field is "in node", not in the Go type behind it).
// Files a config names are read only if they are regular files, and only
// so far: a FIFO held validate, a reload and PUT /config until something
// wrote to it, and /dev/zero was read until memory ran out.
func TestConfigFilesThatAreNotRegularAreRefused(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	big := filepath.Join(dir, "big.pem")
	if err := os.WriteFile(big, bytes.Repeat([]byte("A"), 1<<20+1), 0o600); err != nil {
		t.Fatal(err)
	}
	ca := filepath.Join(dir, "ca")
	if err := pki.CreateCA(ca); err != nil {
		t.Fatal(err)
	}
	if err := pki.IssueNodeCert(ca, "test", []net.IP{net.ParseIP("127.0.0.1")}, nil, dir); err != nil {
		t.Fatal(err)
	}
	crt := filepath.Join(dir, "test.crt")
	svc := func(tls string) string {
		return "gateway:\n  services:\n    - name: s\n      targets: [{url: 'https://h:1'}]\n      tls: {" + tls + "}\n  routes: []\n"
	}
	for _, tc := range []struct{ yaml, want string }{
		{"node:\n  admin:\n    token_file: /dev/zero\n", "line 3: node.admin.token_file: admin token file: open /dev/zero: not a regular file"},
		{"node:\n  admin:\n    token_file: " + fifo + "\n", "node.admin.token_file: admin token file: open " + fifo + ": not a regular file"},
		{"node:\n  listen: {https: '127.0.0.1:8443'}\n  tls:\n    client_auth:\n      - hosts: [a.example]\n        ca_file: " + fifo + "\n", "line 6: node.tls.client_auth[0].ca_file: open " + fifo + ": not a regular file"},
		{"node:\n  listen: {https: '127.0.0.1:8443'}\n  tls:\n    client_auth:\n      - hosts: [a.example]\n        ca_file: " + big + "\n", "1048577 bytes, over the 1048576 such a file may hold"},
		{"node:\n  listen: {https: '127.0.0.1:8443'}\n  tls:\n    acme:\n      email: a@b.example\n      ca_root: /dev/zero\n", "not a regular file"},
		{svc("server_name: h, ca_file: /dev/zero"), "gateway.services[0].tls.ca_file: open /dev/zero: not a regular file"},
		{svc("server_name: h, ca_file: " + fifo), "gateway.services[0].tls.ca_file: open " + fifo + ": not a regular file"},
		{svc("cert_file: /dev/zero, key_file: " + fifo), "gateway.services[0].tls"},
		{"node:\n  cluster:\n    bind: 127.0.0.1:0\n    gossip_bind: 127.0.0.1:0\n    bootstrap: true\n    insecure: true\n    tls: {ca_file: /dev/zero, cert_file: " + fifo + ", key_file: " + fifo + "}\n", "not a regular file"},
		// The key file's fault is named as the key file's.
		{svc("cert_file: " + crt + ", key_file: /dev/zero"), "gateway.services[0].tls.key_file: client certificate: open /dev/zero: not a regular file"},
		{svc("cert_file: " + crt + ", key_file: " + fifo), "gateway.services[0].tls.key_file"},
		{"node:\n  cluster:\n    bind: 127.0.0.1:0\n    gossip_bind: 127.0.0.1:0\n    bootstrap: true\n    tls: {ca_file: " + filepath.Join(ca, "ca.crt") + ", cert_file: " + crt + ", key_file: /dev/zero}\n    insecure: true\n", "node.cluster.tls.key_file: open /dev/zero: not a regular file"},
	} {
		done := make(chan error, 1)
		go func() { _, err := ParseFile([]byte(tc.yaml)); done <- err }()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("%q: err = %v; want one containing %q", tc.yaml, err, tc.want)
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("%q: still reading after 20 s", tc.yaml) // a FIFO's open waits for a writer
		}
	}
}

func TestNodeErrorsInLineOrder(t *testing.T) {
	_, err := ParseFile([]byte("node:\n  name: x\n  nmae: y\n"))
	if err == nil || !strings.Contains(err.Error(), `line 3: node.nmae: unknown field "nmae" in node`) {
		t.Errorf("unknown node field: %v", err)
	}
	_, err = ParseFile([]byte("node:\n  name: x\n  admin: {listen: \"127.0.0.1:99999\"}\n  listen: {http: \"127.0.0.1:70000\"}\n"))
	if err == nil {
		t.Fatal("bad ports accepted")
	}
	msg := err.Error()
	if i, j := strings.Index(msg, "line 3:"), strings.Index(msg, "line 4:"); i < 0 || j < 0 || i > j {
		t.Errorf("errors not in line order:\n%s", msg)
	}
}

// PUT /config with If-None-Match (RFC 9110 13.1.2): "*" applies only where
// no document is applied yet, and a node always serves one (its file's at
// least), so it is refused; a tag refuses to replace the document it names
// (either representation's), another tag lets the document through.
func TestAdminPutIfNoneMatch(t *testing.T) {
	r, admin, doc := adminNode(t)
	put := func(inm string) (int, string) {
		t.Helper()
		resp, body := adminPut(t, admin+"/config", doc, r.n.AdminToken(), "If-None-Match", inm)
		return resp.StatusCode, body
	}
	cur := r.n.Gateway().Current()
	for _, inm := range []string{"*", `"` + cur.Hash + `"`, `W/"x", "` + cur.Hash + `-json"`} {
		if code, body := put(inm); code != http.StatusPreconditionFailed {
			t.Errorf("If-None-Match: %s: %d %s; want 412", inm, code, body)
		}
	}
	if v := r.n.Gateway().Current().Version; v != cur.Version {
		t.Fatalf("a refused PUT changed the version: %d -> %d", cur.Version, v)
	}
	if code, body := put(`"another"`); code != http.StatusOK {
		t.Errorf(`If-None-Match: "another": %d %s; want 200`, code, body)
	}
	if v := r.n.Gateway().Current().Version; v != cur.Version+1 {
		t.Errorf("after the PUT: version %d; want %d", v, cur.Version+1)
	}
}

// adminPut sends body to url with PUT, the bearer token if not empty, and
// the header fields given as name, value pairs; it returns the response
// (its body read and closed) and the body.
func adminPut(t *testing.T, url, body, token string, fields ...string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, url, strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(fields); i += 2 {
		req.Header.Set(fields[i], fields[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// adminNode starts a node on a backend answering "A", drained when the test
// ends, and returns it with its admin URL and a document to apply (the
// node file's, with a comment added).
func adminNode(t *testing.T) (r *running, admin, doc string) {
	t.Helper()
	a := backend(t, "A")
	dir := t.TempDir()
	r = startNode(t, dir, nodeFile(dir, a.URL))
	t.Cleanup(func() { r.n.Drain(context.Background()) })
	return r, "http://" + r.n.AdminAddr(), "# applied by the test\n" + gatewayDoc(a.URL)
}

// ReopenLogs (SIGUSR1) writes the access log to a new file at its path
// once logrotate has moved the old one away; lines buffered before go to
// the old one.
func TestReopenLogsAfterRotation(t *testing.T) {
	be := backend(t, "A")
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	file := strings.Replace(nodeFile(dir, be.URL), "access_log: {enabled: false}", "access_log: {path: "+logPath+"}", 1)
	r := startNode(t, dir, file)
	defer r.n.Drain(context.Background())
	url := "http://" + r.n.ProxyAddr()
	if code, _ := get(t, http.DefaultClient, url+"/before"); code != 200 {
		t.Fatalf("GET /before: %d", code)
	}
	if err := os.Rename(logPath, logPath+".1"); err != nil {
		t.Fatal(err)
	}
	if err := r.n.ReopenLogs(); err != nil {
		t.Fatalf("ReopenLogs: %v", err)
	}
	if code, _ := get(t, http.DefaultClient, url+"/after"); code != 200 {
		t.Fatalf("GET /after: %d", code)
	}
	r.n.accessW.Flush()
	old, _ := os.ReadFile(logPath + ".1")
	cur, err := os.ReadFile(logPath)
	if err != nil {
		t.Fatalf("the new log file: %v", err)
	}
	if !strings.Contains(string(old), `"path":"/before"`) || strings.Contains(string(old), `"path":"/after"`) {
		t.Errorf("rotated file holds %q; want the line of /before only", old)
	}
	if !strings.Contains(string(cur), `"path":"/after"`) || strings.Contains(string(cur), `"path":"/before"`) {
		t.Errorf("new file holds %q; want the line of /after only", cur)
	}
}

// Access log lines that cannot be written (here the file became a link to
// /dev/full: "no space left on device") are counted and said in the node's
// log, once per lossReportEvery; requests are served all the same.
func TestAccessLogLossIsCountedAndLogged(t *testing.T) {
	be := backend(t, "A")
	dir := t.TempDir()
	logPath := filepath.Join(dir, "access.log")
	file := strings.Replace(nodeFile(dir, be.URL), "access_log: {enabled: false}", "access_log: {path: "+logPath+"}", 1)
	path := filepath.Join(dir, "meridian.yaml")
	if err := os.WriteFile(path, []byte(file), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := ParseFile([]byte(file))
	if err != nil {
		t.Fatal(err)
	}
	var logs testutil.SyncBuffer
	n, err := New(f, Options{ConfigPath: path, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Start(f, []byte(file)); err != nil {
		t.Fatal(err)
	}
	defer n.Drain(context.Background())
	if err := os.Remove(logPath); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/dev/full", logPath); err != nil {
		t.Fatal(err)
	}
	if err := n.ReopenLogs(); err != nil {
		t.Fatalf("ReopenLogs: %v", err)
	}
	url := "http://" + n.ProxyAddr()
	for i := range 3 {
		if code, _ := get(t, http.DefaultClient, fmt.Sprintf("%s/lost-%d", url, i)); code != 200 {
			t.Fatalf("GET /lost-%d: %d; want 200 whatever becomes of its log line", i, code)
		}
	}
	if err := n.accessW.Flush(); err == nil {
		t.Fatal("flushing to /dev/full did not fail; the test cannot see a loss")
	}
	rec := httptest.NewRecorder()
	n.gw.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if !strings.Contains(rec.Body.String(), "\nmeridian_access_log_lines_lost_total 3\n") {
		t.Errorf("/metrics has no meridian_access_log_lines_lost_total 3:\n%s", rec.Body.String())
	}
	if !strings.Contains(logs.String(), `"msg":"access log write failed; lines lost"`) || !strings.Contains(logs.String(), `"lines":3`) {
		t.Errorf("node log does not report the 3 lost lines:\n%s", logs.String())
	}
}

// A reload's warning that the node section changed names what changed
// (a token rotated in the file is not in force until a restart).
func TestNodeChangesNamed(t *testing.T) {
	a, err := ParseFile([]byte("node:\n  listen: {http: \"127.0.0.1:8080\"}\n  admin: {token: \"0123456789abcdef0123\"}\n  limits: {drain_timeout: 5s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseFile([]byte("node:\n  listen: {http: \"127.0.0.1:8081\"}\n  admin: {token: \"abcdefabcdef0123456789\"}\n  limits: {drain_timeout: 6s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	b.Node.TLS.Certificates = make([]Certificate, 1) // applied by a reload: not named
	got := nodeChanges(a.Node, b.Node)
	want := []string{"admin.token", "limits.drain_timeout", "listen.http"}
	if !slices.Equal(got, want) {
		t.Errorf("nodeChanges = %q; want %q", got, want)
	}
	if got := nodeChanges(a.Node, a.Node); len(got) != 0 {
		t.Errorf("nodeChanges of the same = %q; want none", got)
	}
}

// A gateway document given where a node's file is expected (serve
// -config) is named as such, not as an unknown field "services".
func TestBareDocumentAsNodeFileNamed(t *testing.T) {
	_, err := ParseFile([]byte(gatewayDoc("http://127.0.0.1:1")))
	if err == nil || !strings.Contains(err.Error(), "gateway document on its own") || !strings.Contains(err.Error(), "gateway:") {
		t.Errorf("err = %v; want it to say this is a gateway document, and where it goes", err)
	}
	if _, err := ParseFile([]byte("node: {}\nservices: []\n")); err == nil || strings.Contains(err.Error(), "on its own") {
		t.Errorf("a node file with a stray field: err = %v; want the unknown field", err)
	}
}

// A data dir that served before and lost its state.json says so at the
// next start (versions start again at 1); a first start says nothing.
func TestMissingStateFileWarns(t *testing.T) {
	be := backend(t, "A")
	dir := t.TempDir()
	content := nodeFile(dir, be.URL)
	start := func() string {
		t.Helper()
		f, err := ParseFile([]byte(content))
		if err != nil {
			t.Fatal(err)
		}
		var logs testutil.SyncBuffer
		n, err := New(f, Options{ConfigPath: filepath.Join(dir, "meridian.yaml"), Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := n.Start(f, []byte(content)); err != nil {
			t.Fatal(err)
		}
		n.Drain(context.Background())
		return logs.String()
	}
	const warning = "state.json missing or unreadable in a data dir that served before"
	if logs := start(); strings.Contains(logs, warning) {
		t.Errorf("a first start warned:\n%s", logs)
	}
	if logs := start(); strings.Contains(logs, warning) {
		t.Errorf("a restart with its state warned:\n%s", logs)
	}
	if err := os.Remove(filepath.Join(dir, "state.json")); err != nil {
		t.Fatal(err)
	}
	if logs := start(); !strings.Contains(logs, warning) {
		t.Errorf("state.json removed: no warning\n%s", logs)
	}
	// A FIFO in its place (reading it waited for a writer for ever): the
	// start goes on, with the warning.
	os.Remove(filepath.Join(dir, "state.json"))
	if err := syscall.Mkfifo(filepath.Join(dir, "state.json"), 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan string, 1)
	go func() { done <- start() }()
	select {
	case logs := <-done:
		if !strings.Contains(logs, warning) || !strings.Contains(logs, "not a regular file") {
			t.Errorf("state.json a FIFO: no warning naming it\n%s", logs)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the start is still reading a FIFO state.json after 20 s")
	}
}
