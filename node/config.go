package node

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"go.yaml.in/yaml/v3"

	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/edge/certs"
	"github.com/meridian-gw/meridian/edge/config"
	"github.com/meridian-gw/meridian/internal/smallfile"
)

// File is a node's configuration file: the node section, static and local
// to this node, and the gateway document, which can later be replaced at
// run time (admin API, SIGHUP).
type File struct {
	Node    Config          `yaml:"node"`
	Gateway config.Document `yaml:"gateway"`
}

// Config is the static configuration of one node. Changing it needs a
// restart; a reload only applies the gateway document.
type Config struct {
	// Name of the node; default the host name.
	Name string `yaml:"name"`
	// Region the node runs in; default "local".
	Region string `yaml:"region"`
	// DataDir keeps the node's state (applied config, admin token); default
	// the user's cache dir + "/meridian".
	DataDir string `yaml:"data_dir"`
	// Listen addresses.
	Listen Listen `yaml:"listen"`
	// TLS configures certificates and HTTP/3 for the HTTPS listener.
	TLS TLS `yaml:"tls"`
	// Location of the node's PoP, for geo routing and cluster status.
	Location Location `yaml:"location"`
	// Cluster joins this node to a Meridian cluster; nil runs it alone.
	Cluster *Cluster `yaml:"cluster"`
	// Admin API.
	Admin Admin `yaml:"admin"`
	// Limits harden the client-facing listener.
	Limits Limits `yaml:"limits"`
	// TrustedProxies are CIDRs (or addresses) whose Forwarded and
	// X-Forwarded-* headers are extended rather than replaced.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// AccessLog configures the per-request log.
	AccessLog AccessLog `yaml:"access_log"`
	// Log configures the operational log.
	Log Log `yaml:"log"`
	// Demo starts the built-in demo backends on loopback; the gateway
	// document may then name the target "http://demo.local" (replaced by
	// their address).
	Demo bool `yaml:"demo"`
}

// Listen holds the client-facing addresses.
type Listen struct {
	// HTTP serves HTTP/1.1 and h2c; default 127.0.0.1:8080. With HTTPS
	// set it answers ACME HTTP-01 challenges and redirects to HTTPS
	// (308) except for routes with allow_plain_http.
	HTTP string `yaml:"http"`
	// HTTPS serves TLS over TCP (HTTP/1.1 and HTTP/2 by ALPN) and HTTP/3
	// over QUIC on the UDP port of the same number. Empty: no HTTPS.
	HTTPS string `yaml:"https"`
}

// Location is a point on Earth in degrees.
type Location struct {
	Lat float64 `yaml:"lat"`
	Lon float64 `yaml:"lon"`
}

// Cluster configures cluster membership: the gateway document in Raft,
// membership by gossip.
type Cluster struct {
	// Bind is the cluster TCP address (Raft and write forwarding, mutual
	// TLS), e.g. 10.0.0.5:7001; Advertise what peers dial (default Bind).
	Bind      string `yaml:"bind"`
	Advertise string `yaml:"advertise"`
	// GossipBind is the gossip address (TCP and UDP), e.g. 10.0.0.5:7946;
	// GossipAdvertise what peers dial (default GossipBind).
	GossipBind      string `yaml:"gossip_bind"`
	GossipAdvertise string `yaml:"gossip_advertise"`
	// Join: gossip addresses of members to join through.
	Join []string `yaml:"join"`
	// BootstrapExpect forms the cluster once this many voters have met
	// (start exactly that many voters first); Bootstrap makes this node
	// form it alone (an explicit first node). One of them, on the first
	// voters only.
	BootstrapExpect int  `yaml:"bootstrap_expect"`
	Bootstrap       bool `yaml:"bootstrap"`
	// Voter: this node votes in Raft (default true). Keep 3 or 5 voters
	// spread over regions; the rest non-voters.
	Voter *bool `yaml:"voter"`
	// RemoveOnLeave: a draining voter gives up its Raft seat (default
	// false: a restart keeps the quorum's size).
	RemoveOnLeave bool `yaml:"remove_on_leave"`
	// TLS: mutual TLS for Raft and forwarding, certificates from the
	// cluster CA (meridian cluster ca create / cluster cert).
	TLS ClusterTLS `yaml:"tls"`
	// GossipKeyFile holds base64 gossip encryption keys, one per line; the
	// first encrypts, all decrypt (rotation: add, make primary, remove).
	GossipKeyFile string `yaml:"gossip_key_file"`
	// Insecure allows running without TLS and gossip keys (development
	// on one machine only).
	Insecure bool `yaml:"insecure"`
}

// ClusterTLS names the node's cluster certificate and the cluster CA.
type ClusterTLS struct {
	CAFile   string `yaml:"ca_file"`
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// TLS configures certificates. Without an acme section a local CA, created
// in the data dir on first start, signs certificates for localhost and the
// hosts the routes name (print its root with `meridian ca root`).
type TLS struct {
	// ACME obtains publicly trusted certificates (Let's Encrypt or any
	// ACME CA) for the hosts the routes name plus Hosts.
	ACME *ACME `yaml:"acme"`
	// Hosts are names to hold certificates for besides the routes' hosts.
	Hosts []string `yaml:"hosts"`
	// OnDemand obtains a certificate at the first handshake for a name,
	// but only for names some route (or Hosts) names, or that Ask allows.
	OnDemand OnDemand `yaml:"on_demand"`
	// HTTP3 on the HTTPS port; enabled by default when HTTPS is set.
	HTTP3 HTTP3 `yaml:"http3"`
	// ClientAuth asks clients of some hosts for certificates (mutual
	// TLS); the verified identity is forwarded upstream in
	// X-Forwarded-Client-Cert.
	ClientAuth []ClientAuth `yaml:"client_auth"`
	// Certificates are the operator's own, served for the names they
	// hold before ACME or the local CA (which then leave those names
	// alone); the first also answers handshakes without a server name.
	// SIGHUP reads the files again.
	Certificates []Certificate `yaml:"certificates"`
}

// Certificate is a certificate (the chain after the leaf, if any) and its
// private key, PEM files.
type Certificate struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// ClientAuth is mutual TLS for some hosts.
type ClientAuth struct {
	// Hosts: exact names or "*.example.com" (one label).
	Hosts []string `yaml:"hosts"`
	// CAFile is a PEM bundle of the CAs that sign client certificates.
	CAFile string `yaml:"ca_file"`
	// Required refuses clients without a valid certificate; otherwise a
	// certificate is verified when one is given. Default true.
	Required *bool `yaml:"required"`
}

// ACME configures the ACME issuer.
type ACME struct {
	// Email for the ACME account (expiry notices).
	Email string `yaml:"email"`
	// CA is the directory URL; default Let's Encrypt production. Use
	// https://acme-staging-v02.api.letsencrypt.org/directory to try.
	CA string `yaml:"ca"`
	// CARoot is a PEM file of an extra root to trust when talking to the
	// CA (a private CA, or pebble's test root).
	CARoot string `yaml:"ca_root"`
	// Challenges to use: http-01 (needs listen.http reachable on port 80)
	// and tls-alpn-01 (needs listen.https on port 443); default both.
	Challenges []string `yaml:"challenges"`
	// DNSProvider is needed for wildcard hosts (DNS-01). No provider is
	// built in yet: wildcard hosts are reported at start and served on
	// demand only if on_demand allows their concrete names.
	DNSProvider string `yaml:"dns_provider"`
	// Profile is an optional ACME certificate profile name.
	Profile string `yaml:"profile"`
}

// OnDemand configures on-demand TLS.
type OnDemand struct {
	Enabled bool `yaml:"enabled"`
	// Ask is a URL asked with GET ?domain=NAME before obtaining a
	// certificate for a name no route names; 200 allows.
	Ask string `yaml:"ask"`
	// MaxNewPerHour bounds the certificates obtained on demand for names
	// that had none, in any hour (counted in the certificate storage: the
	// cluster's, clustered); 0: the default (20).
	MaxNewPerHour int `yaml:"max_new_per_hour"`
}

// HTTP3 configures HTTP/3.
type HTTP3 struct {
	// Enabled defaults to true when listen.https is set.
	Enabled *bool `yaml:"enabled"`
	// Allow0RTT accepts QUIC early data for safe methods (unsafe ones get
	// 425 Too Early). Default false.
	Allow0RTT bool `yaml:"allow_0rtt"`
}

// Admin configures the admin API listener.
type Admin struct {
	// Listen address; default 127.0.0.1:9901. "off" disables the admin API.
	Listen string `yaml:"listen"`
	// Token is the bearer token for writes (and for reads when the
	// listener is not on loopback).
	Token string `yaml:"token"`
	// TokenFile holds the token instead (first line). With neither set, a
	// random token is created in DataDir/admin-token on first start.
	TokenFile string `yaml:"token_file"`
}

// Limits harden the client-facing listener. Zero values take the defaults.
type Limits struct {
	// MaxHeaderBytes caps the request line and headers; default 64KiB.
	MaxHeaderBytes config.ByteSize `yaml:"max_header_bytes"`
	// MaxHeaderCount caps the number of header fields; default 100.
	MaxHeaderCount int `yaml:"max_header_count"`
	// MaxRequestBody is the default request body limit of routes; default
	// 10MiB.
	MaxRequestBody config.ByteSize `yaml:"max_request_body"`
	// HeadersWithUnderscores is what happens to request header fields
	// whose names contain "_": allow (default, as Envoy and Caddy), drop
	// (as nginx), or reject (400). CGI-style backends read X_Forwarded_For
	// and X-Forwarded-For as one variable, so a client could pass off its
	// own value as the gateway's.
	HeadersWithUnderscores string `yaml:"headers_with_underscores"`
	// ReadHeaderTimeout bounds reading request headers; default 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes idle keep-alive connections; default 120s.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// SendTimeout closes a connection whose client stops reading a
	// response for that long (nginx's send_timeout); default 60s.
	SendTimeout time.Duration `yaml:"send_timeout"`
	// ReadBodyTimeout cuts a request with a 408 when one read of its body
	// waits that long for the client before the response has begun
	// (nginx's client_body_timeout); default 60s.
	ReadBodyTimeout time.Duration `yaml:"read_body_timeout"`
	// MaxConnections caps concurrent client connections; default 0 (none).
	MaxConnections int `yaml:"max_connections"`
	// DrainTimeout is how long a stopping node lets in-flight requests
	// finish; default 30s.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
}

// AccessLog configures the access log.
type AccessLog struct {
	// Enabled defaults to true.
	Enabled *bool `yaml:"enabled"`
	// Path is "stdout" (default), "stderr" or a file path (appended).
	Path string `yaml:"path"`
	// FlushInterval is how long lines may wait in the log's 64 KiB
	// buffer before they are written; nil means 1s, 0 writes every line
	// at once (a write per request).
	FlushInterval *time.Duration `yaml:"flush_interval"`
}

// Log configures the operational log (JSON on stderr).
type Log struct {
	// Level is debug, info (default), warn or error.
	Level string `yaml:"level"`
}

// Defaults.
const (
	DefaultHTTPAddr     = "127.0.0.1:8080"
	DefaultAdminAddr    = "127.0.0.1:9901"
	DefaultDrainTimeout = 30 * time.Second
)

// MaxFileBytes is the most a configuration file or document may hold: what
// PUT /config takes, and what validate, serve and SIGHUP read. Reading a
// document takes some 50 times its size in memory (YAML's node tree, the
// decoded values, the compiled routes): 8 MiB, over 100,000 routes, is a
// few hundred MB; 32 MiB took 2 GB (Kong's admin API takes 10 MB).
const MaxFileBytes = 8 << 20

// ReadFile reads a configuration file, refusing one over MaxFileBytes
// (without reading past it).
func ReadFile(path string) ([]byte, error) {
	// Only a regular file: opening a FIFO waits for a writer, and a
	// device may never end (a reload must not hang on either). The type
	// is that of the file opened (without waiting), not of the name
	// looked at before, which a rename could change in between.
	f, err := smallfile.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadLimited(f, path)
}

// ReadLimited reads a document from r (named name in errors), refusing one
// over MaxFileBytes.
func ReadLimited(r io.Reader, name string) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", name, err)
	}
	if len(b) > MaxFileBytes {
		return nil, fmt.Errorf("%s: more than %d MiB, the most a node takes", name, MaxFileBytes>>20)
	}
	return b, nil
}

// ParseFile decodes and validates a node configuration file. Errors name the
// field and line.
func ParseFile(data []byte) (_ *File, err error) {
	return parseFile(data, true)
}

// CheckPortable checks a node file as ParseFile does, but nothing in it
// that depends on the machine it is checked on (the files its node section
// names, which may be another machine's) nor what only compiling the
// gateway section finds: what a command sending its gateway section to a
// node can check (config apply -f).
func CheckPortable(data []byte) error {
	_, err := parseFile(data, false)
	return err
}

// parseFile is ParseFile; machine says whether the files the node section
// names are read, and the gateway section compiled.
func parseFile(data []byte, machine bool) (_ *File, err error) {
	defer config.RecoverParse(&err)
	var f File
	root, err := config.DecodeStrict(data, &f)
	if err != nil {
		if bareDocument(data) {
			// validate takes this file; serve needs it under gateway:.
			return nil, errors.New("this is a gateway document on its own (services and routes at the top); a node's file has a node: section and that document under gateway: (see the README), or give this one to a running node with `meridian config apply -f FILE`")
		}
		return nil, err
	}
	var errs config.Errors
	if err := f.Node.validate(machine); err != nil {
		for _, e := range err.(config.Errors) {
			e.Path = "node." + e.Path
			e.Line = config.LineOf(root, e.Path)
			errs = append(errs, e)
		}
	}
	if err := config.ValidateAt(&f.Gateway, root, "gateway"); err != nil {
		var ges config.Errors
		if errors.As(err, &ges) {
			errs = append(errs, ges...)
		} else {
			return nil, err
		}
	}
	if len(errs) > 0 {
		slices.SortStableFunc(errs, func(a, b *config.FieldError) int { return cmp.Compare(a.Line, b.Line) })
		return nil, config.CapErrors(errs)
	}
	// Compile as a node would, to catch what only the compiler sees.
	if !machine {
		return &f, nil
	}
	if err := edge.Check(&f.Gateway); err != nil {
		return nil, config.WithLines(data, err, "gateway")
	}
	return &f, nil
}

// bareDocument reports whether data is a gateway document rather than a
// node's file: a mapping with services or routes at the top and neither
// node nor gateway.
func bareDocument(data []byte) bool {
	var top map[string]any
	if yaml.Unmarshal(data, &top) != nil {
		return false
	}
	_, node := top["node"]
	_, gw := top["gateway"]
	_, svcs := top["services"]
	_, routes := top["routes"]
	return !node && !gw && (svcs || routes)
}

// GatewayYAML returns the gateway section of a node file as its own YAML
// document, for storing and reading back "as applied".
func GatewayYAML(data []byte) ([]byte, error) {
	b, _, err := GatewaySection(data)
	return b, err
}

// GatewaySection is GatewayYAML, with the number of lines before the
// section in data when the section is data's own lines (its line N is the
// file's N+offset), or -1 when it had to be re-encoded.
func GatewaySection(data []byte) (section []byte, offset int, err error) {
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, -1, err
	}
	if root.Kind != yaml.DocumentNode || len(root.Content) == 0 || root.Content[0].Kind != yaml.MappingNode {
		return nil, -1, errors.New("not a mapping")
	}
	m := root.Content[0]
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == "gateway" {
			if b := sectionText(data, m, i); b != nil {
				return b, m.Content[i].Line, nil
			}
			// Re-encoded on its own: aliases may point to anchors
			// elsewhere in the file (in the node section), so they are
			// replaced by what they stand for.
			b, err := yaml.Marshal(expandAliases(m.Content[i+1], 0))
			return b, -1, err
		}
	}
	return []byte("{}\n"), -1, nil
}

// expandAliases returns a copy of the tree at n with every alias replaced
// by a copy of what it names, and no anchors.
func expandAliases(n *yaml.Node, depth int) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil && depth < 100 {
		n = n.Alias
		depth++
	}
	c := *n
	c.Anchor = ""
	if len(n.Content) > 0 && depth < 100 {
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, k := range n.Content {
			c.Content[i] = expandAliases(k, depth+1)
		}
	}
	return &c
}

// sectionText returns the text of the block-style value of top-level key
// m.Content[i] as written, comments and all, dedented to a document of its
// own; nil when it cannot (flow style, odd indentation), or when the text
// would not mean the same as the value.
func sectionText(data []byte, m *yaml.Node, i int) []byte {
	k, v := m.Content[i], m.Content[i+1]
	if v.Kind != yaml.MappingNode && v.Kind != yaml.SequenceNode || v.Style&yaml.FlowStyle != 0 || v.Line <= k.Line || v.Column <= k.Column {
		return nil
	}
	lines := strings.SplitAfter(string(data), "\n")
	end := len(lines) // exclusive, 0-based
	if i+2 < len(m.Content) {
		end = m.Content[i+2].Line - 1
	}
	if end > len(lines) || k.Line > end {
		return nil
	}
	sec := lines[k.Line:end]
	// Blank lines and comments at the top level before the next key (or
	// the end) belong to what follows, not to this section.
	for len(sec) > 0 {
		last := sec[len(sec)-1]
		t := strings.TrimSpace(last)
		if ind := len(last) - len(strings.TrimLeft(last, " ")); t != "" && (t[0] != '#' || ind >= v.Column-1) {
			break
		}
		sec = sec[:len(sec)-1]
	}
	indent := strings.Repeat(" ", v.Column-1)
	var b strings.Builder
	for _, l := range sec {
		switch {
		case strings.HasPrefix(l, indent):
			b.WriteString(l[len(indent):])
		case strings.TrimSpace(l) == "" || strings.HasPrefix(strings.TrimSpace(l), "#"):
			b.WriteString(strings.TrimLeft(l, " \t"))
		default:
			return nil
		}
	}
	out := []byte(b.String())
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	var want, got any
	if v.Decode(&want) != nil || yaml.Unmarshal(out, &got) != nil || !reflect.DeepEqual(want, got) {
		return nil
	}
	return out
}

// validate checks the node section's values; machine says whether the
// files it names are read (and a data dir looked at): what serve would
// refuse on this machine.
func (c *Config) validate(machine bool) error {
	var es config.Errors
	add := func(path, format string, args ...any) {
		es = append(es, &config.FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
	}
	// Addresses the node binds, to catch two listeners on one port.
	type bound struct{ path, host, port string }
	var binds []bound
	checkAddr := func(path, addr string) bool {
		if addr == "" {
			return false
		}
		_, port, err := net.SplitHostPort(addr)
		if err != nil || port == "" {
			add(path, "invalid address %q: use host:port such as 127.0.0.1:8080", addr)
			return false
		}
		if _, err := net.LookupPort("tcp", port); err != nil {
			add(path, "invalid port in %q: use a number from 0 to 65535", addr)
			return false
		}
		return true
	}
	bind := func(path, addr string) {
		if checkAddr(path, addr) {
			host, port, _ := net.SplitHostPort(addr)
			// As net.Listen reads it: 019520 and http are ports 19520
			// and 80 (an outside check had validate pass two
			// listeners on 19520 written apart).
			if p, err := net.LookupPort("tcp", port); err == nil {
				port = strconv.Itoa(p)
			}
			binds = append(binds, bound{path, host, port})
		}
	}
	// Files the node reads at start are read here too, so that validate
	// finds what serve would refuse.
	checkFile := func(path, file string, read func(string) error) {
		if file == "" || !machine {
			return
		}
		if err := read(file); err != nil {
			add(path, "%v", err)
		}
	}
	certPool := func(f string) error { _, err := loadCertPool(f); return err }
	orDefault := func(addr, def string) string {
		if addr == "" {
			return def
		}
		return addr
	}
	bind("listen.http", orDefault(c.Listen.HTTP, DefaultHTTPAddr))
	bind("listen.https", c.Listen.HTTPS)
	if a := c.TLS.ACME; a != nil {
		if a.CA != "" {
			if u, err := url.Parse(a.CA); err != nil || u.Scheme != "https" || u.Host == "" {
				add("tls.acme.ca", "invalid directory URL %q: use https://...", a.CA)
			}
		}
		for i, ch := range a.Challenges {
			if ch != "http-01" && ch != "tls-alpn-01" {
				add(fmt.Sprintf("tls.acme.challenges[%d]", i), "unknown challenge %q: use http-01 or tls-alpn-01", ch)
			}
		}
		if c.Listen.HTTPS == "" {
			add("tls.acme", "ACME needs listen.https")
		}
		checkFile("tls.acme.ca_root", a.CARoot, certPool)
		if a.DNSProvider != "" {
			add("tls.acme.dns_provider", "no DNS provider is built in yet: leave it out (wildcard hosts can be served with tls.on_demand)")
		}
	}
	if cl := c.Cluster; cl != nil {
		bind("cluster.bind", cl.Bind)
		bind("cluster.gossip_bind", cl.GossipBind)
		checkAddr("cluster.advertise", cl.Advertise)
		checkAddr("cluster.gossip_advertise", cl.GossipAdvertise)
		if cl.Bind == "" {
			add("cluster.bind", "missing: the cluster address, e.g. 10.0.0.5:7001")
		}
		if cl.GossipBind == "" {
			add("cluster.gossip_bind", "missing: the gossip address, e.g. 10.0.0.5:7946")
		}
		// Peers dial the cluster address: one on every interface needs
		// the one they dial (serve refused it after validate took it).
		allIfaces := func(addr string) bool {
			h, _, err := net.SplitHostPort(addr)
			if err != nil {
				return false
			}
			ip, perr := netip.ParseAddr(h)
			return h == "" || (perr == nil && ip.IsUnspecified())
		}
		if cl.Advertise == "" && allIfaces(cl.Bind) {
			add("cluster.advertise", "missing: cluster.bind %s listens on every interface; set advertise to the address peers dial, e.g. 10.0.0.5:7001", cl.Bind)
		}
		if allIfaces(cl.Advertise) {
			add("cluster.advertise", "%s is not an address peers can dial", cl.Advertise)
		}
		if cl.Bootstrap && cl.BootstrapExpect > 0 {
			add("cluster", "set bootstrap or bootstrap_expect, not both")
		}
		if cl.BootstrapExpect < 0 {
			add("cluster.bootstrap_expect", "must not be negative")
		}
		if !cl.Bootstrap && cl.BootstrapExpect == 0 && len(cl.Join) == 0 {
			add("cluster", "a node needs bootstrap, bootstrap_expect or join addresses")
		}
		if cl.Insecure {
			// Without TLS anyone who reaches the cluster port can write
			// the document (an outside check did, from another
			// address): the README's "one machine" is enforced.
			for _, a := range []struct{ field, addr string }{{"cluster.bind", cl.Bind}, {"cluster.gossip_bind", cl.GossipBind}, {"cluster.advertise", cl.Advertise}, {"cluster.gossip_advertise", cl.GossipAdvertise}} {
				h, _, err := net.SplitHostPort(a.addr)
				if a.addr == "" || err != nil {
					continue
				}
				if ip, err := netip.ParseAddr(h); (err != nil && h != "localhost") || (err == nil && !ip.IsLoopback()) {
					add(a.field, "%s is not a loopback address: insecure: true (no TLS, no gossip key) is for one machine; use cluster.tls and gossip_key_file across machines", a.addr)
				}
			}
		}
		if !cl.Insecure {
			if cl.TLS.CAFile == "" || cl.TLS.CertFile == "" || cl.TLS.KeyFile == "" {
				add("cluster.tls", "missing: ca_file, cert_file and key_file (from meridian cluster ca create / cluster cert), or insecure: true for development")
			}
			if cl.GossipKeyFile == "" {
				add("cluster.gossip_key_file", "missing: a gossip key file (meridian cluster keygen), or insecure: true for development")
			}
		}
		checkFile("cluster.tls.ca_file", cl.TLS.CAFile, certPool)
		if cl.TLS.CertFile != "" && cl.TLS.KeyFile != "" && machine {
			_, certErr := os.Stat(cl.TLS.CertFile)
			_, keyErr := os.Stat(cl.TLS.KeyFile)
			if certErr != nil {
				add("cluster.tls.cert_file", "%v", certErr)
			}
			if keyErr != nil {
				add("cluster.tls.key_file", "%v", keyErr)
			}
			if certErr != nil || keyErr != nil {
				// Said above, each.
			} else if kp, err := smallfile.LoadKeyPair(cl.TLS.CertFile, cl.TLS.KeyFile); err != nil {
				field := "cluster.tls.cert_file"
				if _, ok := errors.AsType[*smallfile.KeyFileError](err); ok {
					field = "cluster.tls.key_file"
				}
				add(field, "%v", err)
			} else if leaf, err := x509.ParseCertificate(kp.Certificate[0]); err == nil {
				// The leader seats a member only if its certificate is
				// for its name; say so here rather than let the node
				// wait for a seat that never comes.
				name := c.Name
				if name == "" {
					name, _ = os.Hostname()
				}
				if name != "" && leaf.Subject.CommonName != name {
					add("cluster.tls.cert_file", "the certificate is for %q, and this node is %q: the cluster seats a node only with a certificate for its name (meridian cluster cert -name %s)",
						leaf.Subject.CommonName, name, name)
				}
			}
		}
		checkFile("cluster.gossip_key_file", cl.GossipKeyFile, func(f string) error { _, err := readGossipKeys(f); return err })
	}
	if !(c.Location.Lat >= -90 && c.Location.Lat <= 90 && c.Location.Lon >= -180 && c.Location.Lon <= 180) { // NaN too
		add("location", "latitude must be within -90..90 and longitude within -180..180")
	}
	if c.TLS.OnDemand.MaxNewPerHour < 0 {
		add("tls.on_demand.max_new_per_hour", "must not be negative (0: the default, %d)", certs.DefaultOnDemandPerHour)
	}
	if c.TLS.OnDemand.Ask != "" {
		if u, err := url.Parse(c.TLS.OnDemand.Ask); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			add("tls.on_demand.ask", "invalid URL %q", c.TLS.OnDemand.Ask)
		}
	}
	for i, ca := range c.TLS.ClientAuth {
		p := fmt.Sprintf("tls.client_auth[%d]", i)
		if len(ca.Hosts) == 0 {
			add(p+".hosts", "missing: name the hosts that ask for client certificates")
		}
		if ca.CAFile == "" {
			add(p+".ca_file", "missing: the CAs that sign client certificates")
		}
		checkFile(p+".ca_file", ca.CAFile, certPool)
	}
	for i, tc := range c.TLS.Certificates {
		if !machine {
			break
		}
		se := certs.CheckStatic(certs.StaticFiles{CertFile: tc.CertFile, KeyFile: tc.KeyFile})
		if se == nil {
			continue
		}
		ses := []*certs.StaticError{se}
		if se.Field == "cert_file" {
			// The check stops at the certificate: say too whether the
			// key can be read, rather than only at the next try.
			if ke := certs.CheckKeyFile(tc.KeyFile); ke != nil {
				ses = append(ses, ke)
			}
		}
		for _, se := range ses {
			if se.Path == "" {
				add(fmt.Sprintf("tls.certificates[%d].%s", i, se.Field), "%v", se.Err)
			} else {
				add(fmt.Sprintf("tls.certificates[%d].%s", i, se.Field), "%s: %v", se.Path, se.Err)
			}
		}
	}
	if len(c.TLS.Certificates) > 0 && c.Listen.HTTPS == "" {
		add("tls.certificates", "certificates need listen.https")
	}
	for i, h := range c.TLS.Hosts {
		if h == "" || strings.ContainsAny(h, " /:") {
			add(fmt.Sprintf("tls.hosts[%d]", i), "invalid host name %q", h)
		}
	}
	if c.Admin.Listen != "off" {
		bind("admin.listen", orDefault(c.Admin.Listen, DefaultAdminAddr))
	}
	checkFile("admin.token_file", c.Admin.TokenFile, func(f string) error { _, err := readTokenFile(f); return err })
	if p := c.AccessLog.Path; p != "" && p != "stdout" && p != "stderr" && (c.AccessLog.Enabled == nil || *c.AccessLog.Enabled) {
		checkFile("access_log.path", p, appendable)
	}
	if c.DataDir != "" && machine {
		if fi, err := os.Stat(c.DataDir); err == nil && !fi.IsDir() {
			add("data_dir", "%s is not a directory", c.DataDir)
		}
	}
	// Two listeners on one port (port 0 picks a free one): the same host,
	// or one of them on all interfaces. HTTPS and gossip also take the
	// UDP port, which nothing else here uses.
	// A host name is compared by the addresses it resolves to
	// (localhost:9901 is 127.0.0.1:9901's port too: an outside check had
	// validate accept what serve could not bind).
	unspecified := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	resolved := map[string][]netip.Addr{}
	addrs := func(h string) []netip.Addr {
		if a, ok := resolved[h]; ok {
			return a
		}
		var a []netip.Addr
		if ip, err := netip.ParseAddr(h); err == nil {
			a = []netip.Addr{ip.Unmap()}
		} else if machine {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			ips, _ := net.DefaultResolver.LookupNetIP(ctx, "ip", h)
			cancel()
			for _, ip := range ips {
				a = append(a, ip.Unmap())
			}
		}
		resolved[h] = a
		return a
	}
	sameHost := func(x, y string) bool {
		if x == y {
			return true
		}
		ax := addrs(x)
		return slices.ContainsFunc(addrs(y), func(a netip.Addr) bool { return slices.Contains(ax, a) })
	}
	for i, a := range binds {
		for _, b := range binds[:i] {
			if a.port == "0" || a.port != b.port {
				continue
			}
			if sameHost(a.host, b.host) || unspecified(a.host) || unspecified(b.host) {
				add(a.path, "port %s is also %s's", a.port, b.path)
			}
		}
	}
	if c.Admin.Token != "" && c.Admin.TokenFile != "" {
		add("admin", "set token or token_file, not both")
	}
	if t := c.Admin.Token; t != "" && (strings.TrimSpace(t) != t || strings.ContainsFunc(t, unicode.IsControl)) {
		// Clients' tokens are compared trimmed, and a header cannot
		// carry a control character: this one could never match.
		add("admin.token", "has leading or trailing spaces or a control character, which no client can send")
	} else if t != "" && len(t) < 16 {
		add("admin.token", "too short: use at least 16 characters")
	}
	for i, p := range c.TrustedProxies {
		if _, err := parsePrefix(p); err != nil {
			add(fmt.Sprintf("trusted_proxies[%d]", i), "%v", err)
		}
	}
	l := c.Limits
	if l.MaxHeaderBytes < 0 || (l.MaxHeaderBytes > 0 && l.MaxHeaderBytes < 1024) {
		add("limits.max_header_bytes", "must be at least 1KiB")
	}
	if l.MaxHeaderCount < 0 {
		add("limits.max_header_count", "must not be negative")
	}
	if l.MaxRequestBody < 0 {
		add("limits.max_request_body", "must not be negative")
	}
	switch l.HeadersWithUnderscores {
	case "", "allow", "drop", "reject":
	default:
		add("limits.headers_with_underscores", "must be allow, drop or reject (got %q)", l.HeadersWithUnderscores)
	}
	for _, f := range []struct {
		path string
		d    time.Duration
	}{{"limits.read_header_timeout", l.ReadHeaderTimeout}, {"limits.idle_timeout", l.IdleTimeout}, {"limits.send_timeout", l.SendTimeout}, {"limits.read_body_timeout", l.ReadBodyTimeout}, {"limits.drain_timeout", l.DrainTimeout}} {
		if f.d < 0 { // in a fixed order, so that errors come the same way each time
			add(f.path, "must not be negative")
		}
	}
	if l.MaxConnections < 0 {
		add("limits.max_connections", "must not be negative")
	}
	if fi := c.AccessLog.FlushInterval; fi != nil && *fi < 0 {
		add("access_log.flush_interval", "must not be negative")
	}
	switch strings.ToLower(c.Log.Level) {
	case "", "debug", "info", "warn", "error":
	default:
		add("log.level", "unknown level %q: use debug, info, warn or error", c.Log.Level)
	}
	if len(es) == 0 {
		return nil
	}
	return es
}

func parsePrefix(s string) (netip.Prefix, error) {
	if p, err := netip.ParsePrefix(s); err == nil {
		return p.Masked(), nil
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	return netip.Prefix{}, fmt.Errorf("invalid network %q: use a CIDR such as 10.0.0.0/8 or an address", s)
}

// DataDir returns the data dir a node with this configuration uses.
func DataDir(c Config) (string, error) {
	c, err := c.withDefaults()
	return c.DataDir, err
}

// withDefaults fills in defaults that need the environment.
func (c Config) withDefaults() (Config, error) {
	if c.Name == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "meridian"
		}
		c.Name = h
	}
	if c.Region == "" {
		c.Region = "local"
	}
	if c.DataDir == "" {
		dir, err := os.UserCacheDir()
		if err != nil {
			return c, fmt.Errorf("no data_dir set and no user cache dir: %w", err)
		}
		c.DataDir = filepath.Join(dir, "meridian")
	}
	if c.Listen.HTTP == "" {
		c.Listen.HTTP = DefaultHTTPAddr
	}
	if c.Admin.Listen == "" {
		c.Admin.Listen = DefaultAdminAddr
	}
	if c.Limits.DrainTimeout == 0 {
		c.Limits.DrainTimeout = DefaultDrainTimeout
	}
	return c, nil
}

// readTokenFile reads an admin token file: its first line, at least 16
// characters.
func readTokenFile(path string) (string, error) {
	b, err := smallfile.Read(path, smallfile.MaxToken)
	if err != nil {
		return "", fmt.Errorf("admin token file: %w", err)
	}
	tok := strings.TrimSpace(strings.SplitN(string(b), "\n", 2)[0])
	if len(tok) < 16 {
		return "", fmt.Errorf("admin token file %s: token too short (at least 16 characters)", path)
	}
	return tok, nil
}

func loadCertPool(path string) (*x509.CertPool, error) {
	b, err := smallfile.Read(path, smallfile.MaxPEM)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("%s holds no PEM certificates", path)
	}
	return pool, nil
}

// appendable reports why serve could not open path to append to it (the
// access log), without creating it: it must be a writable file, or not yet
// exist in a writable directory.
func appendable(path string) error {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return fmt.Errorf("%s is a directory", path)
	case err == nil:
		if err := canAccess(path, false); err != nil {
			return fmt.Errorf("%s cannot be written: %v", path, err)
		}
		return nil
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); err != nil {
		return fmt.Errorf("%s cannot be created: %v", path, err)
	} else if !fi.IsDir() {
		return fmt.Errorf("%s cannot be created: %s is not a directory", path, dir)
	}
	if err := canAccess(dir, true); err != nil {
		return fmt.Errorf("%s cannot be created in %s: %v", path, dir, err)
	}
	return nil
}
