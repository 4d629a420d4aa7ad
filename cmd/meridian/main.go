// Command meridian is Meridian's single binary: it runs an edge node and
// talks to a running node's admin API.
//
//	meridian serve [-config FILE]       run a node (embedded demo config without -config)
//	meridian validate FILE              check a configuration file
//	meridian config get [flags]         print the applied gateway document
//	meridian config apply -f FILE       apply a gateway document (or a node file's gateway section)
//	meridian version
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/edge/certs"
	"github.com/meridian-gw/meridian/edge/config"
	"github.com/meridian-gw/meridian/internal/smallfile"
	"github.com/meridian-gw/meridian/node"
	"go.yaml.in/yaml/v3"
)

var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Meridian: a geo-distributed edge API gateway.

Usage:
  meridian serve [-config FILE]     run a node (the embedded demo config without -config)
  meridian validate FILE            check a configuration file (node file or gateway document)
  meridian config get               print the gateway document the node applied
  meridian config apply -f FILE     apply a gateway document through the admin API
  meridian ca root [-config FILE | -data-dir DIR]
                                    print the local CA's root certificate (PEM), for curl --cacert
  meridian cluster status           the cluster's members (also: cluster remove NAME, cluster ca create,
                                    cluster cert, cluster keygen)
  meridian dev [-nodes 3]           run a local cluster of nodes on loopback, for demos
  meridian version                  print the version

Run 'meridian COMMAND -h' for the flags of a command.
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stderr)
	case "validate":
		return validate(args[1:], stdout, stderr)
	case "config":
		return configCmd(args[1:], stdout, stderr)
	case "ca":
		return caCmd(args[1:], stdout, stderr)
	case "cluster":
		return clusterCmd(args[1:], stdout, stderr)
	case "dev":
		return devCmd(args[1:], stdout, stderr)
	case "version":
		if len(args) == 2 && isHelp(args[1]) {
			fmt.Fprintln(stdout, "usage: meridian version   (print the version)")
			return 0
		}
		if len(args) > 1 {
			fmt.Fprintf(stderr, "meridian: version takes no arguments (got %q)\n", args[1:])
			return 2
		}
		fmt.Fprintln(stdout, "meridian", versionString())
		return 0
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "meridian: unknown command %q\n\n%s", args[0], usage)
	return 2
}

// noArgs refuses the positional arguments a command does not take: flag
// parsing stops at the first one, so flags after it would be ignored too.
// isHelp reports whether arg asks for help.
func isHelp(arg string) bool { return arg == "-h" || arg == "-help" || arg == "--help" }

// parseFailed is the exit code for a flag-parsing error: 0 for -h, whose
// usage the flag set printed, else 2.
func parseFailed(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// adminFlags are the flags of commands that call the admin API; implicit
// says resolve took the token from the default token file.
type adminFlags struct {
	admin, token, tokenFile *string
	implicit                *bool
}

func addAdminFlags(fs *flag.FlagSet, tokenUse string) adminFlags {
	return adminFlags{
		implicit: new(bool),
		admin:    fs.String("admin", envOr("MERIDIAN_ADMIN", "http://127.0.0.1:9901"), "admin API base URL (env MERIDIAN_ADMIN)"),
		// The environment's token is read after parsing: as the flag's
		// default, help and flag errors would print it.
		token:     fs.String("token", "", tokenUse+" (default: -token-file if given, then env MERIDIAN_TOKEN, then the default token file)"),
		tokenFile: fs.String("token-file", "", "file holding the admin token, first line (default: admin-token in the user's cache dir + /meridian, the default data_dir's)"),
	}
}

// resolve checks -admin (an http or https URL with a host) and returns it
// without a trailing slash, with the token of -token or -token-file (one of
// them), else MERIDIAN_TOKEN, else the default token file if it exists. A
// non-zero code is the exit code of a failure it has reported.
func (f adminFlags) resolve(stderr io.Writer) (base, token string, code int) {
	u, err := url.Parse(*f.admin)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		fmt.Fprintf(stderr, "meridian: -admin (or MERIDIAN_ADMIN) must be a URL such as http://127.0.0.1:9901, not %q\n", *f.admin)
		return "", "", 2
	}
	base = strings.TrimSuffix(*f.admin, "/")
	switch {
	case *f.token != "" && *f.tokenFile != "":
		fmt.Fprintln(stderr, "meridian: give -token or -token-file, not both")
		return "", "", 2
	case *f.token != "":
		return base, *f.token, 0
	case *f.tokenFile != "":
		// Named explicitly: it must hold a token, rather than the command
		// send none and report the node's 401.
		b, err := smallfile.Read(*f.tokenFile, smallfile.MaxToken)
		if err != nil {
			fmt.Fprintf(stderr, "meridian: cannot read the token file: %v\n", err)
			return "", "", 1
		}
		if token = firstLine(b); token == "" {
			fmt.Fprintf(stderr, "meridian: the token file %s holds no token (its first line is empty)\n", *f.tokenFile)
			return "", "", 1
		}
		return base, token, 0
	}
	if token = os.Getenv("MERIDIAN_TOKEN"); token != "" {
		return base, token, 0
	}
	if dir, err := os.UserCacheDir(); err == nil {
		if b, err := os.ReadFile(filepath.Join(dir, "meridian", "admin-token")); err == nil {
			token = firstLine(b)
			*f.implicit = token != ""
		}
	}
	return base, token, 0
}

// client is the HTTP client for the admin API. A read that sent the token
// of the default token file (none was given) and had it refused is sent
// again without it: that file is the default node's, and another node on
// loopback (meridian dev's, say) takes reads without a token but refuses
// a wrong one.
func (f adminFlags) client(timeout time.Duration) *http.Client {
	c := &http.Client{Timeout: timeout}
	if *f.implicit {
		c.Transport = readWithoutToken{}
	}
	return c
}

type readWithoutToken struct{}

func (readWithoutToken) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized || req.Method != http.MethodGet || req.Header.Get("Authorization") == "" {
		return resp, err
	}
	resp.Body.Close()
	again := req.Clone(req.Context())
	again.Header.Del("Authorization")
	return http.DefaultTransport.RoundTrip(again)
}

// firstLine is a token file's token: its first line, trimmed.
func firstLine(b []byte) string {
	return strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
}

// stdin is what "-" names for validate and config apply -f.
var stdin io.Reader = os.Stdin

// readInput reads the file at path, or standard input for "-", up to the
// most a node takes (node.MaxFileBytes), as PUT /config bounds its body.
// Unlike a node's (node.ReadFile), it takes a pipe (validate <(...)).
func readInput(path string) ([]byte, error) {
	if path == "-" {
		return node.ReadLimited(stdin, "standard input")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return node.ReadLimited(f, path)
}

func noArgs(fs *flag.FlagSet, stderr io.Writer) bool {
	if fs.NArg() == 0 {
		return true
	}
	fmt.Fprintf(stderr, "meridian: %s takes no arguments (got %q; flags go before anything else)\n", fs.Name(), fs.Args())
	return false
}

// cgroupMemoryLimit returns the memory limit of the process's cgroup
// (v2, then v1), if it has one.
func cgroupMemoryLimit() (int64, bool) {
	var paths []string
	if b, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if p, ok := strings.CutPrefix(line, "0::"); ok {
				paths = append(paths, filepath.Join("/sys/fs/cgroup", p, "memory.max"))
			}
		}
	}
	paths = append(paths, "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			return parseMemoryLimit(string(b))
		}
	}
	return 0, false
}

// parseMemoryLimit reads a cgroup memory limit file: a byte count, or
// "max" (v2) or a huge number (v1) for none.
func parseMemoryLimit(s string) (int64, bool) {
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 || n >= 1<<60 {
		return 0, false
	}
	return n, true
}

// versionString is the release version, or for a build from a checkout
// the commit it was built from ("dev+0123456789ab", "-dirty" when it had
// uncommitted changes).
func versionString() string {
	if version != "dev" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return version
	}
	rev, dirty := "", ""
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = "+" + s.Value[:min(12, len(s.Value))]
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if rev == "" {
		return version
	}
	return version + rev + dirty
}

func serve(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (YAML); empty runs the embedded demo configuration")
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if !noArgs(fs, stderr) {
		return 2
	}
	if os.Getenv("GOGC") == "" {
		// A proxy's heap is small and short-lived; collecting less often
		// trades a little memory for a lot of CPU (see README, Benchmarks).
		debug.SetGCPercent(400)
	}
	if os.Getenv("GOMEMLIMIT") == "" {
		// With GOGC=400 the heap may grow to five times what is live
		// (many concurrent HTTP/2 streams): inside a container with a
		// memory limit, the collector works harder near 90% of it
		// rather than let the kernel kill the process.
		if limit, ok := cgroupMemoryLimit(); ok {
			debug.SetMemoryLimit(limit / 10 * 9)
		}
	}
	f, raw, ok := loadNodeFile(*path, stderr)
	if !ok {
		return 1
	}
	n, err := node.New(f, node.Options{ConfigPath: *path})
	if err != nil {
		fmt.Fprintf(stderr, "meridian: %v\n", err)
		return 1
	}
	// Catch signals before anything listens: a SIGHUP that arrives while
	// starting must reload, not kill the process (its default action).
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, serveSignals...)
	defer signal.Stop(sigs)
	if err := n.Start(f, raw); err != nil {
		fmt.Fprintf(stderr, "meridian: %v\n", err)
		return 1
	}
	// Reloads run off the signal loop, one at a time, SIGHUPs that come
	// during one making one more: a reload that waits (a file on a
	// stalled mount) must not hold up a stop signal.
	reloads, stopReloads := make(chan struct{}, 1), make(chan struct{})
	var reloading atomic.Int64 // when the running reload began (UnixNano), 0 for none
	go func() {
		for {
			select {
			case <-stopReloads:
				return
			case <-reloads:
				reloading.Store(time.Now().UnixNano())
				n.Reload() // a refusal is logged; the running configuration serves on
				reloading.Store(0)
			}
		}
	}()
	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			select {
			case reloads <- struct{}{}:
			default: // one is pending: it reads the file as it is then
			}
			if at := reloading.Load(); at != 0 && time.Since(time.Unix(0, at)) > stuckReload {
				// Said, so that a reload that waits for good (its file
				// on a stalled mount) does not swallow SIGHUPs unseen.
				n.Logger().Warn("SIGHUP: the reload before it has not ended; this one waits for it",
					"running_for", time.Since(time.Unix(0, at)).Round(time.Second).String(), "config", *path)
			}
			continue
		case reopenSignal:
			n.ReopenLogs() // after logrotate; a failure is logged
			continue
		}
		close(stopReloads)
		drain(n, sigs)
		return 0
	}
	return 0
}

// stuckReload is how long a reload runs before a SIGHUP that has to wait
// for it says so.
const stuckReload = 5 * time.Second

// drain drains n on a first SIGTERM or SIGINT, still holding the signals:
// a SIGHUP or SIGUSR1 then (config management, logrotate) is ignored, where
// a SIGHUP's default action would kill the process and cut every request; a second
// SIGTERM or SIGINT ends the drain at once, as its deadline would
// (requests still running are cut, the access log is written out). A
// drain that hit its deadline cut some requests off; that is logged, and
// still a clean, intended stop.
func drain(n *node.Node, sigs <-chan os.Signal) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Drain(ctx)
	}()
	for {
		select {
		case <-done:
			return
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				n.Logger().Warn("SIGHUP ignored: the node is draining")
			case reopenSignal:
				// The log is written out and closed at the drain's end;
				// a file reopened now could be left open.
				n.Logger().Warn("log reopen signal ignored: the node is draining")
			default:
				n.Logger().Warn("second stop signal: ending the drain now, as at its deadline", "signal", sig.String())
				cancel()
			}
		}
	}
}

// loadNodeFile reads and parses a node file (the embedded default for an
// empty path), reporting problems on stderr.
func loadNodeFile(path string, stderr io.Writer) (*node.File, []byte, bool) {
	raw := node.DefaultConfig
	if path != "" {
		b, err := node.ReadFile(path)
		if err != nil {
			fmt.Fprintf(stderr, "meridian: %v\n", err)
			return nil, nil, false
		}
		raw = b
	}
	f, err := node.ParseFile(raw)
	if err != nil {
		fmt.Fprintf(stderr, "meridian: %s: invalid configuration:\n%s\n", displayName(path), indent(err.Error()))
		return nil, nil, false
	}
	return f, raw, true
}

func displayName(path string) string {
	if path == "" {
		return "embedded default configuration"
	}
	return path
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

func validate(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: meridian validate FILE   (a node file or a bare gateway document, - for standard input; exit 1 with its errors)")
	}
	if err := fs.Parse(args); err != nil {
		return parseFailed(err)
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: meridian validate FILE")
		return 2
	}
	path := fs.Arg(0)
	raw, err := readInput(path)
	if path == "-" {
		path = "standard input"
	}
	if err != nil {
		fmt.Fprintf(stderr, "meridian: %v\n", err)
		return 1
	}
	kind, routes, err := validateBytes(raw)
	if err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n%s\n", path, indent(err.Error()))
		return 1
	}
	fmt.Fprintf(stdout, "%s: valid %s\n", path, kind)
	if routes == 0 {
		fmt.Fprintf(stdout, "note: it has no routes, so every request would get a 404; PUT /config, config apply and SIGHUP refuse such a document unless allowed (allow_empty, -allow-empty)\n")
	}
	return 0
}

// validateBytes accepts a node file (with node: and gateway: sections) or a
// bare gateway document (services: and routes:).
// validateBytes checks a node file or gateway document: what it is, its
// routes, and its errors.
func validateBytes(raw []byte) (kind string, routes int, err error) {
	if looksLikeNodeFile(raw) {
		f, err := node.ParseFile(raw)
		if err != nil {
			return "node configuration", 0, err
		}
		return "node configuration", len(f.Gateway.Routes), nil
	}
	doc, err := config.Parse(raw)
	if err == nil {
		err = config.WithLines(raw, edge.Check(doc), "")
	}
	if err != nil {
		return "gateway document", 0, err
	}
	return "gateway document", len(doc.Routes), nil
}

// checkGatewaySection decodes and validates the gateway section of a node
// file, its errors with the file's lines and paths (gateway.routes[0]...).
// The node section is checked too (an unknown field, a wrong type or a bad
// value there would stop the file from starting or reloading a node), but
// not the files it names: they may be another machine's.
func checkGatewaySection(raw []byte) error {
	return node.CheckPortable(raw)
}

// looksLikeNodeFile reports whether raw's top level has a node or gateway
// key. It reads the document's node tree only: decoded into Go values, a
// mapping of many keys cost the decoder time in the square of their number
// before the strict checks could refuse it.
func looksLikeNodeFile(raw []byte) bool {
	var root yaml.Node
	if err := yaml.Unmarshal(raw, &root); err != nil || len(root.Content) == 0 {
		return false
	}
	top := root.Content[0]
	if top.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(top.Content); i += 2 {
		if k := top.Content[i].Value; k == "node" || k == "gateway" {
			return true
		}
	}
	return false
}

func configCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "usage: meridian config get|apply [flags]")
		return 2
	}
	if isHelp(args[0]) {
		fmt.Fprintln(stderr, "usage: meridian config get|apply [flags]   (meridian config get -h, meridian config apply -h)")
		return 0
	}
	if args[0] != "get" && args[0] != "apply" {
		fmt.Fprintf(stderr, "meridian: unknown config command %q (get, apply)\n", args[0])
		return 2
	}
	fs := flag.NewFlagSet("config "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	af := addAdminFlags(fs, "admin bearer token")
	var file *string
	var ifVersion *uint64
	var allowEmpty *bool
	if args[0] == "apply" {
		file = fs.String("f", "", "file to apply: a gateway document, or a node file whose gateway section is applied; - for standard input")
		ifVersion = fs.Uint64("if-version", 0, "refuse the write unless the node serves this version (optimistic concurrency)")
		allowEmpty = fs.Bool("allow-empty", false, "apply a document without routes (every request then gets a 404)")
	}
	if err := fs.Parse(args[1:]); err != nil {
		return parseFailed(err)
	}
	if !noArgs(fs, stderr) {
		return 2
	}
	base, tok, code := af.resolve(stderr)
	if code != 0 {
		return code
	}
	client := af.client(30 * time.Second)
	switch args[0] {
	case "get":
		req, _ := http.NewRequest(http.MethodGet, base+"/config", nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		return doAdmin(client, req, stdout, stderr)
	default: // apply
		if *file == "" {
			fmt.Fprintln(stderr, "usage: meridian config apply -f FILE")
			return 2
		}
		raw, err := readInput(*file)
		if err != nil {
			fmt.Fprintf(stderr, "meridian: %v\n", err)
			return 1
		}
		offset := -1 // the lines before the section sent, when a node file's
		if looksLikeNodeFile(raw) {
			// Checked here first, so that errors name the file's lines
			// (the node would name the lines of the section sent).
			if err := checkGatewaySection(raw); err != nil {
				fmt.Fprintf(stderr, "meridian: %s: invalid node file (nothing sent):\n%s\n", displayName(*file), indent(err.Error()))
				return 1
			}
			if raw, offset, err = node.GatewaySection(raw); err != nil {
				fmt.Fprintf(stderr, "meridian: %v\n", err)
				return 1
			}
			if t := strings.TrimSpace(string(raw)); t == "" || t == "null" || t == "~" {
				raw = []byte("{}\n") // "gateway:" with nothing after it
			}
		}
		name := *file
		if name == "-" {
			name = "standard input"
		}
		if doc, err := config.Parse(raw); err == nil && len(doc.Routes) == 0 && !*allowEmpty {
			// Refused by the node too; said here in the CLI's terms.
			fmt.Fprintf(stderr, "meridian: %s has no routes (a node file's gateway section missing or empty, say): applied, every request would get a 404; -allow-empty applies it anyway\n", name)
			return 1
		}
		q := url.Values{}
		if *ifVersion != 0 {
			q.Set("if_version", strconv.FormatUint(*ifVersion, 10))
		}
		if *allowEmpty {
			q.Set("allow_empty", "true")
		}
		u := base + "/config"
		if len(q) > 0 {
			u += "?" + q.Encode()
		}
		req, _ := http.NewRequest(http.MethodPut, u, bytes.NewReader(raw))
		req.Header.Set("Content-Type", "application/yaml")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if offset >= 0 {
			// Errors only the node finds (the files the services name)
			// come with the section's lines: said in the file's.
			return doAdmin(client, req, stdout, &sectionErrors{w: stderr, offset: offset})
		}
		return doAdmin(client, req, stdout, stderr)
	}
}

// sectionErrors writes what doAdmin says of a refused node file's gateway
// section with each "line N: path: " of the node's errors made the file's
// "line N+offset: gateway.path: ".
type sectionErrors struct {
	w      io.Writer
	offset int
}

var sectionErrorRE = regexp.MustCompile(`"line (\d+): (?:([A-Za-z_][^":\s]*): )?`)

func (s *sectionErrors) Write(p []byte) (int, error) {
	out := sectionErrorRE.ReplaceAllFunc(p, func(m []byte) []byte {
		sm := sectionErrorRE.FindSubmatch(m)
		n, err := strconv.Atoi(string(sm[1]))
		if err != nil {
			return m
		}
		if len(sm[2]) == 0 {
			return []byte(fmt.Sprintf(`"line %d: `, n+s.offset))
		}
		return []byte(fmt.Sprintf(`"line %d: gateway.%s: `, n+s.offset, sm[2]))
	})
	if _, err := s.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func doAdmin(c *http.Client, req *http.Request, stdout, stderr io.Writer) int {
	resp, err := c.Do(req)
	if err != nil {
		var ue interface{ Unwrap() error }
		if errors.As(err, &ue) {
			err = ue.Unwrap()
		}
		fmt.Fprintf(stderr, "meridian: cannot reach the admin API at %s: %v\n", req.URL.Host, err)
		return 1
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if resp.StatusCode >= 300 {
		fmt.Fprintf(stderr, "meridian: %s\n%s", resp.Status, body)
		return 1
	}
	if resp.StatusCode == http.StatusAccepted {
		fmt.Fprintf(stderr, "meridian: %s: the write is committed (do not send it again), but the node does not serve it yet\n", resp.Status)
	}
	stdout.Write(body)
	return 0
}

func caCmd(args []string, stdout, stderr io.Writer) int {
	if len(args) == 1 && isHelp(args[0]) {
		fmt.Fprintln(stdout, "usage: meridian ca root [-config FILE | -data-dir DIR]")
		return 0
	}
	if len(args) == 0 || args[0] != "root" {
		fmt.Fprintln(stderr, "usage: meridian ca root [-config FILE | -data-dir DIR]")
		return 2
	}
	fs := flag.NewFlagSet("ca root", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "node configuration file whose data_dir holds the CA (default: the embedded configuration)")
	dataDir := fs.String("data-dir", "", "data dir holding the CA (instead of -config)")
	if err := fs.Parse(args[1:]); err != nil {
		return parseFailed(err)
	}
	if !noArgs(fs, stderr) {
		return 2
	}
	if *path != "" && *dataDir != "" {
		fmt.Fprintln(stderr, "meridian: give -config or -data-dir, not both")
		return 2
	}
	dir := *dataDir
	if dir == "" {
		f, _, ok := loadNodeFile(*path, stderr)
		if !ok {
			return 1
		}
		var err error
		if dir, err = node.DataDir(f.Node); err != nil {
			fmt.Fprintf(stderr, "meridian: %v\n", err)
			return 1
		}
	}
	pem, err := certs.LoadRootPEM(dir)
	if err != nil {
		fmt.Fprintf(stderr, "meridian: no local CA in %s (it is created when a node with listen.https and no ACME settings first starts): %v\n", dir, err)
		return 1
	}
	stdout.Write(pem)
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
