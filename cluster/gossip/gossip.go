package gossip

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"math"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/meridian-gw/meridian/internal/srcaddr"
)

// State is a member's liveness as this node sees it.
type State string

const (
	StateAlive   State = "alive"
	StateSuspect State = "suspect" // a probe failed; memberlist's suspicion timer runs
	StateDead    State = "dead"    // declared failed (suspicion expired unrefuted)
	StateLeft    State = "left"    // left gracefully (Leave)
)

// Member is one node as this node sees it.
type Member struct {
	Meta
	State State
	Addr  string    // gossip address host:port
	Local bool      // this is the local node
	Since time.Time // when State last changed (local clock)
}

// EventKind says what happened to a member.
type EventKind int

const (
	// EventJoin: a member appeared, or came back after dead/left.
	EventJoin EventKind = iota + 1
	// EventUpdate: a member's Meta or State (alive <-> suspect) changed.
	EventUpdate
	// EventLeave: a member left gracefully. It may also follow an EventFail
	// for the same member when the leave intent arrived after the failure.
	EventLeave
	// EventFail: a member was declared dead.
	EventFail
)

func (k EventKind) String() string {
	switch k {
	case EventJoin:
		return "join"
	case EventUpdate:
		return "update"
	case EventLeave:
		return "leave"
	case EventFail:
		return "fail"
	}
	return "EventKind(" + strconv.Itoa(int(k)) + ")"
}

// Event is delivered to subscribers; Member is the member after the change.
type Event struct {
	Kind   EventKind
	Member Member
}

// Tuning holds the failure-detection and gossip timings. A zero field takes
// its LAN default (LANTuning). Tests shorten them.
type Tuning struct {
	ProbeInterval           time.Duration // how often a peer is probed
	ProbeTimeout            time.Duration // wait for an ack before indirect probes
	GossipInterval          time.Duration // how often broadcasts are sent
	GossipNodes             int           // peers gossiped to per interval
	PushPullInterval        time.Duration // full state sync with a random peer
	TCPTimeout              time.Duration // dial/IO timeout for push/pull and reliable sends
	IndirectChecks          int           // peers asked to probe on our behalf
	SuspicionMult           int           // suspicion timeout = mult * log10(n) * ProbeInterval
	SuspicionMaxTimeoutMult int           // upper bound multiplier while few peers confirm
	RetransmitMult          int           // broadcast sent mult * log10(n+1) times by each node
	GossipToTheDeadTime     time.Duration // keep gossiping to a dead node this long
	DeadRetention           time.Duration // keep dead/left members in Members() this long
}

// LANTuning returns the defaults for one data centre (memberlist's LAN profile).
func LANTuning() Tuning {
	c := memberlist.DefaultLANConfig()
	return Tuning{
		ProbeInterval:           c.ProbeInterval,
		ProbeTimeout:            c.ProbeTimeout,
		GossipInterval:          c.GossipInterval,
		GossipNodes:             c.GossipNodes,
		PushPullInterval:        c.PushPullInterval,
		TCPTimeout:              c.TCPTimeout,
		IndirectChecks:          c.IndirectChecks,
		SuspicionMult:           c.SuspicionMult,
		SuspicionMaxTimeoutMult: c.SuspicionMaxTimeoutMult,
		RetransmitMult:          c.RetransmitMult,
		GossipToTheDeadTime:     c.GossipToTheDeadTime,
		DeadRetention:           30 * time.Minute,
	}
}

// WANTuning returns memberlist's WAN profile: slower probes, longer
// suspicion, for a cluster spanning regions.
func WANTuning() Tuning {
	c := memberlist.DefaultWANConfig()
	t := LANTuning()
	t.ProbeInterval, t.ProbeTimeout = c.ProbeInterval, c.ProbeTimeout
	t.GossipInterval, t.GossipNodes = c.GossipInterval, c.GossipNodes
	t.PushPullInterval, t.TCPTimeout = c.PushPullInterval, c.TCPTimeout
	t.SuspicionMult, t.GossipToTheDeadTime = c.SuspicionMult, c.GossipToTheDeadTime
	return t
}

func (t Tuning) withDefaults() Tuning {
	d := LANTuning()
	setD := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	setI := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	setD(&t.ProbeInterval, d.ProbeInterval)
	setD(&t.ProbeTimeout, d.ProbeTimeout)
	setD(&t.GossipInterval, d.GossipInterval)
	setI(&t.GossipNodes, d.GossipNodes)
	setD(&t.PushPullInterval, d.PushPullInterval)
	setD(&t.TCPTimeout, d.TCPTimeout)
	setI(&t.IndirectChecks, d.IndirectChecks)
	setI(&t.SuspicionMult, d.SuspicionMult)
	setI(&t.SuspicionMaxTimeoutMult, d.SuspicionMaxTimeoutMult)
	setI(&t.RetransmitMult, d.RetransmitMult)
	setD(&t.GossipToTheDeadTime, d.GossipToTheDeadTime)
	setD(&t.DeadRetention, d.DeadRetention)
	return t
}

// Config starts a Members.
type Config struct {
	// BindAddr/BindPort: gossip listens here on TCP and UDP. Port 0 picks a
	// free port (read it back with Members.Addr).
	BindAddr string
	BindPort int
	// AdvertiseAddr/AdvertisePort: what peers dial; default: the bound ones.
	AdvertiseAddr string
	AdvertisePort int

	// Keys are AES keys of 16, 24 or 32 bytes. Keys[0] encrypts, all decrypt.
	// Nil means no encryption, which is logged as a warning.
	Keys [][]byte

	// Meta is the local node's metadata; Meta.Name is required.
	Meta Meta

	// Logger receives this package's logs and memberlist's (bridged).
	// Nil means slog.Default().
	Logger *slog.Logger

	// Tuning: zero fields take LAN defaults.
	Tuning Tuning

	// Context, if set, ends the TCP dials gossip makes (a join's
	// push/pull with a seed that does not answer waits TCPTimeout for each
	// otherwise) when it ends: a node that is stopping does not wait on
	// them. Shutdown ends them too.
	Context context.Context

	// transport, for this package's tests, wraps memberlist's network
	// transport (to lose packets, say).
	transport func(*memberlist.NetTransport) memberlist.Transport
}

// dialCtxTransport is memberlist's transport whose TCP dials end when ctx
// does (memberlist's own cannot be cancelled).
type dialCtxTransport struct {
	memberlist.Transport
	ctx    context.Context
	bind   net.IP            // the dials leave from it (srcaddr), as the UDP packets do
	onDial func(addr string) // told of each dial that connected
}

func (t *dialCtxTransport) DialTimeout(addr string, timeout time.Duration) (net.Conn, error) {
	d := srcaddr.Dialer(t.bind, addr)
	d.Timeout = timeout
	c, err := d.DialContext(t.ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if t.onDial != nil {
		t.onDial(addr)
	}
	// The exchange that follows (a push/pull with a peer that does not
	// answer) ends with ctx too.
	return &ctxConn{Conn: c, stop: context.AfterFunc(t.ctx, func() { c.Close() })}, nil
}

// WriteToAddress and DialAddressTimeout make it a NodeAwareTransport, as
// memberlist's own is (it would otherwise shim it, and warn).
func (t *dialCtxTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if na, ok := t.Transport.(memberlist.NodeAwareTransport); ok {
		return na.WriteToAddress(b, a)
	}
	return t.Transport.WriteTo(b, a.Addr)
}

func (t *dialCtxTransport) DialAddressTimeout(a memberlist.Address, timeout time.Duration) (net.Conn, error) {
	return t.DialTimeout(a.Addr, timeout)
}

// ctxConn is a dialled connection closed when its dialer's context ends.
type ctxConn struct {
	net.Conn
	stop func() bool
}

func (c *ctxConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// Errors.
var (
	ErrShutdown      = errors.New("gossip: shut down")
	ErrLeft          = errors.New("gossip: left the cluster")
	ErrNoEncryption  = errors.New("gossip: encryption is not enabled (Config.Keys was empty at start)")
	ErrUnknownMember = errors.New("gossip: no such live member")
	ErrTooLarge      = errors.New("gossip: message too large")
)

// Members is the local node's membership in the cluster. Its methods are safe
// for concurrent use.
type Members struct {
	name    string
	boot    uint64 // identifies this process's life; carried in meta and broadcasts
	tuning  Tuning
	log     *slog.Logger
	ml      *memberlist.Memberlist
	keyring *memberlist.Keyring
	queue   *bcastQueue

	addr     string      // advertised gossip address, fixed at Start
	stopping atomic.Bool // Shutdown has begun: closed-socket errors are expected

	// seedMu guards dialed (when a TCP dial to an address last
	// succeeded), joining (seeds whose join is in flight, since when) and
	// silent (seeds that took a join's connection and then never
	// answered: a process there, stalled; SilentSeeds).
	seedMu  sync.Mutex
	dialed  map[string]time.Time
	joining map[string]time.Time
	silent  map[string]bool
	quiet   atomic.Bool // see Quiet
	metaMu  sync.Mutex  // serializes UpdateMeta
	meta    Meta        // guarded by metaMu
	encMeta atomic.Pointer[[]byte]

	dialCtx   context.Context // ends the transport's dials (Config.Context, Shutdown)
	stopDials context.CancelFunc

	seq      atomic.Uint64 // broadcast sequence
	numNodes atomic.Int64  // alive+suspect members including self

	// nameTaken is the address of another node alive under this node's
	// name, once gossip has told of one ("": none).
	nameTaken atomic.Pointer[string]
	// clusterID is meta.ClusterID, read by memberlist's callbacks;
	// foreignLogged is when a refused member of another cluster was last
	// logged (UnixNano): gossip repeats their alive messages, and the
	// log says so once in foreignLogEvery.
	clusterID     atomic.Pointer[string]
	foreignLogged atomic.Int64
	// conflictTold is when this node last told each member that another
	// node gossips under its name (witnessConflict); guarded by mu.
	conflictTold map[string]int64
	// tentativeID is the first cluster id seen in a peer while this node
	// had none (sameCluster).
	tentativeID atomic.Pointer[string]

	// mu guards the member table and subscribers. It is a leaf lock: it is
	// taken inside memberlist's callbacks (under memberlist's node lock) and
	// is never held while calling into memberlist.
	mu      sync.Mutex
	members map[string]*entry
	intents map[string]intent
	dedup   map[string]*window
	subs    map[*subscription]struct{}
	closed  bool

	hmu        sync.RWMutex
	bcastFns   map[string]func(from string, payload []byte)
	messageFns map[string]func(from string, payload []byte)

	inbox    chan inbound
	announce chan struct{} // a metadata announcement is wanted (announceLoop)
	annStop  chan struct{} // closed first by Shutdown: no more announcements
	annDone  chan struct{} // closed when announceLoop has returned
	stop     chan struct{}

	// Metadata announcements requested (UpdateMeta, Join) and covered by a
	// completed one; annChanged is closed and replaced when annSent moves.
	annMu      sync.Mutex
	annWanted  uint64
	annSent    uint64
	annChanged chan struct{}
	wg         sync.WaitGroup

	leaveMu  sync.Mutex
	left     atomic.Bool
	shutOnce sync.Once

	stats struct {
		droppedEvents, droppedMessages, malformed, duplicates, unhandled, prunedBroadcasts, metaReannounced, foreign atomic.Uint64
	}
}

type entry struct {
	m          Member
	boot       uint64
	node       memberlist.Node // copy, for sends
	leaving    bool            // a leave intent for this boot arrived
	suspectGen uint64
	timer      *time.Timer // suspicion expiry
}

type intent struct {
	boot uint64
	at   time.Time
}

type subscription struct {
	ch      chan Event
	dropped uint64
}

// Start binds the gossip ports, starts memberlist and returns. It does not
// join anyone: call Join.
func Start(cfg Config) (*Members, error) {
	if cfg.Meta.Name == "" {
		return nil, errors.New("gossip: Config.Meta.Name is required")
	}
	if len(cfg.Meta.Name) > 255 {
		return nil, errors.New("gossip: Config.Meta.Name longer than 255 bytes")
	}
	logger := cfg.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("component", "gossip")
	t := cfg.Tuning.withDefaults()

	m := &Members{
		name:       cfg.Meta.Name,
		boot:       uint64(time.Now().UnixNano()),
		tuning:     t,
		log:        logger,
		meta:       cfg.Meta,
		members:    make(map[string]*entry),
		intents:    make(map[string]intent),
		dedup:      make(map[string]*window),
		subs:       make(map[*subscription]struct{}),
		bcastFns:   make(map[string]func(string, []byte)),
		messageFns: make(map[string]func(string, []byte)),
		inbox:      make(chan inbound, inboxSize),
		announce:   make(chan struct{}, 1),
		annStop:    make(chan struct{}),
		annDone:    make(chan struct{}),
		annChanged: make(chan struct{}),
		stop:       make(chan struct{}),
	}
	enc, err := encodeMeta(&m.meta, m.boot)
	if err != nil {
		return nil, err
	}
	m.encMeta.Store(&enc)
	m.queue = &bcastQueue{numNodes: func() int { return int(m.numNodes.Load()) }, mult: t.RetransmitMult}

	mc := memberlist.DefaultLANConfig()
	mc.Name = cfg.Meta.Name
	mc.BindAddr = cfg.BindAddr
	if mc.BindAddr == "" {
		mc.BindAddr = "0.0.0.0"
	}
	mc.BindPort = cfg.BindPort
	mc.AdvertiseAddr = cfg.AdvertiseAddr
	mc.AdvertisePort = cfg.AdvertisePort
	if mc.AdvertisePort == 0 {
		mc.AdvertisePort = cfg.BindPort // port 0: memberlist substitutes the bound port
	}
	mc.ProbeInterval = t.ProbeInterval
	mc.ProbeTimeout = t.ProbeTimeout
	mc.GossipInterval = t.GossipInterval
	mc.GossipNodes = t.GossipNodes
	mc.PushPullInterval = t.PushPullInterval
	mc.TCPTimeout = t.TCPTimeout
	mc.IndirectChecks = t.IndirectChecks
	mc.SuspicionMult = t.SuspicionMult
	mc.SuspicionMaxTimeoutMult = t.SuspicionMaxTimeoutMult
	mc.RetransmitMult = t.RetransmitMult
	mc.GossipToTheDeadTime = t.GossipToTheDeadTime

	if len(cfg.Keys) > 0 {
		kr, err := memberlist.NewKeyring(cfg.Keys, cfg.Keys[0])
		if err != nil {
			return nil, fmt.Errorf("gossip: keys: %w", err)
		}
		m.keyring = kr
		mc.Keyring = kr
		mc.GossipVerifyIncoming = true
		mc.GossipVerifyOutgoing = true
	} else {
		logger.Warn("gossip encryption is disabled: any host that reaches the gossip port can join and read cluster traffic; set Keys")
	}

	d := &delegate{m: m}
	mc.Delegate = d
	mc.Events = d
	mc.Alive = d
	mc.Ping = d
	mc.Conflict = d
	mc.Merge = d
	mc.Logger = log.New(&logBridge{log: logger, onSuspect: m.localSuspect, stopping: m.stopping.Load, quiet: m.quiet.Load}, "", 0)

	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{BindAddrs: []string{mc.BindAddr}, BindPort: mc.BindPort, Logger: mc.Logger})
	if err != nil {
		return nil, fmt.Errorf("gossip: start: %w", err)
	}
	var tr memberlist.Transport = nt
	if cfg.transport != nil {
		tr = cfg.transport(nt)
	}
	m.dialCtx, m.stopDials = context.WithCancel(cmp.Or(cfg.Context, context.Background()))
	mc.Transport = &dialCtxTransport{Transport: tr, ctx: m.dialCtx, bind: net.ParseIP(mc.BindAddr), onDial: m.noteDial}

	m.wg.Add(2)
	go m.dispatchLoop()
	go m.announceLoop()

	ml, err := memberlist.Create(mc)
	if err != nil {
		m.stopDials()
		nt.Shutdown()
		close(m.annStop)
		close(m.stop)
		m.wg.Wait()
		return nil, fmt.Errorf("gossip: start: %w", err)
	}
	m.ml = ml
	m.addr = ml.LocalNode().Address() // before anything can call UpdateNode
	return m, nil
}

// Join contacts the seeds (host:port) and merges state with one that
// answers. It returns how many were reached; err is non-nil only if none
// was.
//
// The seeds are tried in turn, as memberlist's own Join does, but the next
// is not kept waiting on one that has not answered within joinStagger (a
// seed that drops packets, or accepts and never answers, held the join for
// its TCPTimeout, 10 s, before the next was even tried); the join returns
// at the first answer, and starts no more. In turn, not all at once: a new
// node takes the cluster id of the first peer it meets as its own, and
// carries it to the next, which refuses it if it is of another cluster;
// met all at once, each seed of two clusters would take it in.
func (m *Members) Join(seeds []string) (int, error) {
	_, n, err := m.JoinVia(seeds)
	return n, err
}

// JoinVia is Join, also returning the seed that answered.
func (m *Members) JoinVia(seeds []string) (string, int, error) {
	if m.isShut() {
		return "", 0, ErrShutdown
	}
	if len(seeds) == 0 {
		return "", 0, nil
	}
	type result struct {
		seed string
		n    int
		err  error
	}
	results := make(chan result)
	quit := make(chan struct{}) // those left behind do not block
	defer close(quit)
	queue := slices.Clone(seeds) // to be tried, in turn
	inFlight := 0
	var failed []string // tried and failed: tried again while another still waits
	start := func(seed string) {
		inFlight++
		go func() {
			began := m.joinBegins(seed)
			n, err := m.ml.Join([]string{seed})
			m.noteSeed(seed, began, n, err)
			if n > 0 {
				// Announce our current metadata again, now that peers
				// are known: an update announced while the join's
				// push/pull was in flight may have been sent to no one.
				m.requestAnnounce()
			}
			select {
			case results <- result{seed, n, err}:
			case <-quit:
			}
		}()
	}
	next := func() {
		if len(queue) == 0 {
			// Every seed tried: those that failed at once (a node not
			// up yet) are tried again while one still waits (a seed
			// that took the connection and does not answer would
			// otherwise hold the join for its TCPTimeout).
			queue, failed = failed, nil
		}
		if len(queue) > 0 {
			start(queue[0])
			queue = queue[1:]
		}
	}
	next()
	stagger := time.NewTimer(joinStagger)
	defer stagger.Stop()
	var errs []error
	for inFlight > 0 {
		select {
		case r := <-results:
			inFlight--
			if r.n > 0 {
				// The others are contacted still, as memberlist's Join
				// does, now that this node carries the id of the
				// cluster it met (one of another cluster refuses it):
				// a seed that takes the connection and never answers
				// is then known to be there (SilentSeeds).
				for _, seed := range queue {
					if !slices.Contains(failed, seed) {
						start(seed)
					}
				}
				return r.seed, r.n, nil
			}
			failed = append(failed, r.seed)
			if me, ok := r.err.(interface{ WrappedErrors() []error }); ok {
				errs = append(errs, me.WrappedErrors()...) // memberlist's multierror: its lines, not its list's frame
			} else if r.err != nil {
				errs = append(errs, r.err)
			}
			if len(queue) > 0 {
				// A seed that failed at once (refused) has answered: the
				// next need not wait for the stagger, even while another
				// (silent) one still waits.
				start(queue[0])
				queue = queue[1:]
				stagger.Reset(joinStagger)
			}
		case <-stagger.C:
			next()
			stagger.Reset(joinStagger)
		}
	}
	if len(errs) > 0 {
		return "", 0, fmt.Errorf("gossip: join: %w", errors.Join(dedupeErrs(errs)...))
	}
	return "", 0, nil
}

// dedupeErrs drops errors whose text an earlier one has (a seed tried
// again while another waited fails the same way).
func dedupeErrs(errs []error) []error {
	seen := map[string]bool{}
	return slices.DeleteFunc(errs, func(e error) bool {
		if seen[e.Error()] {
			return true
		}
		seen[e.Error()] = true
		return false
	})
}

// noteDial records a TCP dial to addr that connected.
func (m *Members) noteDial(addr string) {
	m.seedMu.Lock()
	if m.dialed == nil {
		m.dialed = map[string]time.Time{}
	}
	m.dialed[addr] = time.Now()
	m.seedMu.Unlock()
}

// noteSeed records how a join through seed that began at began ended: a
// seed that took the connection and then let it time out is silent (a
// process listens there, stalled: it may be a member with Raft state that
// no gossip has told of yet); one that answered, refused the connection or
// answered with something else is not.
func (m *Members) noteSeed(seed string, began time.Time, n int, err error) {
	m.seedMu.Lock()
	defer m.seedMu.Unlock()
	delete(m.joining, seed)
	if m.silent == nil {
		m.silent = map[string]bool{}
	}
	at, connected := m.dialed[seed]
	if n == 0 && err != nil && connected && !at.Before(began) && isTimeoutText(err) {
		m.silent[seed] = true
		return
	}
	delete(m.silent, seed)
}

// joinBegins records that a join through seed begins, and returns when.
func (m *Members) joinBegins(seed string) time.Time {
	now := time.Now()
	m.seedMu.Lock()
	if m.joining == nil {
		m.joining = map[string]time.Time{}
	}
	m.joining[seed] = now
	m.seedMu.Unlock()
	return now
}

// isTimeoutText reports whether err (memberlist's, which formats the
// errors it wraps) says an exchange timed out.
func isTimeoutText(err error) bool {
	s := err.Error()
	return strings.Contains(s, "i/o timeout") || strings.Contains(s, "deadline exceeded")
}

// SilentSeeds returns the seeds whose last join took the connection and
// then never answered, or whose join took it and waits for an answer
// still, but those that are members' addresses now.
func (m *Members) SilentSeeds() []string {
	m.seedMu.Lock()
	var out []string
	for s := range m.silent {
		out = append(out, s)
	}
	for s, began := range m.joining {
		if at, ok := m.dialed[s]; ok && !at.Before(began) && !m.silent[s] {
			out = append(out, s)
		}
	}
	m.seedMu.Unlock()
	if len(out) == 0 {
		return nil
	}
	known := map[string]bool{}
	for _, mb := range m.Members() {
		if mb.State == StateAlive || mb.State == StateSuspect {
			known[mb.Addr] = true
		}
	}
	out = slices.DeleteFunc(out, func(s string) bool { return known[s] })
	sort.Strings(out)
	return out
}

// joinStagger is how long Join waits for a seed's answer before it tries
// the next one as well.
const joinStagger = 2 * time.Second

// LocalName is this node's name.
func (m *Members) LocalName() string { return m.name }

// Addr is the advertised gossip address (host:port), useful with port 0.
// It is read once at Start: memberlist's LocalNode points into state its
// UpdateNode rewrites, so reading it later would race with UpdateMeta and
// Join.
func (m *Members) Addr() string { return m.addr }

// Members returns every member known, including dead and left ones for
// Tuning.DeadRetention, sorted by name.
func (m *Members) Members() []Member {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.pruneLocked(time.Now())
	out := make([]Member, 0, len(m.members))
	for _, e := range m.members {
		out = append(out, e.m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Member returns one member by name.
func (m *Members) Member(name string) (Member, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.members[name]
	if !ok {
		return Member{}, false
	}
	return e.m, true
}

// LocalMeta returns the local node's current metadata.
func (m *Members) LocalMeta() Meta {
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	return m.meta
}

// UpdateMeta applies fn to a copy of the local metadata and gossips the
// result. It returns at once; the announcement follows on another goroutine
// (announceLoop), and peers see it within a few gossip intervals (an
// EventUpdate on their side), as does this node's own Members view. Leave
// waits for it (a little). The name cannot change.
// If the encoded result exceeds MetaMaxSize nothing changes and the error
// wraps ErrMetaTooLarge.
func (m *Members) UpdateMeta(fn func(*Meta)) error {
	if m.isShut() {
		return ErrShutdown
	}
	if m.left.Load() {
		return ErrLeft
	}
	m.metaMu.Lock()
	defer m.metaMu.Unlock()
	next := m.meta
	fn(&next)
	if next.Name != m.name {
		return fmt.Errorf("gossip: UpdateMeta cannot rename %q to %q", m.name, next.Name)
	}
	enc, err := encodeMeta(&next, m.boot)
	if err != nil {
		return err
	}
	m.meta = next
	m.encMeta.Store(&enc)
	id := next.ClusterID
	m.clusterID.Store(&id)
	m.requestAnnounce()
	return nil
}

func (m *Members) requestAnnounce() {
	m.annMu.Lock()
	m.annWanted++
	m.annMu.Unlock()
	select {
	case m.announce <- struct{}{}:
	default: // one is pending; it will read the newest metadata
	}
}

// announceLoop gossips the local metadata whenever it changes, and again
// whenever memberlist does not report the broadcast complete in time.
//
// memberlist.UpdateNode queues an alive message at a new incarnation and
// waits until it has been sent its retransmit limit of times (or been
// superseded). memberlist's broadcast queue can silently lose that message
// (see bcastQueue; the same bug is in memberlist's internal queue, which
// cannot be replaced): peers then keep the old metadata until a periodic
// full sync, 30 s later by default. TestStartDevCluster caught this about
// once in 30 runs under load. A broadcast that is lost never completes, so
// the wait times out, and a fresh announcement follows.
//
// This goroutine is the only caller of UpdateNode: concurrent calls could
// pair older metadata with a newer incarnation. Updates made while one
// announcement is in flight are coalesced into the next. Shutdown stops it
// (annStop) and waits for the announcement in flight before it stops
// memberlist, which would leave that wait to its timeout.
func (m *Members) announceLoop() {
	defer m.wg.Done()
	defer close(m.annDone)
	for {
		select {
		case <-m.annStop:
			return
		case <-m.announce:
		}
		m.annMu.Lock()
		covers := m.annWanted
		m.annMu.Unlock()
		for !m.left.Load() { // memberlist ignores our own alive messages after a leave
			select {
			case <-m.annStop:
				return
			default:
			}
			timeout := m.announceTimeout()
			if err := m.ml.UpdateNode(timeout); err == nil {
				break
			}
			m.stats.metaReannounced.Add(1)
			m.log.Debug("local metadata broadcast not completed; announcing again", "after", timeout)
		}
		m.annMu.Lock()
		if covers > m.annSent {
			m.annSent = covers
			close(m.annChanged)
			m.annChanged = make(chan struct{})
		}
		m.annMu.Unlock()
	}
}

// WaitAnnounced waits up to timeout for the metadata UpdateMeta set last to
// go out to peers; it reports whether it did.
func (m *Members) WaitAnnounced(timeout time.Duration) bool {
	return m.waitAnnounced(time.Now().Add(timeout))
}

// waitAnnounced waits until the metadata updates requested so far have
// been announced (sent their retransmit limit of times), or until
// deadline; it reports whether they were.
func (m *Members) waitAnnounced(deadline time.Time) bool {
	t := time.NewTimer(time.Until(deadline))
	defer t.Stop()
	m.annMu.Lock()
	target := m.annWanted
	for m.annSent < target {
		ch := m.annChanged
		m.annMu.Unlock()
		select {
		case <-ch:
		case <-t.C:
			return false
		case <-m.annStop:
			return false
		}
		m.annMu.Lock()
	}
	m.annMu.Unlock()
	return true
}

// announceTimeout bounds how long an announcement of the local metadata may
// take to be sent its retransmit limit of times: four times the gossip
// rounds that takes with every round on time, plus a probe interval (probes
// carry broadcasts too), at least a second.
func (m *Members) announceTimeout() time.Duration {
	t := m.tuning
	limit := retransmitLimit(t.RetransmitMult, int(m.numNodes.Load()))
	rounds := (limit + t.GossipNodes - 1) / t.GossipNodes
	return max(time.Duration(4*rounds)*t.GossipInterval+t.ProbeInterval, time.Second)
}

// Subscribe returns a channel of membership events and a cancel function that
// closes it. A subscriber that does not keep up loses events (counted in
// Stats.DroppedEvents) and never slows gossip; it can resynchronise with
// Members(). buffer < 1 is taken as 1. The channel is also closed on Shutdown.
func (m *Members) Subscribe(buffer int) (<-chan Event, func()) {
	if buffer < 1 {
		buffer = 1
	}
	s := &subscription{ch: make(chan Event, buffer)}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		close(s.ch)
		return s.ch, func() {}
	}
	m.subs[s] = struct{}{}
	m.mu.Unlock()
	var once sync.Once
	return s.ch, func() {
		once.Do(func() {
			m.mu.Lock()
			defer m.mu.Unlock()
			if _, ok := m.subs[s]; ok {
				delete(m.subs, s)
				close(s.ch)
			}
		})
	}
}

// Stats are counters for observability.
type Stats struct {
	DroppedEvents     uint64 // events not delivered to a full subscriber
	DroppedMessages   uint64 // received broadcasts/best-effort messages dropped (handler queue full)
	MalformedMessages uint64 // peer messages or metadata that failed to decode
	Duplicates        uint64 // broadcast copies already seen
	Unhandled         uint64 // messages for a topic with no handler
	PrunedBroadcasts  uint64 // queued broadcasts discarded because the queue was full
	QueuedBroadcasts  int    // broadcasts waiting to be (re)transmitted now
	MetaReannounced   uint64 // local metadata announcements repeated because memberlist did not complete one in time
	ForeignRefused    uint64 // alive messages and joins refused: the node is of another cluster
}

// Stats returns a snapshot of the counters.
func (m *Members) Stats() Stats {
	return Stats{
		DroppedEvents:     m.stats.droppedEvents.Load(),
		DroppedMessages:   m.stats.droppedMessages.Load(),
		MalformedMessages: m.stats.malformed.Load(),
		Duplicates:        m.stats.duplicates.Load(),
		Unhandled:         m.stats.unhandled.Load(),
		PrunedBroadcasts:  m.stats.prunedBroadcasts.Load(),
		QueuedBroadcasts:  m.queue.NumQueued(),
		MetaReannounced:   m.stats.metaReannounced.Load(),
		ForeignRefused:    m.stats.foreign.Load(),
	}
}

// InstallKey adds a key to the local keyring; it decrypts from now on but
// does not encrypt. See the package documentation for the rotation procedure.
func (m *Members) InstallKey(key []byte) error {
	if m.keyring == nil {
		return ErrNoEncryption
	}
	return m.keyring.AddKey(key)
}

// UseKey makes an installed key the primary (encrypting) key locally.
func (m *Members) UseKey(key []byte) error {
	if m.keyring == nil {
		return ErrNoEncryption
	}
	return m.keyring.UseKey(key)
}

// RemoveKey removes a non-primary key from the local keyring.
func (m *Members) RemoveKey(key []byte) error {
	if m.keyring == nil {
		return ErrNoEncryption
	}
	return m.keyring.RemoveKey(key)
}

// Keys returns the installed keys, primary first (nil without encryption).
func (m *Members) Keys() [][]byte {
	if m.keyring == nil {
		return nil
	}
	return m.keyring.GetKeys()
}

// Leave tells the cluster this node is leaving, so peers record it as "left"
// rather than "dead", and waits up to timeout for the message to go out. The
// node keeps answering probes until Shutdown, which should follow.
func (m *Members) Leave(timeout time.Duration) error {
	m.leaveMu.Lock()
	defer m.leaveMu.Unlock()
	if m.isShut() {
		return ErrShutdown
	}
	if m.left.Load() {
		return nil
	}
	deadline := time.Now().Add(timeout)
	// 0. Metadata just updated (Draining, say) goes out before the leave,
	//    which stops announcements: peers should see the node drain.
	m.waitAnnounced(time.Now().Add(timeout / 4))
	// 1. Our leave intent, gossiped (and relayed) like a broadcast, so that
	//    peers can tell a leave from a failure: memberlist's own leave is a
	//    "dead" message that its event callbacks do not distinguish.
	//    It also goes straight to a few peers over TCP, which they relay
	//    as if gossiped to them: gossip rounds come late on a starved
	//    machine, and a drained node must not be taken for a failed one.
	//    Receivers drop the second copy (firstSight).
	done := make(chan struct{})
	leave, _ := m.frameBroadcast(kindLeave, "", "", nil)
	m.queue.Queue(&uniqueBcast{msg: leave, notify: done})
	if m.numNodes.Load() > 1 {
		direct, delivered := m.sendToPeers(leave, leaveDirectPeers)
		t := time.NewTimer(timeout / 2)
	wait:
		for {
			select {
			case <-done:
				break wait
			case <-direct:
				if delivered.Load() > 0 {
					break wait // they relay it
				}
				direct = nil // none reached: the broadcast, then
			case <-t.C:
				break wait
			case <-m.stop:
				break wait
			}
		}
		t.Stop()
	}
	m.left.Store(true)
	// 2. memberlist's leave.
	err := m.ml.Leave(time.Until(deadline))
	m.mu.Lock()
	if e := m.members[m.name]; e != nil && e.m.State != StateLeft {
		m.setStateLocked(e, StateLeft, EventLeave)
	}
	m.mu.Unlock()
	if err != nil {
		return fmt.Errorf("gossip: leave: %w", err)
	}
	return nil
}

// leaveDirectPeers is how many peers Leave sends its intent to directly.
// Leave waits for them at most half its timeout; Shutdown waits for every
// send to end, which a peer that drops packets (a partition) makes take up
// to Tuning.TCPTimeout.
const leaveDirectPeers = 3

// sendToPeers sends frame reliably (TCP) to up to n alive peers, an
// arbitrary choice, at once. The channel it returns is closed when every
// send has ended, each bounded by Tuning.TCPTimeout; delivered counts those
// that went through.
func (m *Members) sendToPeers(frame []byte, n int) (ended <-chan struct{}, delivered *atomic.Int32) {
	var peers []memberlist.Node
	m.mu.Lock()
	for name, e := range m.members {
		if len(peers) == n {
			break
		}
		if name != m.name && e.m.State == StateAlive {
			peers = append(peers, e.node)
		}
	}
	m.mu.Unlock()
	end := make(chan struct{})
	delivered = new(atomic.Int32)
	var wg sync.WaitGroup
	wg.Add(len(peers))
	m.wg.Add(len(peers) + 1)
	for i := range peers {
		go func(node *memberlist.Node) {
			defer m.wg.Done()
			defer wg.Done()
			if err := m.ml.SendReliable(node, frame); err != nil {
				m.log.Debug("gossip: leave intent not sent directly", "to", node.Name, "error", err)
				return
			}
			delivered.Add(1)
		}(&peers[i])
	}
	go func() {
		defer m.wg.Done()
		wg.Wait()
		close(end)
	}()
	return end, delivered
}

// Shutdown stops gossip without telling anyone (peers will see this node
// fail unless Leave ran first), closes subscriber channels and waits for this
// package's goroutines. It is safe to call more than once.
func (m *Members) Shutdown() error {
	var err error
	m.shutOnce.Do(func() {
		m.stopping.Store(true)
		m.stopDials()
		// An announcement in flight completes first (gossip still runs):
		// normally within a gossip round or two, at most announceTimeout.
		close(m.annStop)
		<-m.annDone
		err = m.ml.Shutdown()
		m.mu.Lock()
		m.closed = true
		for s := range m.subs {
			close(s.ch)
		}
		m.subs = nil
		for _, e := range m.members {
			if e.timer != nil {
				e.timer.Stop()
			}
		}
		m.mu.Unlock()
		close(m.stop)
		m.wg.Wait()
	})
	return err
}

func (m *Members) isShut() bool {
	select {
	case <-m.stop:
		return true
	default:
		return false
	}
}

// ---- member table (all *Locked functions need m.mu) ----

func (m *Members) emitLocked(kind EventKind, e *entry) {
	if m.closed {
		return
	}
	ev := Event{Kind: kind, Member: e.m}
	for s := range m.subs {
		select {
		case s.ch <- ev:
		default:
			s.dropped++
			m.stats.droppedEvents.Add(1)
		}
	}
}

func (m *Members) setStateLocked(e *entry, st State, kind EventKind) {
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	e.m.State = st
	e.m.Since = time.Now()
	m.recountLocked()
	m.emitLocked(kind, e)
}

func (m *Members) recountLocked() {
	n := 0
	for _, e := range m.members {
		if e.m.State == StateAlive || e.m.State == StateSuspect {
			n++
		}
	}
	m.numNodes.Store(int64(n))
}

func (m *Members) pruneLocked(now time.Time) {
	ret := m.tuning.DeadRetention
	for name, e := range m.members {
		if (e.m.State == StateDead || e.m.State == StateLeft) && !e.m.Local && now.Sub(e.m.Since) > ret {
			delete(m.members, name)
			delete(m.dedup, name)
		}
	}
	for name, in := range m.intents {
		if now.Sub(in.at) > ret {
			delete(m.intents, name)
		}
	}
}

// upsert records an alive node from memberlist. It returns false if the
// metadata does not decode (NotifyAlive filters those out, so this is only
// a safety net).
func (m *Members) upsertLocked(n *memberlist.Node, kind EventKind) {
	meta, boot, err := decodeMeta(n.Name, n.Meta)
	if err != nil {
		m.stats.malformed.Add(1)
		m.log.Warn("ignoring member with undecodable metadata", "member", n.Name, "err", err)
		return
	}
	e := m.members[n.Name]
	if e == nil {
		e = &entry{}
		m.members[n.Name] = e
		kind = EventJoin
	} else if e.m.State == StateDead || e.m.State == StateLeft {
		kind = EventJoin
	}
	if e.boot != boot {
		e.leaving = false
	}
	if in, ok := m.intents[n.Name]; ok && in.boot == boot {
		e.leaving = true
	}
	e.boot = boot
	e.node = *n
	e.node.Addr = append([]byte(nil), n.Addr...)
	e.node.Meta = append([]byte(nil), n.Meta...)
	e.m.Meta = meta
	e.m.Addr = n.Address()
	e.m.Local = n.Name == m.name
	if e.m.Local && m.left.Load() {
		return
	}
	m.setStateLocked(e, StateAlive, kind)
}

// localSuspect is called (through the log bridge) when this node's own probe
// of name failed and memberlist is about to mark it suspect. memberlist has
// no callback for suspicion, and none for a refutation either, so suspicion
// is cleared by a successful probe ack (NotifyPingComplete), by any alive
// update with new meta, or when the longest suspicion memberlist could run
// has passed without the node being declared dead (it was refuted).
func (m *Members) localSuspect(name string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.members[name]
	if e == nil || e.m.Local || e.m.State != StateAlive || m.closed {
		return
	}
	m.setStateLocked(e, StateSuspect, EventUpdate)
	e.suspectGen++
	gen := e.suspectGen
	e.timer = time.AfterFunc(m.maxSuspicion(), func() { m.suspicionExpired(name, gen) })
}

func (m *Members) maxSuspicion() time.Duration {
	n := float64(m.numNodes.Load())
	scale := math.Max(1, math.Log10(math.Max(1, n)))
	min := time.Duration(float64(m.tuning.SuspicionMult) * scale * float64(m.tuning.ProbeInterval))
	return time.Duration(m.tuning.SuspicionMaxTimeoutMult)*min + m.tuning.ProbeInterval
}

func (m *Members) suspicionExpired(name string, gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.members[name]
	if e == nil || e.suspectGen != gen || e.m.State != StateSuspect || m.closed {
		return
	}
	m.setStateLocked(e, StateAlive, EventUpdate)
}

// leaveIntent records that the node name, in its life boot, announced a leave.
func (m *Members) leaveIntent(name string, boot uint64) {
	if name == m.name {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if in, ok := m.intents[name]; ok && in.boot >= boot {
		return
	}
	m.intents[name] = intent{boot: boot, at: time.Now()}
	e := m.members[name]
	if e == nil || e.boot != boot {
		return
	}
	e.leaving = true
	if e.m.State == StateDead {
		// The failure was seen first; the intent says it was a leave.
		m.setStateLocked(e, StateLeft, EventLeave)
	}
}

// ---- memberlist delegates ----

// delegate keeps memberlist's callback methods off Members' exported API.
type delegate struct{ m *Members }

var (
	_ memberlist.Delegate         = (*delegate)(nil)
	_ memberlist.EventDelegate    = (*delegate)(nil)
	_ memberlist.AliveDelegate    = (*delegate)(nil)
	_ memberlist.PingDelegate     = (*delegate)(nil)
	_ memberlist.ConflictDelegate = (*delegate)(nil)
	_ memberlist.MergeDelegate    = (*delegate)(nil)
)

// NotifyConflict is told of a node alive under a known member's name at
// another address. About this node's own name it means that two nodes
// share it (the cluster decides which stays out). About another member's,
// this node is a witness: it logs it and tells that member, which would
// otherwise not hear of it (the newcomer's alive messages stop at the
// nodes that know the name at another address: memberlist relays none).
func (d *delegate) NotifyConflict(existing, other *memberlist.Node) {
	if existing.Name != d.m.name {
		d.m.witnessConflict(existing, other.Address())
		return
	}
	d.m.takenBy(other.Address())
}

// takenBy notes that the node at addr gossips under this node's name.
func (m *Members) takenBy(addr string) {
	if addr == m.addr {
		return
	}
	if m.nameTaken.Swap(&addr) == nil {
		m.log.Error("another node is alive under this node's name: give each node a unique node.name",
			"name", m.name, "other", addr)
	}
}

// witnessConflict logs that a node at addr gossips under the name of
// member existing, and tells existing so (a frame of kindNameTaken), at
// most once in foreignLogEvery for each name.
func (m *Members) witnessConflict(existing *memberlist.Node, addr string) {
	now := time.Now().UnixNano()
	m.mu.Lock()
	if m.conflictTold == nil {
		m.conflictTold = map[string]int64{}
	}
	last, seen := m.conflictTold[existing.Name]
	if seen && now-last < int64(foreignLogEvery) || m.closed {
		m.mu.Unlock()
		return
	}
	if len(m.conflictTold) >= 1024 {
		clear(m.conflictTold) // names of nodes long gone
	}
	m.conflictTold[existing.Name] = now
	m.wg.Add(1)
	m.mu.Unlock()
	m.log.Warn("two nodes gossip under one name: give each node a unique node.name",
		"name", existing.Name, "member", existing.Address(), "other", addr)
	f := appendStr8([]byte{frameVersion, kindNameTaken}, existing.Name)
	f = appendStr8(f, addr)
	node := *existing
	go func() { // memberlist's node lock is held here
		defer m.wg.Done()
		if err := m.ml.SendBestEffort(&node, f); err != nil && !m.isShut() {
			m.log.Debug("could not tell a member its name is taken", "name", node.Name, "err", err)
		}
	}()
}

// Quiet says that the whole cluster is stopping together (meridian dev's
// Ctrl-C): memberlist's warnings and errors about peers going, expected
// from then on, are logged at debug level.
func (m *Members) Quiet() { m.quiet.Store(true) }

// NameTaken returns the address of another node alive under this node's
// name, if gossip has told of one (at any time since the start), or "".
func (m *Members) NameTaken() string {
	if p := m.nameTaken.Load(); p != nil {
		return *p
	}
	return ""
}

func (d *delegate) NodeMeta(limit int) []byte {
	b := *d.m.encMeta.Load()
	if len(b) > limit { // cannot happen: encodeMeta enforces MetaMaxSize
		return nil
	}
	return b
}

// NotifyAlive filters every alive message memberlist receives: a node whose
// metadata does not decode is not admitted (memberlist logs the refusal).
func (d *delegate) NotifyAlive(peer *memberlist.Node) error {
	meta, _, err := decodeMeta(peer.Name, peer.Meta)
	if err != nil {
		d.m.stats.malformed.Add(1)
		return fmt.Errorf("undecodable node metadata (%d bytes): %v", len(peer.Meta), err)
	}
	if err := d.m.sameCluster(peer.Name, meta.ClusterID); err != nil {
		d.m.dropForeign(peer.Name, net.JoinHostPort(peer.Addr.String(), strconv.Itoa(int(peer.Port))))
		return err
	}
	return nil
}

// dropForeign marks a member this node took in before its cluster id was
// known (a new node whose push/pull reached this cluster while it joined
// another) as failed, now that its alive messages say it is of another
// cluster: memberlist ignores them, and its entry would stay alive in
// Members for good, which the leader would keep probing for a seat.
//
// Only that member: one at the address the message gives, which never
// told this node a cluster id. An alive message is taken to here before
// memberlist looks at its incarnation, so a stale or forged one naming a
// member of this cluster (or a node of another cluster that has the same
// name) must not fail it (an outside check failed a healthy member for
// good with one forged datagram).
func (m *Members) dropForeign(name, addr string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.members[name]; e != nil && !e.m.Local && (e.m.State == StateAlive || e.m.State == StateSuspect) &&
		e.m.ClusterID == "" && e.m.Addr == addr {
		m.setStateLocked(e, StateDead, EventFail)
	}
}

// NotifyMerge refuses a join (a push/pull of whole states) with members
// of another cluster, both ways: the joining node's Join fails with the
// reason, and neither side lists the other.
func (d *delegate) NotifyMerge(peers []*memberlist.Node) error {
	for _, p := range peers {
		if meta, _, err := decodeMeta(p.Name, p.Meta); err == nil {
			if err := d.m.sameCluster(p.Name, meta.ClusterID); err != nil {
				return err
			}
		}
	}
	return nil
}

// sameCluster refuses a member whose Raft history is another cluster's:
// both it and this node know their cluster's id, and the ids differ (two
// clusters bootstrapped apart whose gossip met; a node with an old data
// dir). Seated in each other's Raft, their logs would overwrite each
// other's. A node with no id yet (a new one) is taken.
func (m *Members) sameCluster(name, id string) error {
	if id == "" {
		return nil
	}
	ours := m.ClusterID()
	if ours == "" {
		// A node without an id yet (a new one) takes the first it sees
		// in a peer as its own until it learns its real one: given the
		// seeds of two clusters, it must join one, or both leaders seat
		// it, and one may be left without a quorum for good (an outside
		// check saw it).
		m.tentativeID.CompareAndSwap(nil, &id)
		ours = *m.tentativeID.Load()
	}
	if id == ours {
		return nil
	}
	m.stats.foreign.Add(1)
	// A member known to be of this cluster: the message is stale,
	// forged, or another cluster's node of the same name; wiping the
	// member, as the other line advises, would destroy a good node (an
	// outside check got that advice for a forged datagram).
	known := false
	m.mu.Lock()
	if e := m.members[name]; e != nil && e.m.ClusterID == ours {
		known = true
	}
	m.mu.Unlock()
	now, last := time.Now().UnixNano(), m.foreignLogged.Load()
	if now-last >= int64(foreignLogEvery) && m.foreignLogged.CompareAndSwap(last, now) {
		if known {
			m.log.Warn("ignored a gossip message naming a member of this cluster with another cluster's id (stale, forged, or a node of another cluster under the same name)",
				"member", name, "its_cluster_id", id, "cluster_id", ours)
		} else {
			m.log.Error("refused a node of another cluster: its Raft history cannot be merged with this one's (wipe its data dir to make it join this cluster)",
				"refused_node", name, "its_cluster_id", id, "cluster_id", ours)
		}
	}
	return fmt.Errorf("node %s belongs to another cluster (id %s; this one is %s)", name, id, ours)
}

// TentativeID is the cluster id a node without one took from the first
// peer that had one (sameCluster), or "".
func (m *Members) TentativeID() string {
	if p := m.tentativeID.Load(); p != nil {
		return *p
	}
	return ""
}

// foreignLogEvery is how often a refused member of another cluster is
// logged at most.
const foreignLogEvery = 30 * time.Second

// ClusterID is the id of the cluster whose Raft history this node holds,
// as its metadata says ("": not known yet).
func (m *Members) ClusterID() string {
	if p := m.clusterID.Load(); p != nil {
		return *p
	}
	return ""
}

func (d *delegate) NotifyJoin(n *memberlist.Node) {
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	d.m.upsertLocked(n, EventJoin)
}

func (d *delegate) NotifyUpdate(n *memberlist.Node) {
	d.m.mu.Lock()
	defer d.m.mu.Unlock()
	d.m.upsertLocked(n, EventUpdate)
}

func (d *delegate) NotifyLeave(n *memberlist.Node) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	e := m.members[n.Name]
	if e == nil || e.m.State == StateDead || e.m.State == StateLeft {
		return
	}
	if in, ok := m.intents[n.Name]; e.leaving || (ok && in.boot == e.boot) || (e.m.Local && m.left.Load()) {
		m.setStateLocked(e, StateLeft, EventLeave)
	} else {
		m.setStateLocked(e, StateDead, EventFail)
	}
	m.pruneLocked(time.Now())
}

func (d *delegate) AckPayload() []byte { return nil }

func (d *delegate) NotifyPingComplete(other *memberlist.Node, _ time.Duration, _ []byte) {
	m := d.m
	m.mu.Lock()
	defer m.mu.Unlock()
	if e := m.members[other.Name]; e != nil && e.m.State == StateSuspect && !m.closed {
		m.setStateLocked(e, StateAlive, EventUpdate)
	}
}

func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.m.queue.GetBroadcasts(overhead, limit)
}

func (d *delegate) NotifyMsg(b []byte) { d.m.receive(b) }

func (d *delegate) LocalState(join bool) []byte { return d.m.encodeIntents() }

func (d *delegate) MergeRemoteState(buf []byte, join bool) { d.m.mergeIntents(buf) }
