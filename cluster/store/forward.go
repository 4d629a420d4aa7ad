package store

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"strings"
	"time"

	"github.com/hashicorp/raft"
)

// Forwarding protocol: on a connection opened with the 'F' kind byte, the
// follower sends one request frame and the leader answers with one response
// frame (4-byte big-endian length, then JSON). The follower opens a fresh
// connection per request: a failed dial is then always safe to retry, and
// anything that fails after the request was sent is reported as
// ErrUnknownOutcome, never silently retried (which could apply a write twice).

const (
	opApply        = "apply"
	opAddVoter     = "add_voter"
	opAddNonvoter  = "add_nonvoter"
	opRemoveServer = "remove_server"
	opDemoteVoter  = "demote_voter" // the leader's own reconcile only: not forwarded by older versions
	// opReadIndex asks the leader for the index of the last entry it has
	// applied, after a barrier through the log has confirmed with a quorum
	// that it leads and that every earlier entry is applied: a node that
	// has applied that index has everything committed before it asked.
	opReadIndex = "read_index"
	// opHasState asks any node (not only the leader) whether it has Raft
	// state: a node about to bootstrap asks its peers first (HasStatePeer).
	opHasState = "has_state"
)

// Error codes on the wire.
const (
	codeNotLeader = "not_leader"
	codeConflict  = "conflict"
	codeUnknown   = "unknown_outcome"
	codeClosed    = "closed"
	codeError     = "error"
)

const maxFrame = 64 << 20

type fwdRequest struct {
	Op        string `json:"op"`
	Cmd       []byte `json:"cmd,omitempty"`
	ID        string `json:"id,omitempty"`
	Addr      string `json:"addr,omitempty"`
	TimeoutMs int64  `json:"timeout_ms,omitempty"`
	From      string `json:"from,omitempty"`
}

type fwdResponse struct {
	Index   uint64 `json:"index,omitempty"`
	Version uint64 `json:"version,omitempty"`
	Hash    string `json:"hash,omitempty"`
	Code    string `json:"code,omitempty"`
	Msg     string `json:"msg,omitempty"`
}

// errRetry marks an attempt that certainly changed nothing (no leader, not the
// leader, leader unreachable): submit tries again until ctx ends.
type errRetry struct{ err error }

func (e errRetry) Error() string { return e.err.Error() }
func (e errRetry) Unwrap() error { return e.err }

// submit runs a leader-only request on the leader, locally or forwarded,
// retrying while there is no reachable leader.
func (s *Store) submit(ctx context.Context, req *fwdRequest) (fwdResponse, error) {
	backoff := 5 * time.Millisecond
	var last error
	for {
		select {
		case <-s.closing:
			return fwdResponse{}, ErrClosed
		default:
		}
		if ctx.Err() != nil {
			err := context.Cause(ctx) // the caller's reason, if it gave one
			if last == nil {
				last = err
			}
			return fwdResponse{}, fmt.Errorf("%w: %v (last attempt: %v)", ErrNoLeader, err, last)
		}
		var resp fwdResponse
		var err error
		if s.raft.State() == raft.Leader {
			resp, err = s.execLocal(ctx, req)
		} else if _, addr := s.Leader(); addr == "" {
			err = errRetry{errors.New("no leader known")}
		} else if addr == s.addr {
			err = errRetry{errors.New("stale leader information points at this node")}
		} else {
			resp, err = s.forward(ctx, addr, req)
		}
		var r errRetry
		if !errors.As(err, &r) {
			return resp, err
		}
		last = r.err
		t := time.NewTimer(backoff)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		case <-s.closing:
			t.Stop()
		}
		if backoff *= 2; backoff > 100*time.Millisecond {
			backoff = 100 * time.Millisecond
		}
	}
}

// execLocal runs req on this node's Raft, which believes it is the leader.
func (s *Store) execLocal(ctx context.Context, req *fwdRequest) (fwdResponse, error) {
	var timeout time.Duration // enqueue timeout; 0 = none
	if dl, ok := ctx.Deadline(); ok {
		if timeout = time.Until(dl); timeout <= 0 {
			return fwdResponse{}, ctx.Err()
		}
	}
	var f raft.Future
	switch req.Op {
	case opReadIndex:
		f = s.raft.Barrier(timeout)
	case opApply:
		f = s.raft.Apply(req.Cmd, timeout)
	case opAddVoter:
		f = s.raft.AddVoter(raft.ServerID(req.ID), raft.ServerAddress(req.Addr), 0, timeout)
	case opAddNonvoter:
		f = s.raft.AddNonvoter(raft.ServerID(req.ID), raft.ServerAddress(req.Addr), 0, timeout)
	case opRemoveServer:
		f = s.raft.RemoveServer(raft.ServerID(req.ID), 0, timeout)
	case opDemoteVoter:
		f = s.raft.DemoteVoter(raft.ServerID(req.ID), 0, timeout)
	default:
		return fwdResponse{}, fmt.Errorf("store: unknown forwarded operation %q", req.Op)
	}
	releaseOnShutdown(f, s.raftDown)
	done := make(chan error, 1)
	go func() { done <- f.Error() }()
	var err error
	select {
	case err = <-done:
	case <-ctx.Done():
		return fwdResponse{}, unknownOutcome("not committed before the deadline (%v); it may still be", ctx.Err())
	}
	switch {
	case err == nil:
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		// Never entered the log (a leader handing over, as a draining
		// one does, refuses new entries at once): the next leader
		// takes it.
		return fwdResponse{}, errRetry{err}
	case errors.Is(err, raft.ErrLeadershipLost):
		return fwdResponse{}, unknownOutcome("leadership lost while committing; the write may still be applied later")
	case errors.Is(err, raft.ErrRaftShutdown):
		return fwdResponse{}, ErrClosed
	default:
		return fwdResponse{}, fmt.Errorf("store: %s: %w", req.Op, err)
	}
	if req.Op == opReadIndex {
		// The barrier's entry is applied, and every one before it: what
		// the state machine has now is at least what was committed when
		// the request came.
		return fwdResponse{Index: s.fsm.current().Index}, nil
	}
	resp := fwdResponse{Index: f.(raft.IndexFuture).Index()}
	if af, ok := f.(raft.ApplyFuture); ok && req.Op == opApply {
		r, _ := af.Response().(fsmResult)
		resp.Version, resp.Hash = r.Version, r.Hash
		if r.Err != nil {
			return resp, r.Err
		}
	}
	return resp, nil
}

// ErrCannotTell: the peer answered, but not the question (a version that
// does not know it), or refused this node over mutual TLS (another CA's
// certificate, another cluster): it says nothing of a state this cluster
// could have.
var ErrCannotTell = errors.New("the peer cannot tell")

// tlsRefusal reports whether err is a TLS refusal, by the peer (its alert:
// it does not take our certificate, or our cluster) or by us (its
// certificate), rather than silence or a connection that ended.
func tlsRefusal(err error) bool {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "remote error" {
		return true
	}
	var ve *tls.CertificateVerificationError
	var rh tls.RecordHeaderError
	var ua x509.UnknownAuthorityError
	var ci x509.CertificateInvalidError
	var he x509.HostnameError
	return errors.As(err, &ve) || errors.As(err, &rh) || errors.As(err, &ua) || errors.As(err, &ci) || errors.As(err, &he)
}

// PeerHasState asks the node at addr (its cluster address) whether it has
// Raft state, as a node about to bootstrap a cluster asks its peers
// first (Consul's servers ask each other for their Raft peers): a peer
// with state belongs to a cluster that exists, which a new configuration
// would fork. ErrCannotTell says the peer answered without knowing the
// question; any other error, that it did not answer (unreachable, or
// stalled): neither says anything of its state.
func (s *Store) PeerHasState(ctx context.Context, addr string) (has bool, err error) {
	defer func() {
		if err != nil && tlsRefusal(err) {
			err = fmt.Errorf("%w: %w", ErrCannotTell, err)
		}
	}()
	conn, err := s.mux.dial(ctx, addr, connForward)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if err := writeFrame(conn, &fwdRequest{Op: opHasState, From: s.cfg.ID}); err != nil {
		return false, err
	}
	var resp fwdResponse
	if err := readFrame(bufio.NewReader(conn), &resp); err != nil {
		return false, err
	}
	if resp.Code != "" {
		return false, fmt.Errorf("store: %s: %s: %w", addr, resp.Msg, ErrCannotTell)
	}
	return resp.Index == 1, nil
}

// forward sends req to the leader at addr.
func (s *Store) forward(ctx context.Context, addr string, req *fwdRequest) (fwdResponse, error) {
	dctx, cancel := context.WithTimeout(ctx, s.cfg.TransportTimeout)
	stopWatch := s.cancelIfLeaderMoves(dctx, cancel, addr)
	conn, err := s.mux.dial(dctx, addr, connForward)
	stopWatch()
	cancel()
	if err != nil {
		if errors.Is(err, errClosed) {
			return fwdResponse{}, ErrClosed
		}
		return fwdResponse{}, errRetry{fmt.Errorf("dial leader %s: %w", addr, err)}
	}
	defer conn.Close()
	// Close the connection if ctx ends or the store closes mid-request.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	r := *req
	r.From = s.cfg.ID
	if dl, ok := ctx.Deadline(); ok {
		r.TimeoutMs = max(time.Until(dl).Milliseconds(), 1)
		conn.SetDeadline(dl)
	}
	if err := writeFrame(conn, &r); err != nil {
		return fwdResponse{}, s.lostResult(ctx, addr, err)
	}
	var resp fwdResponse
	if err := readFrame(bufio.NewReader(conn), &resp); err != nil {
		return fwdResponse{}, s.lostResult(ctx, addr, err)
	}
	switch resp.Code {
	case "":
		return resp, nil
	case codeNotLeader:
		return resp, errRetry{fmt.Errorf("%s: %w", addr, ErrNotLeader)}
	case codeConflict:
		return resp, fmt.Errorf("%w: %s", ErrVersionConflict, resp.Msg)
	case codeUnknown:
		return resp, unknownOutcome("leader %s: %s", addr, strings.TrimPrefix(resp.Msg, (&outcomeError{}).Error()))
	case codeClosed:
		return resp, fmt.Errorf("%w: leader %s is shutting down: %s", ErrUnknownOutcome, addr, resp.Msg)
	default:
		return resp, fmt.Errorf("store: leader %s: %s", addr, resp.Msg)
	}
}

// cancelIfLeaderMoves cancels a dial to the leader at addr as soon as this
// node learns of another leader (or becomes it). A leader cut off by a
// partition does not refuse connections, it just stops answering, so
// without this a write would wait out the whole TransportTimeout on the old
// leader although the majority elected a new one long before. Only the dial
// is abandoned: nothing was sent yet, so retrying is safe.
func (s *Store) cancelIfLeaderMoves(ctx context.Context, cancel context.CancelFunc, addr string) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if _, a := s.Leader(); a != "" && a != addr {
				cancel()
				return
			}
		}
	}()
	return func() { close(done) }
}

func (s *Store) lostResult(ctx context.Context, addr string, err error) error {
	if ctx.Err() != nil {
		return unknownOutcome("no answer from leader %s before the deadline (%v)", addr, ctx.Err())
	}
	return fmt.Errorf("%w: connection to leader %s failed mid-request: %v", ErrUnknownOutcome, addr, err)
}

// serveForward answers forwarded requests on conn (runs on a mux goroutine).
// peer is the node its certificate names ("" without TLS).
func (s *Store) serveForward(conn net.Conn, peer string) {
	defer conn.Close()
	br := bufio.NewReader(conn)
	for {
		// A client writes its request at once (and dials one
		// connection per request): one that does not is not kept (an
		// outside check held 50 idle ones).
		conn.SetReadDeadline(time.Now().Add(forwardReadTimeout))
		// A peer that is no member may only ask has_state, a few
		// bytes: its frames are refused past nonMemberFrame before they
		// are read (an outside check had one send 60 MiB frames, each
		// read whole before it was refused: 500 MB).
		member := s.peerAllowed(peer)
		limit := uint32(maxFrame)
		if !member {
			limit = nonMemberFrame
		}
		var req fwdRequest
		if err := readFrameLimit(br, &req, limit); err != nil {
			if !errors.Is(err, io.EOF) {
				s.log.Debug("cluster: forward connection ended", "remote", conn.RemoteAddr().String(), "error", err)
			}
			return
		}
		conn.SetReadDeadline(time.Time{})
		resp := s.forwardAllowed(&req, peer, member, conn.RemoteAddr().String())
		if resp.Code == "" {
			resp = s.handleForward(&req)
		}
		if err := writeFrame(conn, &resp); err != nil {
			return
		}
	}
}

// forwardReadTimeout bounds the wait for a forwarded request's frame.
const forwardReadTimeout = 30 * time.Second

// forwardAllowed refuses what a peer may not ask (an empty response: it
// may). has_state is anyone's with a certificate of the cluster CA (a new
// node asks before it is a member); the rest only a member's (Raft's
// configuration, or gossip): an outside check committed documents and
// added an unreachable voter with a certificate for a name no node had.
func (s *Store) forwardAllowed(req *fwdRequest, peer string, member bool, remote string) fwdResponse {
	refuse := func(why string) fwdResponse {
		if ok, held := s.mux.nonMemberLog.Allow(); ok {
			s.log.Warn("cluster: refused a forwarded request", "op", req.Op, "peer", peer, "remote", remote, "why", why, "held_back", held)
		}
		return fwdResponse{Code: codeError, Msg: why}
	}
	switch req.Op {
	case opHasState:
		return fwdResponse{}
	case opApply, opReadIndex, opRemoveServer, opAddVoter, opAddNonvoter, opDemoteVoter:
	default:
		return refuse("unknown operation")
	}
	if !member {
		return refuse("the certificate names no node of this cluster (in Raft or gossip)")
	}
	return fwdResponse{}
}

func (s *Store) handleForward(req *fwdRequest) fwdResponse {
	if req.Op == opHasState {
		if s.HasState() {
			return fwdResponse{Index: 1}
		}
		return fwdResponse{}
	}
	if s.raft.State() != raft.Leader {
		return fwdResponse{Code: codeNotLeader, Msg: "not the leader"}
	}
	timeout := time.Duration(req.TimeoutMs) * time.Millisecond
	if timeout <= 0 || timeout > membershipTimeout {
		timeout = membershipTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-s.closing:
			cancel()
		case <-ctx.Done():
		}
	}()
	resp, err := s.execLocal(ctx, req)
	var r errRetry
	switch {
	case err == nil:
	case errors.As(err, &r):
		resp.Code, resp.Msg = codeNotLeader, err.Error()
	case errors.Is(err, ErrVersionConflict):
		resp.Code, resp.Msg = codeConflict, trimPrefix(err, ErrVersionConflict)
	case errors.Is(err, ErrUnknownOutcome):
		resp.Code, resp.Msg = codeUnknown, err.Error()
	case errors.Is(err, ErrClosed):
		resp.Code, resp.Msg = codeClosed, err.Error()
	default:
		resp.Code, resp.Msg = codeError, err.Error()
	}
	if err != nil {
		s.log.Debug("cluster: forwarded request failed", "op", req.Op, "from", req.From, "error", err)
	}
	return resp
}

func trimPrefix(err, prefix error) string {
	m, p := err.Error(), prefix.Error()+": "
	if len(m) > len(p) && m[:len(p)] == p {
		return m[len(p):]
	}
	return m
}

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	buf := make([]byte, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	copy(buf[4:], b)
	_, err = w.Write(buf)
	return err
}

func readFrame(r io.Reader, v any) error { return readFrameLimit(r, v, maxFrame) }

// nonMemberFrame bounds a frame from a peer that is no member.
const nonMemberFrame = 4 << 10

func readFrameLimit(r io.Reader, v any, limit uint32) error {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n > limit {
		return fmt.Errorf("frame of %d bytes exceeds limit (%d)", n, limit)
	}
	// Read as it comes, not allocated whole from the length a peer
	// declares (an outside check: four connections declaring 64 MiB
	// each took 250 MB before sending it).
	b, err := io.ReadAll(io.LimitReader(r, int64(n)))
	if err != nil {
		return err
	}
	if len(b) < int(n) {
		return io.ErrUnexpectedEOF
	}
	return json.Unmarshal(b, v)
}

// releaseOnShutdown makes f.Error() return raft.ErrRaftShutdown once down is
// closed, if raft has not answered f by then.
//
// hashicorp/raft drops some futures at Shutdown without answering them
// (hashicorp/raft#498, open): entries committed but still queued for the FSM
// when the FSM goroutine exits. Their Error() then blocks forever, and so would
// the goroutine execLocal starts for each write. Raft's futures already wait
// on an exported ShutdownCh field, which raft sets only for its internal
// snapshot futures; setting it here, before anyone waits on f, makes ours
// wait on the store's shutdown as well. The field lives in an unexported
// embedded struct, so it is reached by reflection; if a future raft version
// renames it, TestReleaseOnShutdownReachesRaftFutures fails.
func releaseOnShutdown(f raft.Future, down chan struct{}) bool {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return false // an errorFuture: answered already
	}
	fld := v.Elem().FieldByName("ShutdownCh")
	if !fld.IsValid() || !fld.CanSet() || fld.Type() != reflect.TypeOf(down) {
		return false
	}
	if !fld.IsNil() {
		return true // raft set its own
	}
	fld.Set(reflect.ValueOf(down))
	return true
}

// outcomeError is a write whose result was lost with its leader: it is
// ErrUnknownOutcome, and ErrNoLeader for those that wait for a leader and
// try again (a lock's CAS), but says only what happened (it read "no
// cluster leader reachable" where the cluster had one).
type outcomeError struct{ msg string }

func (e *outcomeError) Error() string { return "store: write outcome unknown: " + e.msg }

func (e *outcomeError) Is(target error) bool {
	return target == ErrUnknownOutcome || target == ErrNoLeader
}

func unknownOutcome(format string, args ...any) error {
	return &outcomeError{msg: fmt.Sprintf(format, args...)}
}
