package store

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"

	"github.com/hashicorp/raft"

	"github.com/meridian-gw/meridian/internal/smallfile"
)

// Recovery after the loss of a quorum.
//
// With a majority of the voters gone for good, no leader can be elected
// and no write (a removal of the dead seats included) can commit. As Consul
// does, an operator stops the surviving nodes, writes the voters that are
// left to PeersFile in each one's Raft dir, and starts them: Open replaces
// the Raft configuration with the file's (raft.RecoverCluster, which also
// takes every entry in the local log as committed), removes the file, and
// the survivors elect a leader among themselves. New nodes then join as
// usual.

// PeersFile is the file in DATA_DIR/raft that asks Open for a recovery.
const PeersFile = "peers.json"

// peerEntry is one server of PeersFile: its node name, its cluster (Raft)
// address, and whether it is a non-voter.
type peerEntry struct {
	ID       string `json:"id"`
	Address  string `json:"address"`
	NonVoter bool   `json:"non_voter,omitempty"`
}

// parsePeers reads PeersFile's content: a JSON list of servers that names
// this node (self) and at least one voter.
func parsePeers(b []byte, self string) (raft.Configuration, error) {
	var conf raft.Configuration
	var peers []peerEntry
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&peers); err != nil {
		return conf, fmt.Errorf(`want a JSON list such as [{"id": "n1", "address": "10.0.0.1:7000"}]: %v`, err)
	}
	if dec.More() {
		return conf, errors.New("content after the JSON list")
	}
	// encoding/json matches field names whatever their case: "Address"
	// would override "address" unseen.
	var raw []map[string]json.RawMessage
	json.Unmarshal(b, &raw)
	for i, fields := range raw {
		for k := range fields {
			if k != "id" && k != "address" && k != "non_voter" {
				return conf, fmt.Errorf("entry %d: unknown field %q (id, address, non_voter)", i, k)
			}
		}
	}
	seen := map[string]bool{}
	voters, hasSelf := 0, false
	for i, p := range peers {
		if p.ID == "" {
			return conf, fmt.Errorf("entry %d: id (the node's name) is empty", i)
		}
		if seen[p.ID] {
			return conf, fmt.Errorf("entry %d: id %q listed twice", i, p.ID)
		}
		seen[p.ID] = true
		host, port, err := net.SplitHostPort(p.Address)
		if n, perr := strconv.Atoi(port); err != nil || host == "" || perr != nil || n < 1 || n > 65535 {
			return conf, fmt.Errorf("entry %d (%s): address %q is not host:port (the node's cluster address)", i, p.ID, p.Address)
		}
		sf := raft.Voter
		if p.NonVoter {
			sf = raft.Nonvoter
		} else {
			voters++
		}
		hasSelf = hasSelf || p.ID == self
		conf.Servers = append(conf.Servers, raft.Server{Suffrage: sf, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Address)})
	}
	switch {
	case voters == 0:
		return conf, errors.New("no voter listed")
	case !hasSelf:
		return conf, fmt.Errorf("does not list this node (%s)", self)
	}
	return conf, nil
}

// recoverIfAsked runs the recovery PeersFile in dir asks for, if there is
// one, and removes the file; it reports whether it did. A file that cannot
// be used is an error that names it, and is left where it is.
func recoverIfAsked(rc *raft.Config, dir string, logs raft.LogStore, snaps raft.SnapshotStore, trans raft.Transport, self string, log *slog.Logger) (bool, error) {
	path := filepath.Join(dir, PeersFile)
	b, err := smallfile.Read(path, 1<<20)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("store: %w", err)
	}
	conf, err := parsePeers(b, self)
	if err != nil {
		return false, fmt.Errorf("store: recovery file %s: %v (fix or remove it)", path, err)
	}
	stable, ok := logs.(raft.StableStore)
	if !ok {
		return false, errors.New("store: the log store keeps no stable state")
	}
	f, err := newFSM(dir, nil)
	if err != nil {
		return false, err
	}
	if err := raft.RecoverCluster(rc, f, logs, stable, snaps, trans, conf); err != nil {
		return false, fmt.Errorf("store: recovery from %s: %w (fix or remove it)", path, err)
	}
	if err := os.Remove(path); err != nil {
		return false, fmt.Errorf("store: recovered the Raft configuration from %s but cannot remove it (it would be applied again at the next start): %w", path, err)
	}
	var names []string
	for _, s := range conf.Servers {
		names = append(names, string(s.ID)+"="+string(s.Address))
		if string(s.ID) == self && string(s.Address) != string(trans.LocalAddr()) {
			// Taken as written (the address may be one others reach it
			// by), but most likely a slip.
			log.Warn("cluster: "+PeersFile+" gives this node an address other than its own cluster address; peers will dial that one",
				"listed", s.Address, "own", trans.LocalAddr())
		}
	}
	log.Warn("cluster: Raft configuration replaced from "+PeersFile+" (quorum-loss recovery); the file is removed",
		"servers", names, "applied_index", f.current().Index)
	return true, nil
}
