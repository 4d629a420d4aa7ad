package node

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/meridian-gw/meridian/cluster"
	"github.com/meridian-gw/meridian/cluster/gossip"
	"github.com/meridian-gw/meridian/cluster/pki"
	"github.com/meridian-gw/meridian/cluster/store"
	"github.com/meridian-gw/meridian/edge"
	"github.com/meridian-gw/meridian/edge/config"
	"github.com/meridian-gw/meridian/internal/atomicfile"
	"github.com/meridian-gw/meridian/internal/smallfile"
)

// startCluster joins the cluster. Documents committed in Raft reach
// onClusterDoc, which compiles and installs them in order.
func (n *Node) startCluster() error {
	cl := n.cfg.Cluster
	cfg := cluster.Config{
		Name: n.cfg.Name, Region: n.cfg.Region, Lat: n.cfg.Location.Lat, Lon: n.cfg.Location.Lon,
		DataDir: n.cfg.DataDir, Bind: cl.Bind, Advertise: cl.Advertise,
		GossipBind: cl.GossipBind, GossipAdvertise: cl.GossipAdvertise, Join: cl.Join,
		BootstrapExpect: cl.BootstrapExpect, Bootstrap: cl.Bootstrap,
		Voter:         cl.Voter == nil || *cl.Voter,
		RemoveOnLeave: cl.RemoveOnLeave,
		Logger:        n.log,
	}
	if n.opts.ClusterTuning != nil {
		n.opts.ClusterTuning(&cfg)
	}
	if cl.TLS.CAFile != "" {
		tc, err := pki.LoadMutualTLS(cl.TLS.CAFile, cl.TLS.CertFile, cl.TLS.KeyFile)
		if err != nil {
			return fmt.Errorf("cluster TLS: %w", err)
		}
		cfg.TLS = tc
	}
	if cl.GossipKeyFile != "" {
		keys, err := readGossipKeys(cl.GossipKeyFile)
		if err != nil {
			return err
		}
		cfg.GossipKeys = keys
	}
	c, err := cluster.Start(cfg, n.onClusterDoc)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	n.cluster = c
	n.gw.Registerer().Register(clusterCollector{c})
	return nil
}

// announce publishes the bound addresses in gossip once listeners exist.
func (n *Node) announce() {
	if n.cluster == nil {
		return
	}
	if err := n.cluster.Members.UpdateMeta(func(m *gossip.Meta) {
		m.HTTPAddr = n.ProxyAddr()
		m.HTTPSAddr = n.HTTPSAddr()
		m.AdminAddr = n.AdminAddr()
	}); err != nil {
		n.log.Error("cannot announce this node's addresses in gossip", "err", err)
	}
}

func readGossipKeys(path string) ([][]byte, error) {
	b, err := smallfile.Read(path, smallfile.MaxToken)
	if err != nil {
		return nil, fmt.Errorf("gossip key file: %w", err)
	}
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(b))
	for line := 1; sc.Scan(); line++ {
		t := strings.TrimSpace(sc.Text())
		if t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(t)
		if err != nil || (len(k) != 16 && len(k) != 24 && len(k) != 32) {
			return nil, fmt.Errorf("gossip key file %s line %d: want a base64 AES key of 16, 24 or 32 bytes", path, line)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("gossip key file %s holds no key", path)
	}
	return keys, sc.Err()
}

// onClusterDoc installs a committed document and returns the version the
// node serves after it. Raft delivers documents in order; one older than
// what is served (a replay at start) is skipped, so a node never goes back
// to an older version.
//
// A document this node cannot install (a file it names missing or bad
// here) leaves it on what it serves, said in its log and in the version
// gossip publishes for it. At start, when what it serves is its file's
// (a restart restores only the latest document from its Raft snapshot),
// it falls back to the newest cluster document it installed that still
// installs (it keeps the last two in its data dir, clusterInstalledFile),
// rather than serve a document the cluster replaced long ago.
func (n *Node) onClusterDoc(d store.Document) uint64 {
	n.applyMu.Lock()
	defer n.applyMu.Unlock()
	cur := n.gw.Current()
	if cur != nil && cur.Version >= d.Version && cur.Version != 0 {
		return cur.Version
	}
	doc, snap, err := n.compileCluster(d.Raw, d.Version, cur)
	if err != nil {
		// Validated by the node that proposed it, so this is local (a
		// file named in the document missing here, say). Keep serving
		// what we have and say so loudly.
		n.gw.RecordRejected()
		n.log.Error("committed configuration cannot be installed on this node; still serving the previous one",
			"version", d.Version, "err", err)
		if cur == nil || cur.Version == 0 {
			n.installLastClusterDoc(d.Version, cur)
		}
		if s := n.gw.Current(); s != nil {
			return s.Version
		}
		return 0
	}
	n.installCluster(doc, snap, d.Raw, "cluster")
	return d.Version
}

// clusterInstalledFile is the last cluster document a node installed (in
// its data dir): its version on the first line, then the document; the one
// installed before it is kept beside it (".prev"), for a node whose last
// one no longer installs (a file it names broken since).
const clusterInstalledFile = "cluster-installed"

func (n *Node) compileCluster(raw []byte, version uint64, cur *edge.Snapshot) (*config.Document, *edge.Snapshot, error) {
	doc, err := config.Parse(raw)
	if err != nil {
		return nil, nil, err
	}
	snap, err := n.compile(doc, raw, version, cur)
	return doc, snap, err
}

// installCluster serves a compiled cluster document and keeps it as the
// last installed.
func (n *Node) installCluster(doc *config.Document, snap *edge.Snapshot, raw []byte, source string) {
	n.gw.Swap(snap)
	n.manageHosts(doc)
	releaseMemoryAfterLargeDocument(raw)
	last := n.statePath(clusterInstalledFile)
	if v, _, ok := readInstalled(last); ok && v < snap.Version {
		os.Rename(last, last+".prev")
	}
	b := append(strconv.AppendUint(nil, snap.Version, 10), '\n')
	if err := atomicfile.Write(last, append(b, raw...), 0o600); err != nil {
		n.log.Warn("cannot keep the installed cluster document in the data dir", "err", err)
	}
	n.log.Info("configuration applied", "version", snap.Version, "hash", shortHash(snap.Hash), "source", source, "routes", len(doc.Routes))
}

// readInstalled reads a document kept by installCluster.
func readInstalled(path string) (version uint64, raw []byte, ok bool) {
	b, err := smallfile.Read(path, MaxFileBytes+64) // a version line, then the document
	if err != nil {
		return 0, nil, false
	}
	line, raw, found := bytes.Cut(b, []byte("\n"))
	v, err := strconv.ParseUint(string(line), 10, 64)
	if !found || err != nil || v == 0 {
		return 0, nil, false
	}
	return v, raw, true
}

// serveKeptClusterDoc serves, unversioned (0), the newest cluster document
// this node installed and kept that still installs, for a node that starts
// without one from Raft (its log lost, its state set aside), so that it
// serves what it served, not its file's, until the cluster's log brings it
// a version. Unversioned, so that any version the cluster then delivers
// is installed (after a loss of every node's log, the cluster's versions
// start again at 1, from this document: see seedCluster). It returns the
// document served, if one was.
func (n *Node) serveKeptClusterDoc() (*config.Document, []byte, bool) {
	last := n.statePath(clusterInstalledFile)
	for _, path := range []string{last, last + ".prev"} {
		v, raw, ok := readInstalled(path)
		if !ok {
			continue
		}
		doc, snap, err := n.compileCluster(raw, 0, nil)
		if err != nil {
			n.log.Warn("a cluster configuration this node installed before cannot be installed now", "version", v, "err", err)
			continue
		}
		n.gw.Swap(snap)
		n.manageHosts(doc)
		n.log.Info("serving the cluster configuration this node installed last, unversioned, until the cluster's log brings one", "installed_version", v, "hash", shortHash(snap.Hash))
		return doc, raw, true
	}
	return nil, nil, false
}

// installLastClusterDoc installs the newest of the cluster documents this
// node kept that is not newer than version (the one that failed) and
// installs still.
func (n *Node) installLastClusterDoc(version uint64, cur *edge.Snapshot) {
	last := n.statePath(clusterInstalledFile)
	for _, path := range []string{last, last + ".prev"} {
		v, raw, ok := readInstalled(path)
		if !ok {
			if _, err := os.Stat(path); err == nil {
				n.log.Warn("a cluster configuration this node kept is unreadable", "path", path)
			}
			continue
		}
		if v > version {
			continue
		}
		doc, snap, err := n.compileCluster(raw, v, cur)
		if err != nil {
			n.log.Warn("a cluster configuration this node installed before cannot be installed either", "version", v, "err", err)
			continue
		}
		n.log.Warn("serving an earlier cluster configuration this node installed until a newer one installs", "version", v, "failed_version", version)
		n.installCluster(doc, snap, raw, "cluster (installed before)")
		return
	}
	n.log.Warn("no cluster configuration this node kept installs: serving its file's until a newer one installs", "failed_version", version)
}

func shortHash(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}

// applyCluster proposes a document to the cluster and returns once this
// node serves it.
func (n *Node) applyCluster(ctx context.Context, doc *config.Document, raw []byte, ifVersion uint64) (*edge.Snapshot, error) {
	// Validate as the cluster would install it, before proposing: a
	// committed document cannot be taken back.
	if _, err := n.compile(doc, raw, 0, nil); err != nil {
		n.gw.RecordRejected()
		return nil, config.WithLines(raw, err, "")
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
	}
	// Without a leader (the minority side of a partition, or no quorum)
	// say so after an election's worth of waiting rather than at the
	// deadline.
	if err := n.waitForLeader(ctx, 3*time.Second); err != nil {
		return nil, err
	}
	actx, stopWatch := n.cancelWithoutLeader(ctx, 3*time.Second)
	a, err := n.cluster.Apply(actx, raw, doc.Hash(), ifVersion)
	stopWatch()
	committed := func() *edge.Snapshot {
		return &edge.Snapshot{Version: a.Version, Hash: a.Hash, Raw: raw, Doc: doc}
	}
	switch {
	case errors.Is(err, store.ErrVersionConflict):
		return nil, fmt.Errorf("%w: %v", edge.ErrVersionConflict, err)
	case errors.Is(err, store.ErrNotApplied):
		return committed(), fmt.Errorf("%w: version %d is committed (it stands: do not send it again) and this node will serve it once it has caught up (%v)", edge.ErrNotServedYet, a.Version, err)
	case errors.Is(err, store.ErrUnknownOutcome):
		return nil, fmt.Errorf("%w: the cluster's leadership changed as the write was being committed, and it may yet be applied (%v)", edge.ErrOutcomeUnknown, err)
	case err != nil:
		return nil, fmt.Errorf("%w: %v", edge.ErrUnavailable, err)
	}
	s := n.gw.Current()
	if s == nil || s.Version < a.Version {
		return committed(), fmt.Errorf("%w: version %d is committed (it stands: do not send it again) but this node has not installed it (see its log)", edge.ErrNotServedYet, a.Version)
	}
	if s.Version != a.Version {
		// Another write landed after this one: the answer is this
		// write's version and document, not the one served now (an
		// outside check saw concurrent writers told each other's).
		return &edge.Snapshot{Version: a.Version, Hash: a.Hash, Raw: raw, Doc: doc, AppliedAt: time.Now()}, nil
	}
	return s, nil
}

// seedCluster proposes doc (the file's, or the cluster document this node
// installed last when it lost its Raft log) when the cluster has none yet,
// from whichever node leads first.
func (n *Node) seedCluster(doc *config.Document, raw []byte) {
	defer n.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.stopping:
			return
		case <-t.C:
		}
		if n.cluster.Store.Current().Version > 0 {
			return
		}
		if n.cluster.Store.State() != "Leader" {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		// Only if the cluster still has none when the entry is applied:
		// a document a client applied meanwhile is not replaced.
		_, err := n.cluster.Apply(ctx, raw, doc.Hash(), store.NoDocument)
		cancel()
		if err == nil {
			n.log.Info("seeded the cluster with this node's gateway document")
			return
		}
		if errors.Is(err, store.ErrVersionConflict) {
			return // another document came first
		}
		n.log.Warn("seeding the cluster failed; retrying", "err", err)
	}
}

// RemoveMember takes a gone member's Raft seat away (the admin API's
// DELETE /cluster/members/{name}).
func (n *Node) RemoveMember(name string) error {
	err := n.cluster.RemoveMember(name)
	switch {
	case errors.Is(err, cluster.ErrMemberNotFound):
		return fmt.Errorf("%w: %v", edge.ErrNoSuchMember, err)
	case errors.Is(err, cluster.ErrMemberRefused):
		return fmt.Errorf("%w: %v", edge.ErrRefused, err)
	}
	return err
}

// ClusterStatus lists the cluster's members for the admin API (nil when
// the node runs alone).
func (n *Node) ClusterStatus() any {
	if n.cluster == nil {
		return nil
	}
	return n.cluster.Status()
}

// waitForLeader returns at once if this node knows a cluster leader, or
// waits up to d for one to be elected.
func (n *Node) waitForLeader(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		if id, _ := n.cluster.Store.Leader(); id != "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: no cluster leader reachable (no quorum?); the running configuration is unchanged", edge.ErrUnavailable)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w: %v", edge.ErrUnavailable, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// cancelWithoutLeader derives a context that is cancelled once this node
// has known no leader for d (the leader it forwarded to was cut off and no
// new one is elected on this side), so a write on the minority side of a
// partition is refused after an election timeout, not at its deadline.
func (n *Node) cancelWithoutLeader(ctx context.Context, d time.Duration) (context.Context, func()) {
	ctx, cancelCause := context.WithCancelCause(ctx)
	cancel := func() { cancelCause(nil) }
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var since time.Time
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case now := <-t.C:
				if id, _ := n.cluster.Store.Leader(); id != "" {
					since = time.Time{}
				} else if since.IsZero() {
					since = now
				} else if now.Sub(since) > d {
					cancelCause(fmt.Errorf("no leader known for %s", d))
					return
				}
			}
		}
	}()
	return ctx, func() { close(done); cancel() }
}
