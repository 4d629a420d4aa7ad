// Package cluster joins a node to the Meridian cluster: the gateway
// document in Raft (cluster/store) and membership, metadata and health by
// gossip (cluster/gossip). It bootstraps Raft when enough voters have met
// by gossip, keeps the Raft configuration in step with the gossip member
// list (the leader adds members that joined and removes those that left),
// and publishes each node's applied config version in its gossip metadata.
//
// The other planes use Members (membership, events, broadcasts, direct
// messages) through small interfaces of their own.
package cluster

import (
	"context"
	crand "crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meridian-gw/meridian/cluster/gossip"
	"github.com/meridian-gw/meridian/cluster/store"
)

// Config configures a cluster member. Name, DataDir, Bind and GossipBind are
// required.
type Config struct {
	Name     string
	Region   string
	Lat, Lon float64
	DataDir  string
	// Bind is the cluster TCP address (Raft and write forwarding, mutual
	// TLS); Advertise is what peers dial (default Bind).
	Bind, Advertise string
	// GossipBind is the gossip TCP+UDP address; GossipAdvertise what peers
	// dial (default GossipBind).
	GossipBind, GossipAdvertise string
	// Join lists gossip addresses of existing members to join through.
	Join []string
	// BootstrapExpect: Raft is bootstrapped once this many voters have met
	// by gossip (as Consul's bootstrap_expect). Bootstrap: this node alone
	// forms the cluster (the explicit first node). At most one of them.
	BootstrapExpect int
	Bootstrap       bool
	// Voter: this node votes in Raft. Non-voters hold the full config but
	// do not count for quorum.
	Voter bool
	// RemoveOnLeave: a voter that leaves gives up its Raft seat (Leave
	// removes it; the leader does, if that failed). Otherwise it keeps it.
	RemoveOnLeave bool
	// TLS is mutual TLS for Raft and forwarding (cluster/pki).
	TLS *tls.Config
	// GossipKeys encrypt gossip; GossipKeys[0] is the primary.
	GossipKeys [][]byte
	// Addresses advertised in gossip metadata.
	HTTPAddr, HTTPSAddr, AdminAddr string
	Logger                         *slog.Logger
	// Store and Gossip timing, for tests; zero values take the defaults.
	StoreTuning  func(*store.Config)
	GossipTuning gossip.Tuning
}

// Cluster is this node's membership in the cluster.
type Cluster struct {
	cfg     Config
	log     *slog.Logger
	Store   *store.Store
	Members *gossip.Members

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	// unreachable holds, by member name, a member's cluster address that
	// failed the probe and until when it is not probed again (manageLoop
	// only).
	unreachable  map[string]probeFailure
	seatsRefused atomic.Int64
	// firstJoin is closed once the first join attempt is over (at once
	// without seeds): bootstrap: true waits for it, to see whether the
	// seeds already form a cluster.
	firstJoin     chan struct{}
	firstJoinOnce sync.Once
	// nameConflictLogged: tryBootstrap said why it does not (manageLoop
	// only).
	nameConflictLogged   bool
	waitSeatLogged       bool              // the wait for a seat in a cluster that exists was logged
	noAnswerLogged       time.Time         // a member that did not answer the state question was last logged
	saidNoState          map[string]bool   // members that answered they have no Raft state (or cannot tell)
	beyondExpectLogged   bool              // the wait of a node beyond bootstrap_expect was logged
	suffrageWaitLogged   map[string]string // why a member's seat waits to follow its voter setting, as last logged
	expectWaitLogged     string            // the voters seen when the wait for bootstrap_expect was last logged
	bootstrapDeferLogged bool              // a bootstrap: true node deferring to another was logged
	// Lines about members whose probe failed: probeLogged since
	// probeLogSince, probeHeld not logged (see reachable).
	probeLogSince time.Time
	probeLogged   int
	probeHeld     int
}

// SeatsRefused returns how many times this node, leading, refused a member
// a Raft seat because its probe failed.
func (c *Cluster) SeatsRefused() int64 { return c.seatsRefused.Load() }

// probeFailure is a member's cluster address that failed the probe.
type probeFailure struct {
	addr  string
	until time.Time
}

// probeRetry is how long a member whose probe failed waits for the next.
const probeRetry = 30 * time.Second

// Start opens the Raft store, starts gossip, joins the seeds (retrying in
// the background) and starts bootstrap and reconciliation. onDoc is called
// in order with every document this node applies, including the one
// restored from its own log at start; it returns the version the node
// serves after it (the document's, or an older one if the node could not
// install it), which gossip publishes.
func Start(cfg Config, onDoc func(store.Document) uint64) (*Cluster, error) {
	if cfg.Bootstrap && cfg.BootstrapExpect > 0 {
		return nil, errors.New("cluster: set bootstrap or bootstrap_expect, not both")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	scfg := store.Config{ID: cfg.Name, BindAddr: cfg.Bind, AdvertiseAddr: cfg.Advertise, DataDir: cfg.DataDir, TLS: cfg.TLS, Logger: log.With("component", "raft")}
	if cfg.StoreTuning != nil {
		cfg.StoreTuning(&scfg)
	}
	// Before the store has the cluster's id, the one gossip took from
	// the seeds (a new node): Raft is taken from that cluster only.
	var members atomic.Pointer[gossip.Members]
	scfg.ClusterID = func() string {
		if m := members.Load(); m != nil {
			if id := m.ClusterID(); id != "" {
				return id
			}
			return m.TentativeID()
		}
		return ""
	}
	scfg.PeerKnown = func(name string) bool {
		m := members.Load()
		if m == nil {
			return false
		}
		mb, ok := m.Member(name)
		id := m.ClusterID()
		return ok && (mb.State == gossip.StateAlive || mb.State == gossip.StateSuspect) &&
			(mb.ClusterID == "" || id == "" || mb.ClusterID == id)
	}
	st, err := store.Open(scfg)
	if err != nil {
		return nil, err
	}
	c := &Cluster{cfg: cfg, log: log, Store: st, firstJoin: make(chan struct{})}
	c.ctx, c.cancel = context.WithCancel(context.Background())

	host, port, err := splitHostPort(cfg.GossipBind)
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("cluster: gossip address: %w", err)
	}
	gc := gossip.Config{
		BindAddr: host, BindPort: port, Keys: cfg.GossipKeys, Logger: log, Tuning: cfg.GossipTuning,
		Context: c.ctx, // Close ends a join's dials to seeds that do not answer (its loop waits on them)
		Meta: gossip.Meta{
			Name: cfg.Name, Region: cfg.Region, Lat: cfg.Lat, Lon: cfg.Lon,
			HTTPAddr: cfg.HTTPAddr, HTTPSAddr: cfg.HTTPSAddr, AdminAddr: cfg.AdminAddr, ClusterAddr: st.Addr(),
			Voter: cfg.Voter, GivesUpSeat: cfg.RemoveOnLeave, Bootstrap: cfg.Bootstrap,
		},
	}
	if cfg.GossipAdvertise != "" {
		if gc.AdvertiseAddr, gc.AdvertisePort, err = splitHostPort(cfg.GossipAdvertise); err != nil {
			st.Close()
			return nil, fmt.Errorf("cluster: gossip advertise address: %w", err)
		}
	}
	m, err := gossip.Start(gc)
	if err != nil {
		st.Close()
		return nil, err
	}
	c.Members = m
	members.Store(m)

	// Documents: hand them to the node and publish the version it serves
	// (not the document's: a node that cannot install one says so).
	st.Subscribe(func(d store.Document) {
		served := onDoc(d)
		m.UpdateMeta(func(meta *gossip.Meta) { meta.ConfigVersion = served })
	})
	if cur := st.Current(); cur.Version > 0 {
		served := onDoc(store.Document{Version: cur.Version, Hash: cur.Hash, Raw: cur.Raw})
		m.UpdateMeta(func(meta *gossip.Meta) { meta.ConfigVersion = served })
	}

	c.wg.Add(3)
	go c.joinLoop()
	go c.manageLoop()
	go c.idLoop()
	return c, nil
}

// idKey is where the cluster's id is kept in Raft.
const idKey = store.ClusterIDKey

// idLoop publishes the cluster's id in gossip once this node knows it:
// from its Raft state, or made by the first leader (create-only, so one
// id per history). Gossip then refuses members that hold another
// cluster's history (gossip.Members.ClusterID).
func (c *Cluster) idLoop() {
	defer c.wg.Done()
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		if id := c.learnID(); id != "" {
			if err := c.Members.UpdateMeta(func(m *gossip.Meta) { m.ClusterID = id }); err != nil {
				c.log.Warn("cannot publish the cluster id in gossip", "err", err)
			}
			return
		}
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// learnID returns the cluster's id, making it if this node leads a
// cluster that has none; "" while it is not known.
func (c *Cluster) learnID() string {
	if e, ok := c.Store.KVGet(idKey); ok && len(e.Value) > 0 {
		return string(e.Value)
	}
	if c.Store.State() != "Leader" {
		return ""
	}
	b := make([]byte, 16)
	crand.Read(b)
	id := hex.EncodeToString(b)
	ctx, cancel := context.WithTimeout(c.ctx, 5*time.Second)
	defer cancel()
	if _, err := c.Store.KVPutCAS(ctx, idKey, []byte(id), 0); err != nil {
		return "" // another leader made one first, or no quorum: read next time
	}
	return id
}

func splitHostPort(addr string) (string, int, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		return "", 0, fmt.Errorf("invalid port %q", p)
	}
	return h, n, nil
}

// reconnectInterval is how often members declared dead (not left) are
// contacted again.
const reconnectInterval = 5 * time.Second

// joinLoop joins the seeds, retrying with backoff until one answers, then
// keeps reconnecting to members declared dead.
func (c *Cluster) joinLoop() {
	defer c.wg.Done()
	joinTried := func() { c.firstJoinOnce.Do(func() { close(c.firstJoin) }) }
	defer joinTried()
	// This node's own address among the seeds (one list given to every
	// node) is no one to join: memberlist counts reaching itself as a
	// contact, and the node said it joined the cluster while cut off
	// from every other.
	seeds := slices.DeleteFunc(slices.Clone(c.cfg.Join), func(a string) bool {
		return a == c.Members.Addr() || a == c.cfg.GossipBind || a == c.cfg.GossipAdvertise
	})
	if len(seeds) == 0 {
		joinTried()
		c.reconnectLoop()
		return
	}
	wait := 200 * time.Millisecond
	for {
		via, n, err := c.Members.JoinVia(seeds)
		joinTried()
		if c.ctx.Err() != nil {
			return // closing: the join was cut short
		}
		if err == nil && n > 0 {
			c.log.Info("joined the cluster", "via", via, "seeds", seeds)
			c.reconnectLoop()
			return
		}
		attrs := []any{"seeds", seeds, "err", err, "retry_in", wait.String()}
		if err != nil && (strings.Contains(err.Error(), "EOF") || strings.Contains(err.Error(), "connection reset")) {
			// What a node's cluster (Raft) port answers to gossip: an
			// outside check named it in join and got only "EOF".
			attrs = append(attrs, "hint", "a seed closed the connection without a gossip answer: join lists gossip addresses (a node's cluster.gossip_bind), not its cluster.bind port")
		}
		c.log.Warn("cannot join yet; retrying", attrs...)
		select {
		case <-c.ctx.Done():
			return
		case <-time.After(wait):
		}
		if wait < 10*time.Second {
			wait *= 2
		}
	}
}

// reconnectLoop heals gossip after a partition. Memberlist neither probes
// nor push/pulls with members it declared dead, so once both sides of a
// partition have declared each other dead they would stay apart after the
// network returns (Raft heals on its own; membership, metadata and health
// would not). As Serf does, it periodically joins (push/pull with) a few
// dead members; merging states makes each side refute its own death.
// Members that left gracefully are not contacted.
func (c *Cluster) reconnectLoop() {
	t := time.NewTicker(reconnectInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		var dead []string
		for _, mb := range c.Members.Members() {
			if mb.State == gossip.StateDead && !mb.Local && mb.Addr != "" {
				dead = append(dead, mb.Addr)
			}
		}
		if len(dead) == 0 {
			continue
		}
		rand.Shuffle(len(dead), func(i, j int) { dead[i], dead[j] = dead[j], dead[i] })
		dead = dead[:min(len(dead), 3)]
		if n, err := c.Members.Join(dead); n > 0 {
			c.log.Info("reconnected to members declared dead", "addrs", dead, "contacted", n)
		} else {
			c.log.Debug("members declared dead still unreachable", "addrs", dead, "err", err)
		}
	}
}

// manageLoop bootstraps Raft when the expected voters have met, and, while
// this node leads, reconciles the Raft configuration with gossip.
func (c *Cluster) manageLoop() {
	defer c.wg.Done()
	events, stop := c.Members.Subscribe(64)
	defer stop()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	bootstrapped := false
	for {
		if !bootstrapped {
			select {
			case <-c.firstJoin:
				bootstrapped = c.tryBootstrap()
			default:
			}
		}
		c.reconcile()
		select {
		case <-c.ctx.Done():
			return
		case ev := <-events:
			if ev.Kind == gossip.EventJoin {
				// Back, perhaps with its certificate fixed: probed
				// again at once.
				delete(c.unreachable, ev.Member.Name)
			}
		case <-tick.C:
		}
	}
}

// NameConflict reports whether this node stays out of the cluster because
// another node is alive under its name and this one holds no Raft state
// (the newcomer: the one that was there first has a log and a seat).
func (c *Cluster) NameConflict() bool {
	return c.Members.NameTaken() != "" && !c.Store.HasState()
}

// tryBootstrap bootstraps Raft once the configured voters are known. Every
// node that sees the same voters calls BootstrapCluster with the same
// configuration, which Raft allows; one that already has state does
// nothing.
func (c *Cluster) tryBootstrap() bool {
	if c.NameConflict() {
		if !c.nameConflictLogged {
			c.nameConflictLogged = true
			c.log.Error("another node is alive under this node's name and this one is new: it stays out of Raft and is not ready; give it a unique node.name",
				"other", c.Members.NameTaken())
		}
		return false
	}
	switch {
	case c.cfg.Bootstrap:
		// A node whose seeds already serve a cluster's document joins
		// that cluster: bootstrapping a second one would fork the
		// history (two version 2s with different documents; an outside
		// check saw versions offset for good) once the two met. Copying
		// the first node's configuration, bootstrap: true included, to
		// the next is an easy slip.
		if c.Store.HasState() {
			return true // its own cluster's, or the one it joined: nothing to bootstrap
		}
		members := c.Members.Members()
		first := ""
		for _, mb := range members {
			if mb.Name == c.cfg.Name || mb.State != gossip.StateAlive {
				continue
			}
			if mb.ConfigVersion > 0 {
				c.log.Warn("bootstrap: true, but the cluster already exists: joining it instead (remove bootstrap: true from this node's configuration)",
					"member", mb.Name, "config_version", mb.ConfigVersion)
				return true
			}
			if mb.Bootstrap && mb.Name < c.cfg.Name && (first == "" || mb.Name < first) {
				first = mb.Name
			}
		}
		// Several nodes with bootstrap: true that meet (a file copied
		// with it, an easy slip: an outside check forked three such
		// nodes into three clusters, each ready): the first by name
		// bootstraps, the others wait for its leader to seat them.
		if first != "" {
			if !c.bootstrapDeferLogged {
				c.bootstrapDeferLogged = true
				c.log.Warn("bootstrap: true is set on several nodes: this node forms no cluster of its own, and waits to be seated in the one they form (set bootstrap: true on one node only)",
					"also_set_on", first)
			}
			return false
		}
		// One that bootstrapped before this node saw it holds Raft
		// state: this node is seated by its leader, not a second
		// cluster's first voter.
		if c.peerMayHaveState(members, c.Store.PeerHasState, c.Store.HasState) {
			return false
		}
		err := c.Store.BootstrapCluster([]store.Server{{ID: c.cfg.Name, Addr: c.Store.Addr(), Voter: true}})
		if err != nil {
			c.log.Error("bootstrap failed", "err", err)
			return false
		}
		return true
	case c.cfg.BootstrapExpect > 0:
		if c.Store.HasState() {
			return true // restarted, or joined: nothing to bootstrap (nor to log)
		}
		var voters []store.Server
		for _, mb := range c.Members.Members() {
			// The first voters are probed as later members are
			// (reachable): a seat in the first configuration that the
			// others cannot reach counts against the quorum as well.
			if mb.State == gossip.StateAlive && mb.Voter && mb.ClusterAddr != "" && (mb.Name == c.cfg.Name || c.reachable(mb)) {
				voters = append(voters, store.Server{ID: mb.Name, Addr: mb.ClusterAddr, Voter: true})
			}
		}
		if len(voters) < c.cfg.BootstrapExpect {
			// Said when the voters seen change (an outside check found
			// two nodes of three waiting with nothing in their logs).
			seen := make([]string, len(voters))
			for i, v := range voters {
				seen[i] = v.ID
			}
			slices.Sort(seen)
			if key := strings.Join(seen, ","); key != c.expectWaitLogged && len(seen) > 0 {
				c.expectWaitLogged = key
				c.log.Info("bootstrap_expect: waiting for more voters before forming the cluster",
					"expect", c.cfg.BootstrapExpect, "seen", seen)
			}
			return false
		}
		slices.SortFunc(voters, func(a, b store.Server) int {
			if a.ID < b.ID {
				return -1
			}
			if a.ID > b.ID {
				return 1
			}
			return 0
		})
		voters = voters[:c.cfg.BootstrapExpect]
		if !slices.ContainsFunc(voters, func(v store.Server) bool { return v.ID == c.cfg.Name }) {
			// More voters than expected met, and this one is not among
			// the first (by name): those bootstrap, and their leader
			// seats it.
			// The probes above take time: the leader may have
			// seated this node meanwhile (an outside check saw this
			// line 0.6-0.9 s after the seat, on every late node).
			if c.Store.HasState() {
				return true
			}
			if !c.beyondExpectLogged {
				c.beyondExpectLogged = true
				first := make([]string, len(voters))
				for i, v := range voters {
					first[i] = v.ID
				}
				if !c.cfg.Voter {
					c.log.Info("bootstrap_expect: this node is a non-voter: waiting for the first voters to form the cluster and seat it",
						"first_voters", first)
				} else {
					c.log.Info("bootstrap_expect: more voters than expected met, and this node is not among the first by name: waiting for them to form the cluster and seat it",
						"first_voters", first)
				}
			}
			return false
		}
		if c.peerMayHaveState(c.Members.Members(), c.Store.PeerHasState, c.Store.HasState) || c.silentSeedHolds() {
			return false
		}
		if err := c.Store.BootstrapCluster(voters); err != nil {
			c.log.Error("bootstrap failed", "err", err)
			return false
		}
		c.log.Info("bootstrap: expected voters present", "voters", len(voters))
		return true
	}
	return true // joining an existing cluster: the leader adds us
}

// peerMayHaveState reports whether a member may have Raft state, so that a
// bootstrap_expect node must not bootstrap now: ask is Store.PeerHasState.
//
// A member with Raft state belongs to a cluster that exists (this node's
// data dir was moved away, say): it is joined, by its leader seating this
// node, not forked by a configuration of our own (an outside check saw one
// lead beside the cluster's for seconds). Asked over the cluster port, as
// Consul's servers ask each other for their Raft peers; a gossip field
// (the document's version) comes too late after a start.
//
// Every member seen in gossip counts, whatever its state now, but one that
// left gracefully: a member that does not answer (stalled, or down) may be
// the one with state, and the node waits for it (outside checks forked
// clusters, acknowledged writes lost, by stalling a member with state for
// 2 s: first while it was alive and its question timed out, then, with
// more nodes than bootstrap_expect, once gossip had it suspect and it was
// no longer asked). A member that said it has none is not asked again
// once it stops answering; an answer that does not know the question (an
// older version), or a refusal over mutual TLS (another CA or cluster),
// says nothing of a state this cluster could have. A member that went down
// before it answered holds the bootstrap until it comes back or gossip
// forgets it (DeadRetention). seated is the node's own Store.HasState: the
// questions take time, and a node seated meanwhile does not say it waits.
func (c *Cluster) peerMayHaveState(members []gossip.Member, ask func(context.Context, string) (bool, error), seated func() bool) bool {
	if c.saidNoState == nil {
		c.saidNoState = map[string]bool{}
	}
	for _, mb := range members {
		if mb.Name == c.cfg.Name || mb.State == gossip.StateLeft {
			continue
		}
		var has bool
		var err error
		if mb.ClusterAddr == "" {
			err = errors.New("it announces no cluster address")
		} else {
			ctx, cancel := context.WithTimeout(c.ctx, 2*time.Second)
			has, err = ask(ctx, mb.ClusterAddr)
			cancel()
		}
		switch {
		case c.ctx.Err() != nil:
			return true // closing
		case err == nil && has:
			delete(c.saidNoState, mb.Name)
			if !c.waitSeatLogged && !seated() { // not seated while asking
				c.waitSeatLogged = true
				c.log.Info("bootstrap: a member already has Raft state: waiting to be brought into its cluster (by its leader, or by the bootstrap that member made)",
					"member", mb.Name)
			}
			return true
		case err == nil, errors.Is(err, store.ErrCannotTell):
			c.saidNoState[mb.Name] = true
		case c.saidNoState[mb.Name] && mb.State != gossip.StateAlive:
			// Down after it said it had none.
		default:
			if now := time.Now(); now.Sub(c.noAnswerLogged) >= 30*time.Second {
				c.noAnswerLogged = now
				c.log.Warn("bootstrap: not bootstrapping yet: a member seen in gossip has not said whether it has Raft state (it may have, and a bootstrap would then fork its cluster); asking again. If it is gone for good and never held this cluster's state, restart the waiting nodes together (they forget it), or wait for gossip's dead retention",
					"member", mb.Name, "gossip_state", string(mb.State), "addr", mb.ClusterAddr, "err", err, "dead_retention", c.deadRetention().String())
			}
			return true
		}
	}
	return false
}

// silentSeedHolds reports whether a seed that took a join's connection and
// never answered (a process there, stalled) holds the bootstrap: a node
// no gossip has told of may be a member with Raft state (an outside check
// forked a cluster beside one stopped from its start). Each such seed is
// joined again; one that answers is a member, asked next time, and one
// that refuses the connection is no longer silent.
func (c *Cluster) silentSeedHolds() bool {
	for _, seed := range c.Members.SilentSeeds() {
		// Said before the join again, which waits up to gossip's TCP
		// timeout for the seed.
		if now := time.Now(); now.Sub(c.noAnswerLogged) >= 30*time.Second {
			c.noAnswerLogged = now
			c.log.Warn("bootstrap_expect: not bootstrapping yet: a seed takes connections but does not answer (a node there, stalled, may have Raft state, and a bootstrap would then fork its cluster); trying it again. If it is not a node of this cluster, take it out of join",
				"seed", seed)
		}
		if _, n, _ := c.Members.JoinVia([]string{seed}); n > 0 || c.ctx.Err() != nil {
			return true // a member now: asked whether it has state first
		}
		if slices.Contains(c.Members.SilentSeeds(), seed) {
			return true
		}
	}
	return false
}

// reconcile, on the leader, adds alive gossip members missing from the
// Raft configuration (not draining ones, which may just have left it) and
// removes those that left, but voters that keep their seat.
func (c *Cluster) reconcile() {
	if c.Store.State() != "Leader" {
		return
	}
	servers, err := c.Store.Servers()
	if err != nil {
		return
	}
	inRaft := map[string]store.Server{}
	for _, s := range servers {
		inRaft[s.ID] = s
	}
	for _, mb := range c.Members.Members() {
		s, known := inRaft[mb.Name]
		switch {
		case mb.State == gossip.StateAlive && !mb.Draining && mb.ClusterAddr != "" && (!known || s.Addr != mb.ClusterAddr) &&
			(mb.ClusterID == "" || mb.ClusterID == c.Members.ClusterID()):
			if !c.reachable(mb) {
				continue
			}
			var err error
			if mb.Voter {
				err = c.Store.AddVoter(c.ctx, mb.Name, mb.ClusterAddr)
			} else {
				err = c.Store.AddNonvoter(c.ctx, mb.Name, mb.ClusterAddr)
			}
			if err != nil {
				c.log.Warn("adding a member to Raft failed", "member", mb.Name, "err", err)
			} else {
				c.log.Info("member added to Raft", "member", mb.Name, "voter", mb.Voter)
			}
		case mb.State == gossip.StateAlive && !mb.Draining && known && s.Addr == mb.ClusterAddr && s.Voter != mb.Voter &&
			(mb.ClusterID == "" || mb.ClusterID == c.Members.ClusterID()):
			c.changeSuffrage(mb, servers)
		case mb.State == gossip.StateLeft && known && mb.Name != c.cfg.Name && (!s.Voter || mb.GivesUpSeat):
			// A non-voter that left has no say in the quorum: tidied
			// away (it is added again when it comes back). A voter
			// keeps its seat, so that a restart keeps the quorum's size,
			// unless it gives it up (remove_on_leave): it removes itself
			// as it leaves (Store.Leave), and this does if it could not.
			if err := c.Store.RemoveServer(c.ctx, mb.Name); err != nil {
				c.log.Warn("removing a departed member from Raft failed", "member", mb.Name, "err", err)
			} else {
				c.log.Info("member that left removed from Raft", "member", mb.Name)
			}
		}
	}
}

// changeSuffrage makes a seated member's seat what its configuration now
// says (voter, or voter: false): a node restarted with voter changed kept
// its old seat without a word (an outside check), so a cluster laid out
// with non-voters as the README advises had a larger quorum than its
// operator thought. A leader to be demoted hands its leadership over first
// (the next leader demotes it); the last voter is never demoted.
func (c *Cluster) changeSuffrage(mb gossip.Member, servers []store.Server) {
	// The change commits only with a quorum of the voters it leaves:
	// made while another voter is down it could leave none (an outside
	// check demoted one of three with a second down, and the cluster had
	// no leader until that one came back). It waits, and says so.
	if why := c.suffrageBlocked(mb, servers); why != "" {
		if c.suffrageWaitLogged[mb.Name] != why {
			if c.suffrageWaitLogged == nil {
				c.suffrageWaitLogged = map[string]string{}
			}
			c.suffrageWaitLogged[mb.Name] = why
			c.log.Warn("a member's voter setting changed, but its seat is left as it is for now", "member", mb.Name, "voter", mb.Voter, "why", why)
		}
		return
	}
	delete(c.suffrageWaitLogged, mb.Name)
	var err error
	switch {
	case mb.Voter:
		if err = c.Store.AddVoter(c.ctx, mb.Name, mb.ClusterAddr); err == nil {
			c.log.Info("member made a voter, as its configuration now says", "member", mb.Name)
		}
	case mb.Name == c.cfg.Name:
		c.log.Info("this node's configuration says voter: false: handing leadership over, for the next leader to make it a non-voter")
		c.Store.HandOverLeadership()
		return
	default:
		if err = c.Store.DemoteVoter(c.ctx, mb.Name); err == nil {
			c.log.Info("member made a non-voter, as its configuration now says", "member", mb.Name)
		}
	}
	if err != nil && c.ctx.Err() == nil {
		c.log.Warn("changing a member's vote failed", "member", mb.Name, "voter", mb.Voter, "err", err)
	}
}

// suffrageBlocked says why mb's seat cannot follow its voter setting now
// ("": it can): the voters it would leave must keep a quorum of alive
// members (gossip), and the last voter keeps its vote.
func (c *Cluster) suffrageBlocked(mb gossip.Member, servers []store.Server) string {
	alive := map[string]bool{}
	for _, m := range c.Members.Members() {
		if m.State == gossip.StateAlive && !m.Draining {
			alive[m.Name] = true
		}
	}
	voters, up := 0, 0
	for _, s := range servers {
		v := s.Voter
		if s.ID == mb.Name {
			v = mb.Voter
		}
		if v {
			voters++
			if alive[s.ID] {
				up++
			}
		}
	}
	switch {
	case voters == 0:
		return "it holds the cluster's only vote: it keeps it until another voter is seated"
	case up < voters/2+1:
		return fmt.Sprintf("the change would leave %d voters of which %d are alive, short of a quorum: it waits until the others are back (or removed)", voters, up)
	}
	return ""
}

// probeLogBurst is how many failed probes reachable logs per probeRetry.
const probeLogBurst = 10

// reachable probes a member before it gets a Raft seat (or its seat a new
// address): gossip is open to any node with the gossip key, but Raft to
// nodes with a certificate from the cluster CA, and a voter the leader
// cannot reach counts against the quorum all the same (an outside check
// saw a node with another CA's certificate seated as a voter, and writes
// fail once one real voter was down). The peer must complete the TLS
// handshake both ways, with a certificate for the member's name. A failure
// is logged and retried after probeRetry.
func (c *Cluster) reachable(mb gossip.Member) bool {
	if f, ok := c.unreachable[mb.Name]; ok && f.addr == mb.ClusterAddr && time.Now().Before(f.until) {
		return false
	}
	ctx, cancel := context.WithTimeout(c.ctx, 3*time.Second)
	name, err := c.Store.Probe(ctx, mb.ClusterAddr)
	cancel()
	if err == nil && name != "" && name != mb.Name {
		err = fmt.Errorf("its certificate is for %q", name)
	}
	if err != nil && c.ctx.Err() != nil {
		return false // closing: the probe was cut short, nothing to say of the member
	}
	if err != nil {
		if c.unreachable == nil {
			c.unreachable = map[string]probeFailure{}
		}
		c.unreachable[mb.Name] = probeFailure{mb.ClusterAddr, time.Now().Add(probeRetry)}
		c.seatsRefused.Add(1)
		// At most probeLogBurst lines per probeRetry, the rest counted
		// in the next: an outside check with a thousand fake members
		// had a thousand lines every 30 s.
		now := time.Now()
		if now.Sub(c.probeLogSince) >= probeRetry {
			c.probeLogSince, c.probeLogged = now, 0
		}
		if c.probeLogged < probeLogBurst {
			c.probeLogged++
			c.log.Warn("a member's cluster address does not answer as a member should: no Raft seat for it (in a first configuration, or from a leader) until it does",
				"member", mb.Name, "addr", mb.ClusterAddr, "err", err, "retry_in", probeRetry.String()+" (or when it rejoins)", "others_not_logged", c.probeHeld)
			c.probeHeld = 0
		} else {
			c.probeHeld++
		}
		return false
	}
	delete(c.unreachable, mb.Name)
	return true
}

// Apply commits a document through the leader and returns once this node
// has applied it.
func (c *Cluster) Apply(ctx context.Context, raw []byte, hash string, ifVersion uint64) (store.Applied, error) {
	return c.Store.ApplyWithHash(ctx, raw, hash, ifVersion)
}

// MemberStatus is one row of `meridian cluster status`.
type MemberStatus struct {
	Name          string  `json:"name"`
	Region        string  `json:"region"`
	Lat           float64 `json:"lat"`
	Lon           float64 `json:"lon"`
	State         string  `json:"gossip_state"`
	Raft          string  `json:"raft_role"`
	ConfigVersion uint64  `json:"config_version"`
	GossipAddr    string  `json:"gossip_addr"`
	ClusterAddr   string  `json:"cluster_addr"`
	HTTPAddr      string  `json:"http_addr,omitempty"`
	HTTPSAddr     string  `json:"https_addr,omitempty"`
	AdminAddr     string  `json:"admin_addr,omitempty"`
	Draining      bool    `json:"draining,omitempty"`
	ClusterID     string  `json:"cluster_id,omitempty"` // the cluster whose Raft history it holds, once known
}

// Status lists every member known by gossip with its Raft role: leader,
// voter, nonvoter, or none (not in the Raft configuration).
func (c *Cluster) Status() []MemberStatus {
	roles := map[string]string{}
	if servers, err := c.Store.Servers(); err == nil {
		for _, s := range servers {
			if s.Voter {
				roles[s.ID] = "voter"
			} else {
				roles[s.ID] = "nonvoter"
			}
		}
	}
	if id, _ := c.Store.Leader(); id != "" {
		roles[id] = "leader"
	}
	var out []MemberStatus
	inGossip := map[string]bool{}
	for _, mb := range c.Members.Members() {
		inGossip[mb.Name] = true
		role := roles[mb.Name]
		if role == "" {
			role = "none"
		}
		out = append(out, MemberStatus{
			Name: mb.Name, Region: mb.Region, Lat: mb.Lat, Lon: mb.Lon, State: string(mb.State), Raft: role,
			ConfigVersion: mb.ConfigVersion, GossipAddr: mb.Addr, ClusterAddr: mb.ClusterAddr,
			HTTPAddr: mb.HTTPAddr, HTTPSAddr: mb.HTTPSAddr, AdminAddr: mb.AdminAddr, Draining: mb.Draining,
			ClusterID: mb.ClusterID,
		})
	}
	// Raft seats of nodes gossip no longer knows (gone for good): they
	// count in the quorum all the same.
	if servers, err := c.Store.Servers(); err == nil {
		for _, s := range servers {
			if !inGossip[s.ID] {
				out = append(out, MemberStatus{Name: s.ID, State: "unknown", Raft: roles[s.ID], ClusterAddr: s.Addr})
			}
		}
	}
	return out
}

// ErrMemberNotFound: no Raft seat has that name.
var ErrMemberNotFound = errors.New("no member of that name holds a Raft seat")

// ErrMemberRefused: the seat cannot be removed (the member is alive, or is
// this node, or this node does not lead).
var ErrMemberRefused = errors.New("member not removed")

// RemoveMember takes a member's Raft seat away, for a node gone for good
// that kept its seat (remove_on_leave false, or never drained), which
// otherwise counts against the quorum for ever (Consul's force-leave and
// raft remove-peer). Only the leader does it, and only for a member gossip
// does not report alive.
func (c *Cluster) RemoveMember(name string) error {
	if name == c.cfg.Name {
		return fmt.Errorf("%w: %q is this node; drain it with remove_on_leave: true instead", ErrMemberRefused, name)
	}
	if c.Store.State() != "Leader" {
		id, _ := c.Store.Leader()
		if id == "" {
			return errors.New("no cluster leader is known (no quorum?); only the leader removes members: try again once one is elected")
		}
		where := "the leader is " + id
		for _, mb := range c.Members.Members() {
			if mb.Name == id && mb.AdminAddr != "" {
				where += ", whose admin API is at " + mb.AdminAddr
			}
		}
		return fmt.Errorf("%w: only the leader removes members; %s", ErrMemberRefused, where)
	}
	for _, mb := range c.Members.Members() {
		if mb.Name == name && (mb.State == gossip.StateAlive || mb.State == gossip.StateSuspect) {
			return fmt.Errorf("%w: %q is %s in gossip; stop it first (a stopped node is declared dead within seconds), or drain it with remove_on_leave: true", ErrMemberRefused, name, mb.State)
		}
	}
	servers, err := c.Store.Servers()
	if err != nil {
		return err
	}
	if !slices.ContainsFunc(servers, func(s store.Server) bool { return s.ID == name }) {
		return fmt.Errorf("%w: %q", ErrMemberNotFound, name)
	}
	if err := c.Store.RemoveServer(c.ctx, name); err != nil {
		return err
	}
	c.log.Warn("member removed from Raft through the admin API", "member", name)
	return nil
}

// Leave departs gracefully: voters hand their seat back through the leader,
// gossip announces the leave, then everything closes.
func (c *Cluster) Leave(ctx context.Context) error {
	c.Members.UpdateMeta(func(m *gossip.Meta) { m.Draining = true })
	// Peers learn of the drain before the seat goes, so that the leader
	// does not add back a member that is alive in gossip but no longer
	// in Raft (reconcile leaves draining members out).
	c.Members.WaitAnnounced(2 * time.Second)
	var err error
	if c.cfg.Voter {
		err = c.Store.Leave(ctx)
	}
	c.Members.Leave(5 * time.Second)
	c.Close()
	return err
}

// Close stops gossip and Raft without leaving (a crash, as others see it).
func (c *Cluster) Close() error {
	c.cancel()
	c.wg.Wait()
	c.Members.Shutdown()
	return c.Store.Close()
}

// deadRetention is how long gossip keeps a dead member listed.
func (c *Cluster) deadRetention() time.Duration {
	if d := c.cfg.GossipTuning.DeadRetention; d > 0 {
		return d
	}
	return gossip.LANTuning().DeadRetention
}
