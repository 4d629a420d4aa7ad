package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"go.etcd.io/bbolt"
)

// The keys hashicorp/raft keeps in its stable store.
var stableUint64Keys, stableKeys = []string{"CurrentTerm", "LastVoteTerm"}, []string{"LastVoteCand"}

// migrateWAL moves the Raft log and stable store an earlier version kept
// in DATA_DIR/raft/wal (raft-wal) into raft.db, once, before raft.db is
// opened: copied into raft.db.migrating, which then replaces raft.db, and
// the directory renamed wal.migrated (or wal.migrated-N when one is there
// already: a rollback to an earlier version, which then wrote a newer log
// there). A log that cannot be read stops the start with what to do, and
// leaves raft.db as it was.
func migrateWAL(raftDir string, log *slog.Logger) error {
	dir := filepath.Join(raftDir, "wal")
	if _, err := os.Stat(filepath.Join(dir, "wal-meta.db")); errors.Is(err, os.ErrNotExist) {
		os.Remove(dir) // an empty directory of an earlier version, if any
		return nil
	} else if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	fail := func(err error) error {
		return fmt.Errorf("store: the Raft log of an earlier version in %s cannot be read (%w): move that directory away and start the node again; it joins as a new member (in a cluster that has lost its quorum, see peers.json in the README)", dir, err)
	}
	tmp := filepath.Join(raftDir, "raft.db.migrating")
	os.Remove(tmp) // a migration cut short before
	to, err := raftboltdb.New(raftboltdb.Options{Path: tmp, BoltOptions: &bbolt.Options{Timeout: time.Second}})
	if err != nil {
		return fmt.Errorf("store: %w", err)
	}
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(dir, wal.WithMetaStore(meta))
	if err == nil {
		err = copyRaftState(w, to, to)
		w.Close()
	}
	meta.Close()
	if cerr := to.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fail(err)
	}
	// A raft.db already there (a rollback to the earlier version wrote
	// the raft/wal after it) is replaced only by a log that is not behind
	// it: a higher current term, or the same and a later last entry. A
	// node must never lose the term, vote and entries it persisted (Raft
	// 5): an earlier version that never reached a quorum leaves a log
	// empty and at term 0. The one not taken is kept aside either way.
	db := filepath.Join(raftDir, "raft.db")
	if _, err := os.Stat(db); err == nil {
		newer, err := notBehind(tmp, db)
		if err != nil {
			os.Remove(tmp)
			return fmt.Errorf("store: comparing the logs in %s and %s: %w", dir, db, err)
		}
		if !newer {
			os.Rename(tmp, aside(filepath.Join(raftDir, "raft.db.from-wal")))
			os.Rename(dir, aside(dir+".migrated"))
			log.Warn("cluster: an earlier version's Raft log was found behind raft.db (a rollback that did not catch up): raft.db kept, the other set aside",
				"dir", raftDir)
			return nil
		}
		if err := os.Rename(db, aside(db+".replaced")); err != nil {
			return fmt.Errorf("store: %w", err)
		}
	}
	if err := os.Rename(tmp, db); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	kept := aside(dir + ".migrated")
	if err := os.Rename(dir, kept); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	log.Info("cluster: the Raft log of an earlier version moved to raft.db", "kept", kept)
	return nil
}

// aside returns name, or name-N for the first N from 2 that is free.
func aside(name string) string {
	kept := name
	for i := 2; ; i++ {
		if _, err := os.Stat(kept); errors.Is(err, os.ErrNotExist) {
			return kept
		}
		kept = fmt.Sprintf("%s-%d", name, i)
	}
}

// notBehind reports whether the Raft state in the store at path a is not
// behind the one at b: a higher current term, or the same term and a last
// entry at least as late (by term, then index).
func notBehind(a, b string) (bool, error) {
	type state struct{ term, lastTerm, lastIndex uint64 }
	read := func(path string) (state, error) {
		s, err := raftboltdb.New(raftboltdb.Options{Path: path, BoltOptions: &bbolt.Options{Timeout: time.Second, ReadOnly: true}})
		if err != nil {
			return state{}, err
		}
		defer s.Close()
		var st state
		if st.term, err = s.GetUint64([]byte("CurrentTerm")); err != nil && !errors.Is(err, raftboltdb.ErrKeyNotFound) {
			return state{}, err
		}
		if st.lastIndex, err = s.LastIndex(); err != nil {
			return state{}, err
		}
		if st.lastIndex > 0 {
			var l raft.Log
			if err := s.GetLog(st.lastIndex, &l); err != nil {
				return state{}, err
			}
			st.lastTerm = l.Term
		}
		return st, nil
	}
	sa, err := read(a)
	if err != nil {
		return false, err
	}
	sb, err := read(b)
	if err != nil {
		return false, err
	}
	if sa.term != sb.term {
		return sa.term > sb.term, nil
	}
	if sa.lastTerm != sb.lastTerm {
		return sa.lastTerm > sb.lastTerm, nil
	}
	return sa.lastIndex >= sb.lastIndex, nil
}

// copyRaftState copies every log entry of from, and its stable state, into
// to and stable.
func copyRaftState(from *wal.WAL, to raft.LogStore, stable raft.StableStore) error {
	first, err := from.FirstIndex()
	if err != nil {
		return err
	}
	last, err := from.LastIndex()
	if err != nil {
		return err
	}
	const batch = 256
	logs := make([]*raft.Log, 0, batch)
	for i := first; i != 0 && i <= last; i++ {
		l := new(raft.Log)
		if err := from.GetLog(i, l); err != nil {
			return fmt.Errorf("entry %d: %w", i, err)
		}
		if logs = append(logs, l); len(logs) == batch || i == last {
			if err := to.StoreLogs(logs); err != nil {
				return err
			}
			logs = logs[:0]
		}
	}
	for _, k := range stableUint64Keys {
		v, err := from.GetUint64([]byte(k))
		if err != nil {
			return err
		}
		if err := stable.SetUint64([]byte(k), v); err != nil {
			return err
		}
	}
	for _, k := range stableKeys {
		v, err := from.Get([]byte(k))
		if err != nil {
			return err
		}
		if len(v) == 0 {
			continue // never set
		}
		if err := stable.Set([]byte(k), v); err != nil {
			return err
		}
	}
	return nil
}
