package node

import (
	"context"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"strconv"
	"time"

	"github.com/quic-go/quic-go"
)

// Cluster-wide secrets. One random master secret lives in Raft (created
// once by the first leader); every node derives the same keys from it:
//   - TLS session ticket keys, rotated every ticketEpoch (the current
//     epoch's key encrypts, the previous two still decrypt), so a client
//     that lands on another node of an anycast PoP resumes its session;
//   - QUIC stateless reset and token keys, so such a client is reset
//     cleanly or keeps its address-validation token.
const (
	secretKey   = "secrets/master"
	ticketEpoch = 12 * time.Hour
)

// clusterMaster returns the master secret, creating it if this node leads
// and there is none yet. ok is false while it is not known.
func (n *Node) clusterMaster() ([]byte, bool) {
	if e, ok := n.cluster.Store.KVGet(secretKey); ok && len(e.Value) == 32 {
		return e.Value, true
	}
	if n.cluster.Store.State() != "Leader" {
		return nil, false
	}
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		return nil, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	// Create-only: if another leader made one first, ours is refused and
	// theirs is read next time.
	if _, err := n.cluster.Store.KVPutCAS(ctx, secretKey, secret, 0); err != nil {
		return nil, false
	}
	n.log.Info("created the cluster's master secret for TLS ticket and QUIC keys")
	return secret, true
}

func derive(master []byte, info string) [32]byte {
	var out [32]byte
	k, err := hkdf.Key(sha256.New, master, nil, info, 32)
	if err != nil {
		panic("hkdf: " + err.Error()) // only for lengths over 255*32
	}
	copy(out[:], k)
	return out
}

// ticketKeys are the session ticket keys at time now: this epoch's first.
func ticketKeys(master []byte, now time.Time) [][32]byte {
	e := now.Unix() / int64(ticketEpoch/time.Second)
	keys := make([][32]byte, 3)
	for i := range keys {
		keys[i] = derive(master, "meridian tls session ticket key "+strconv.FormatInt(e-int64(i), 10))
	}
	return keys
}

// quicKeys are the QUIC stateless reset and token keys.
func quicKeys(master []byte) (*quic.StatelessResetKey, *quic.TokenGeneratorKey) {
	r := quic.StatelessResetKey(derive(master, "meridian quic stateless reset key"))
	t := quic.TokenGeneratorKey(derive(master, "meridian quic token key"))
	return &r, &t
}

// syncTicketKeys keeps the HTTPS listener's session ticket keys in step
// with the cluster's, checking every few seconds until the master secret
// is known and then at each rotation.
func (n *Node) syncTicketKeys() {
	defer n.wg.Done()
	var master []byte
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var last int64 = -1
	for {
		if master == nil {
			if m, ok := n.clusterMaster(); ok {
				master = m
				t.Reset(time.Minute)
			}
		}
		if master != nil {
			if e := time.Now().Unix() / int64(ticketEpoch/time.Second); e != last {
				n.tlsSrv.SetSessionTicketKeys(ticketKeys(master, time.Now()))
				last = e
			}
		}
		select {
		case <-n.stopping:
			return
		case <-t.C:
		}
	}
}
