package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The binary as a user runs it: start with a file, serve, reload on
// SIGHUP, refuse a broken file on SIGHUP and keep serving, drain on
// SIGTERM letting an in-flight request finish, and exit 0.
func TestBinarySignals(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "meridian")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	release := make(chan struct{})
	never := make(chan struct{}) // the second process's slow request: cut by its drain
	entered := make(chan struct{}, 1)
	be := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/slow") {
			entered <- struct{}{}
			if strings.HasPrefix(r.URL.Path, "/v3/") {
				<-never
			} else {
				<-release
			}
		}
		io.WriteString(w, "backend "+r.URL.Path)
	}))
	defer be.Close()
	defer close(never) // first: Close waits for the handler
	cfg := func(prefix string) string {
		return fmt.Sprintf(`node:
  data_dir: %s
  listen: {http: "127.0.0.1:0"}
  admin: {listen: "127.0.0.1:0", token: "0123456789abcdef0123"}
  access_log: {enabled: false}
gateway:
  services: [{name: be, targets: [{url: %q}]}]
  routes: [{name: r, match: {path_prefix: %s}, service: be}]
`, filepath.Join(dir, "data"), be.URL, prefix)
	}
	path := filepath.Join(dir, "meridian.yaml")
	os.WriteFile(path, []byte(cfg("/v1")), 0o600)

	cmd := exec.Command(bin, "serve", "-config", path)
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	// The process's log lines, decoded (a second process below gets a
	// channel of its own).
	watch := func(stderr io.Reader) chan map[string]any {
		logs := make(chan map[string]any, 100)
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				var m map[string]any
				if json.Unmarshal(sc.Bytes(), &m) != nil {
					m = map[string]any{"msg": strings.TrimSpace(sc.Text())}
				}
				logs <- m
			}
			close(logs)
		}()
		return logs
	}
	logs := watch(stderr)
	waitLog := func(msg string) map[string]any {
		t.Helper()
		deadline := time.After(20 * time.Second)
		for {
			select {
			case m, ok := <-logs:
				if !ok {
					t.Fatalf("process ended before logging %q", msg)
				}
				if m["msg"] == msg {
					return m
				}
			case <-deadline:
				t.Fatalf("no %q in the log", msg)
			}
		}
	}
	serving := waitLog("meridian serving")
	base := "http://" + serving["http"].(string)
	get := func(p string) (int, string) {
		resp, err := http.Get(base + p)
		if err != nil {
			t.Fatalf("GET %s: %v", p, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/v1/a"); code != 200 || body != "backend /v1/a" {
		t.Fatalf("/v1/a: %d %q", code, body)
	}

	os.WriteFile(path, []byte(cfg("/v2")), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	if m := waitLog("configuration applied"); m["version"].(float64) != 2 {
		t.Fatalf("after SIGHUP: version %v; want 2", m["version"])
	}
	if code, _ := get("/v2/a"); code != 200 {
		t.Fatalf("/v2/a after reload: %d", code)
	}
	if code, _ := get("/v1/a"); code != 404 {
		t.Fatalf("/v1/a after reload: %d; want 404", code)
	}

	os.WriteFile(path, []byte("node: {}\ngateway: {routes: [{name: x, service: nowhere}]}\n"), 0o600)
	cmd.Process.Signal(syscall.SIGHUP)
	// The refusal is logged with its reason; the old config serves on.
	if m := waitLog("reload refused; the running configuration is unchanged"); !strings.Contains(fmt.Sprint(m["error"]), `"nowhere"`) || m["level"] != "ERROR" {
		t.Fatalf("refused reload logged as %v; want an ERROR naming the unknown service", m)
	}
	if code, _ := get("/v2/a"); code != 200 {
		t.Fatalf("after a broken reload: %d; the running config must keep serving", code)
	}
	// A file a read would wait on (a FIFO: opening it waits for a writer)
	// is refused at once, and the signals after it are still heard.
	os.Remove(path)
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	if m := waitLog("reload refused; the running configuration is unchanged"); !strings.Contains(fmt.Sprint(m["error"]), "not a regular file") {
		t.Fatalf("reload of a FIFO logged as %v; want it refused as not a regular file", m)
	}
	os.Remove(path)
	os.WriteFile(path, []byte(cfg("/v2")), 0o600)

	// slowGet starts a GET of a slow path, its answer to come on done, and
	// returns once the backend has it.
	done := make(chan string, 1)
	slowGet := func(url string) {
		t.Helper()
		go func() {
			resp, err := http.Get(url)
			if err != nil {
				done <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			done <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
		select {
		case <-entered:
		case got := <-done:
			t.Fatalf("slow request ended before reaching the backend: %s", got)
		case <-time.After(20 * time.Second):
			t.Fatal("slow request never reached the backend")
		}
	}
	slowGet(base + "/v2/slow")
	cmd.Process.Signal(syscall.SIGTERM)
	waitLog("draining")
	// A SIGHUP during the drain (logrotate, config management) must not
	// kill the process, whose default action for it that is.
	cmd.Process.Signal(syscall.SIGHUP)
	waitLog("SIGHUP ignored: the node is draining")
	close(release)
	if got := <-done; got != "200 backend /v2/slow" {
		t.Fatalf("in-flight request during drain: %q", got)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v; want status 0", err)
	}
	if code := cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("exit code %d; want 0", code)
	}

	// A second SIGTERM ends a drain at once, as its deadline would: the
	// request still running is answered 503, the process exits 0.
	os.WriteFile(path, []byte(strings.Replace(cfg("/v3"), "node:\n", "node:\n  limits: {drain_timeout: 1m}\n", 1)), 0o600)
	cmd = exec.Command(bin, "serve", "-config", path)
	stderr, _ = cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	logs = watch(stderr)
	base = "http://" + waitLog("meridian serving")["http"].(string)
	slowGet(base + "/v3/slow")
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	waitLog("draining")
	cmd.Process.Signal(syscall.SIGTERM)
	waitLog("second stop signal: ending the drain now, as at its deadline")
	if got := <-done; !strings.HasPrefix(got, "503 ") {
		t.Errorf("in-flight request at a drain ended by a second signal: %q; want the drain's 503", got)
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after a second SIGTERM: %v; want status 0", err)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("exited %v after the signals; want well before the drain's deadline of 1m", d)
	}

}
