package store

import (
	"bufio"
	"context"
	"crypto/tls"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/meridian-gw/meridian/cluster/pki"
	"github.com/meridian-gw/meridian/internal/testutil"
)

// dialFrom opens a TCP connection to addr from a chosen loopback address, so
// the refusal in the node's log can be matched to this connection.
func dialFrom(t *testing.T, local, addr string) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(5 * time.Second))
	return c
}

// expectClosed reads from c and fails unless the peer ends the connection.
func expectClosed(t *testing.T, c net.Conn, what string) {
	t.Helper()
	buf := make([]byte, 64)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				t.Fatalf("%s: connection still open (no refusal) after 5s", what)
			}
			return
		}
		if n > 0 && !strings.Contains(what, "plaintext") {
			t.Fatalf("%s: got %d bytes of answer", what, n)
		}
	}
}

func waitLog(t *testing.T, nd *tnode, substrs ...string) {
	t.Helper()
	waitFor(t, 5*time.Second, nd.id+" log with "+strings.Join(substrs, " & "), func() bool {
		for _, line := range strings.Split(nd.logs.String(), "\n") {
			ok := true
			for _, s := range substrs {
				ok = ok && strings.Contains(line, s)
			}
			if ok {
				t.Logf("%s logged: %s", nd.id, line)
				return true
			}
		}
		return false
	})
}

// Peers without a certificate from the cluster CA are refused, and the
// refusal is logged with their address: a plaintext client, a TLS client with
// a certificate from another CA, and a whole node from another CA that the
// leader was told to add (it never receives the log).
func TestUnauthenticatedPeersRefused(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.start()
	ld := c.leader(5 * time.Second)
	if _, err := ld.s.Apply(ctxT(t, 5*time.Second), []byte("v1"), 0); err != nil {
		t.Fatal(err)
	}

	// Plaintext on the TLS cluster port.
	pc := dialFrom(t, "127.0.0.9", ld.addr)
	if _, err := pc.Write([]byte("R plaintext raft attempt\n")); err != nil {
		t.Fatal(err)
	}
	expectClosed(t, pc, "plaintext")
	waitLog(t, ld, "refused connection", "remote="+pc.LocalAddr().String())

	// TLS with a certificate from another CA (the client even accepts the
	// node's certificate): the node refuses it during the handshake, before
	// any request is read.
	otherCA := filepath.Join(t.TempDir(), "other-ca")
	if err := pki.CreateCA(otherCA); err != nil {
		t.Fatal(err)
	}
	foreign := nodeTLS(t, otherCA, "mallory", "127.0.0.8").Clone()
	foreign.VerifyConnection = nil
	// Present the foreign certificate even though the server asks for ones
	// from its own CA (crypto/tls would otherwise send none).
	cert := foreign.Certificates[0]
	foreign.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }
	raw := dialFrom(t, "127.0.0.8", ld.addr)
	tc := tls.Client(raw, foreign)
	if err := tc.Handshake(); err == nil {
		// TLS 1.3: the server's verdict on our certificate comes after.
		fr := &fwdRequest{Op: opApply, Cmd: append([]byte{opSetDocument}, []byte(`{"raw":"ZXZpbA=="}`)...)}
		tc.Write([]byte{connForward})
		writeFrame(tc, fr)
		var resp fwdResponse
		if err := readFrame(bufio.NewReader(tc), &resp); err == nil {
			t.Fatalf("foreign client got a forwarding answer: %+v", resp)
		}
	}
	waitLog(t, ld, "refused connection", "remote="+raw.LocalAddr().String(), "unknown authority")
	if v := ld.s.Current().Version; v != 1 {
		t.Fatalf("version %d after foreign write attempt", v)
	}

	// A node with a certificate from another CA is added as a non-voter: the
	// leader refuses its certificate, it refuses the leader's, and it never
	// gets the document while the cluster keeps committing.
	mal := c.newNode("mallory", "127.0.0.6", otherCA, nil)
	ms, err := Open(mal.config())
	if err != nil {
		t.Fatal(err)
	}
	mal.s = ms
	t.Cleanup(func() { ms.Close() })
	if err := ld.s.AddNonvoter(context.Background(), "mallory", ms.Addr()); err != nil {
		t.Fatal(err)
	}
	f := c.follower(ld)
	if _, err := f.s.Apply(ctxT(t, 5*time.Second), []byte("v2"), 0); err != nil {
		t.Fatal(err)
	}
	c.converge(5*time.Second, 2)
	ldHost, _, _ := net.SplitHostPort(ld.addr)
	waitLog(t, mal, "refused connection", "remote="+ldHost+":") // the leader dials from its own address
	waitLog(t, ld, "not from the cluster CA")
	if v := ms.Current().Version; v != 0 {
		t.Fatalf("foreign node received version %d", v)
	}
	if err := f.s.RemoveServer(context.Background(), "mallory"); err != nil {
		t.Fatal(err)
	}
}

// A store on a data dir already in use fails at once.
func TestDataDirLocked(t *testing.T) {
	c := newCluster(t, 1, nil)
	nd := c.nodes[0]
	c.open(nd)
	cfg := nd.config()
	cfg.BindAddr = nd.ip + ":0"
	if s, err := Open(cfg); err == nil {
		s.Close()
		t.Fatal("second Open on the same data dir succeeded")
	} else if !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second Open: %v", err)
	}
}

// Without TLS the store works (tests, development) and says so in the log.
func TestPlaintextSingleNodeWarns(t *testing.T) {
	c := newCluster(t, 1, func(cfg *Config) { cfg.TLS = nil })
	c.start()
	nd := c.nodes[0]
	waitFor(t, 5*time.Second, "single node leader", func() bool { return nd.s.State() == "Leader" })
	if a, err := nd.s.Apply(ctxT(t, 5*time.Second), []byte("solo"), 0); err != nil || a.Version != 1 {
		t.Fatalf("apply: %+v %v", a, err)
	}
	waitLog(t, nd, "level=WARN", "PLAINTEXT")
}

// The cluster port's dials (Raft, forwarded writes, probes) leave from the
// address the node listens on, not the kernel's pick (127.0.0.1 for every
// loopback peer).
func TestMuxDialsLeaveFromItsListenAddress(t *testing.T) {
	own, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Skipf("no 127.0.0.2 here: %v", err)
	}
	defer own.Close()
	peer, from := testutil.FirstDialFrom(t, "127.0.0.3")
	m := newMux(own, own.Addr(), nil, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := m.probe(ctx, peer); err != nil {
		t.Fatal(err)
	}
	if a := <-from; testutil.FromIP(a) != "127.0.0.2" {
		t.Fatalf("the peer saw the dial from %v; want 127.0.0.2", a)
	}
}

// A certificate of the cluster CA for a name that is no member (in Raft or,
// through PeerKnown, gossip) may ask has_state, as a new node does, and
// nothing else: no document committed, no voter added, no Raft
// connection (an outside check did all three with such a certificate).
func TestCertificateOfANonMemberRefused(t *testing.T) {
	c := newCluster(t, 3, func(cfg *Config) {
		cfg.PeerKnown = func(name string) bool { return name == "n0" || name == "n1" || name == "n2" }
	})
	c.start()
	ld := c.leader(5 * time.Second)
	if _, err := ld.s.Apply(ctxT(t, 5*time.Second), []byte("v1"), 0); err != nil {
		t.Fatal(err)
	}
	evil := nodeTLS(t, c.caDir, "evil", "127.0.0.7").Clone()
	evil.InsecureSkipVerify, evil.VerifyConnection = true, nil
	ask := func(req *fwdRequest) (fwdResponse, error) {
		t.Helper()
		raw := dialFrom(t, "127.0.0.7", ld.addr)
		tc := tls.Client(raw, evil)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		tc.Write([]byte{connForward})
		if err := writeFrame(tc, req); err != nil {
			return fwdResponse{}, err
		}
		var resp fwdResponse
		err := readFrame(bufio.NewReader(tc), &resp)
		return resp, err
	}
	if resp, err := ask(&fwdRequest{Op: opHasState}); err != nil || resp.Code != "" || resp.Index != 1 {
		t.Errorf("has_state: %+v, %v; want an answer (it has state)", resp, err)
	}
	for _, req := range []*fwdRequest{
		{Op: opApply, Cmd: append([]byte{opSetDocument}, []byte(`{"raw":"ZXZpbA=="}`)...)},
		{Op: opAddVoter, ID: "ghost", Addr: "127.0.0.7:1"},
		{Op: opRemoveServer, ID: "n1"},
		{Op: opReadIndex},
		{Op: "no_such_op"},
	} {
		if resp, err := ask(req); err != nil || resp.Code != codeError {
			t.Errorf("%s from a non-member: %+v, %v; want it refused", req.Op, resp, err)
		}
	}
	waitLog(t, ld, "refused a forwarded request", "peer=evil")
	// A frame over a few KiB from it is refused from its length, unread.
	{
		raw := dialFrom(t, "127.0.0.7", ld.addr)
		tc := tls.Client(raw, evil)
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		tc.Write([]byte{connForward, 0, 0x10, 0, 0}) // 1 MiB declared
		tc.Write(make([]byte, 8<<10))
		expectClosed(t, tc, "a 1 MiB frame from a non-member")
	}
	// Raft: the connection is closed unread.
	raw := dialFrom(t, "127.0.0.7", ld.addr)
	tc := tls.Client(raw, evil)
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte{connRaft})
	expectClosed(t, tc, "a Raft connection from a non-member")
	waitLog(t, ld, "refused a Raft connection", "peer=evil")
	servers, _ := ld.s.Servers()
	if v := ld.s.Current().Version; v != 1 || len(servers) != 3 {
		t.Errorf("version %d, servers %+v; want 1 and the three members", v, servers)
	}
}
