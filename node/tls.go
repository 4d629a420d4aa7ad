package node

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/cluster/certstore"
	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/edge/certs"
	"github.com/meridian-gw/meridian/edge/config"
)

// startTLS creates the certificate manager and binds the HTTPS listener
// (TCP, and UDP for HTTP/3) when listen.https is set.
func (n *Node) startTLS() error {
	if n.cfg.Listen.HTTPS == "" {
		return nil
	}
	opts := certs.Options{
		DataDir:    n.cfg.DataDir,
		Logger:     n.log, // certs names its component itself
		Allowed:    n.hostAllowed,
		Registerer: n.gw.Registerer(),
	}
	if a := n.cfg.TLS.ACME; a != nil {
		opts.ACME = &certs.ACMEOptions{
			Email: a.Email, CA: a.CA, CARootFile: a.CARoot, Challenges: a.Challenges,
			DNSProvider: a.DNSProvider, Profile: a.Profile,
		}
	}
	if n.cluster != nil {
		// Certificates, keys, ACME accounts, challenge tokens and locks live in
		// Raft: one node obtains a certificate, every node serves it, and any
		// node answers a challenge another one presented. (startCluster ran
		// first, in Start.)
		n.certSt = certstore.New(n.cluster.Store, certstore.Options{
			NodeID: n.cfg.Name,
			Logger: n.log,
		})
		opts.Storage = n.certSt
		if opts.ACME != nil {
			opts.ACME.ChallengeWait = 3 * time.Second
		}
	}
	if n.cfg.TLS.OnDemand.Enabled {
		opts.OnDemand = &certs.OnDemandOptions{Enabled: true, Ask: n.cfg.TLS.OnDemand.Ask, MaxNewPerHour: n.cfg.TLS.OnDemand.MaxNewPerHour}
	}
	m, err := certs.New(opts)
	if err != nil {
		if n.certSt != nil {
			n.certSt.Close()
			n.certSt = nil
		}
		return fmt.Errorf("certificates: %w", err)
	}
	n.certs = m
	if err := m.SetStatic(staticFiles(n.cfg.TLS.Certificates)); err != nil {
		m.Close()
		return fmt.Errorf("node.tls.%w", err)
	}
	h3 := n.cfg.TLS.HTTP3.Enabled == nil || *n.cfg.TLS.HTTP3.Enabled
	var clientAuth []edge.ClientAuthPolicy
	for _, ca := range n.cfg.TLS.ClientAuth {
		pool, err := loadCertPool(ca.CAFile)
		if err != nil {
			m.Close()
			return fmt.Errorf("tls.client_auth: %w", err)
		}
		clientAuth = append(clientAuth, edge.ClientAuthPolicy{Hosts: ca.Hosts, CAs: pool, Required: ca.Required == nil || *ca.Required})
	}
	lo := edge.TLSListenerOptions{
		ClientAuth:      clientAuth,
		ListenerOptions: n.listenerOptions(n.cfg.Listen.HTTPS),
		TLSConfig:       m.TLSConfig(),
		HTTP3:           h3,
		Allow0RTT:       n.cfg.TLS.HTTP3.Allow0RTT,
	}
	if n.cluster != nil {
		// QUIC keys are fixed when the listener starts: shared ones need
		// the cluster's master secret, known once the cluster has formed
		// (on every later start). Until then this node uses its own.
		if master, ok := n.clusterMaster(); ok {
			lo.StatelessResetKey, lo.TokenKey = quicKeys(master)
		} else {
			n.log.Info("cluster secrets not available yet: QUIC reset and token keys are this node's own until its next start")
		}
	}
	srv, err := n.gw.ListenTLS(lo)
	if err != nil {
		m.Close()
		n.certs = nil
		return fmt.Errorf("listen %s: %w", n.cfg.Listen.HTTPS, err)
	}
	n.tlsSrv = srv
	if n.cluster != nil {
		n.wg.Add(1)
		go n.syncTicketKeys()
	}
	n.manageHosts(n.gw.Current().Doc)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		if err := srv.Serve(); err != nil {
			n.log.Error("HTTPS server stopped", "err", err)
		}
	}()
	return nil
}

func (n *Node) listenerOptions(addr string) edge.ListenerOptions {
	return edge.ListenerOptions{
		Addr:              addr,
		MaxHeaderBytes:    int(n.cfg.Limits.MaxHeaderBytes),
		ReadHeaderTimeout: n.cfg.Limits.ReadHeaderTimeout,
		IdleTimeout:       n.cfg.Limits.IdleTimeout,
		SendTimeout:       n.cfg.Limits.SendTimeout,
		MaxConnections:    n.cfg.Limits.MaxConnections,
	}
}

// staticFiles are the files of tls.certificates.
func staticFiles(cs []Certificate) []certs.StaticFiles {
	var fs []certs.StaticFiles
	for _, c := range cs {
		fs = append(fs, certs.StaticFiles{CertFile: c.CertFile, KeyFile: c.KeyFile})
	}
	return fs
}

// useCertificates serves a reloaded file's tls.certificates (SIGHUP), its
// document applied: entries added, removed or renewed are served from the
// next handshake.
func (n *Node) useCertificates(set *certs.StaticSet, cs []Certificate) {
	n.certs.UseStatic(set)
	n.cfg.TLS.Certificates = cs
	// Names a removed certificate held go back to ACME (or the local CA),
	// and those an added one holds leave it, even if the document stays
	// the same.
	if cur := n.gw.Current(); cur != nil {
		n.manageHosts(cur.Doc)
	}
}

// plainHandler is the plain HTTP listener's handler: with HTTPS on, it
// answers ACME HTTP-01 challenges and redirects to HTTPS; without, it is
// the gateway.
func (n *Node) plainHandler() http.Handler {
	if n.tlsSrv == nil {
		return nil
	}
	port := n.tlsSrv.Addr().(*net.TCPAddr).Port
	return n.certs.HTTPChallengeHandler(n.gw.RedirectHandler(port))
}

// manageHosts hands the certificate manager the names the document's
// routes serve plus the configured extra hosts.
func (n *Node) manageHosts(doc *config.Document) {
	if n.certs == nil || doc == nil {
		return
	}
	seen := map[string]bool{}
	var hosts []string
	add := func(h string) {
		if h != "" && !seen[h] {
			seen[h] = true
			hosts = append(hosts, h)
		}
	}
	for _, r := range doc.Routes {
		for _, h := range r.Match.Hosts {
			add(h)
		}
	}
	for _, h := range n.cfg.TLS.Hosts {
		add(strings.ToLower(h))
	}
	if err := n.certs.ManageHosts(context.Background(), hosts); err != nil {
		n.log.Warn("some hosts cannot get certificates", "err", err)
	}
}

// hostAllowed reports whether a TLS server name may get a certificate: a
// route of the current document names it (exactly or by wildcard), or the
// node's tls.hosts lists it.
func (n *Node) hostAllowed(name string) bool {
	name = strings.TrimSuffix(strings.ToLower(name), ".")
	if !dnsName(name) {
		// Not a name a route can serve (the router answers its Host
		// with 400): no certificate, and no order to a CA for it.
		return false
	}
	for _, h := range n.cfg.TLS.Hosts {
		if strings.EqualFold(h, name) {
			return true
		}
	}
	s := n.gw.Current()
	if s == nil {
		return false
	}
	for _, r := range s.Doc.Routes {
		for _, h := range r.Match.Hosts {
			if h == name {
				return true
			}
			if suffix, ok := strings.CutPrefix(h, "*"); ok && strings.HasSuffix(name, suffix) && len(name) > len(suffix) {
				return true
			}
		}
	}
	return false
}

// dnsName reports whether name (lower case) is a host name a certificate
// may be made for: labels of letters, digits and inner hyphens, none
// empty, at most 63 bytes each and 253 in all.
func dnsName(name string) bool { return certs.ValidHostName(name) }

// HTTPSAddr is the bound HTTPS address, or "" without HTTPS.
func (n *Node) HTTPSAddr() string {
	if n.tlsSrv == nil {
		return ""
	}
	return n.tlsSrv.Addr().String()
}

// RootPEM is the local CA's root certificate, or nil (ACME or no HTTPS).
func (n *Node) RootPEM() []byte {
	if n.certs == nil {
		return nil
	}
	return n.certs.RootPEM()
}
