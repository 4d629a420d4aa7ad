package store

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
)

func entries(from, to, term uint64, data string) []*raft.Log {
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, &raft.Log{Index: i, Term: term, Type: raft.LogCommand, Data: []byte(data)})
	}
	return logs
}

// The log's tail is truncated whenever a follower's uncommitted entries
// are replaced by a new leader's ("clearing log suffix"), an ordinary
// event; the log must still open and read afterwards. raft-wal, the store
// before, marked the segment sealed without its index at that moment and
// could not read its log again: the node never started again (an outside
// check lost two nodes so).
func TestLogSurvivesTailTruncation(t *testing.T) {
	dir := t.TempDir()
	ls, err := openLogStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := ls.StoreLogs(entries(1, 10, 1, "old")); err != nil {
		t.Fatal(err)
	}
	if err := ls.DeleteRange(9, 10); err != nil { // the suffix a new leader replaces
		t.Fatal(err)
	}
	if err := ls.StoreLogs(entries(9, 12, 2, "new")); err != nil {
		t.Fatal(err)
	}
	ls.Close()
	ls, err = openLogStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	for _, i := range []uint64{1, 8, 9, 12} {
		var l raft.Log
		if err := ls.GetLog(i, &l); err != nil {
			t.Fatalf("entry %d after a restart: %v", i, err)
		}
		if want := map[bool]string{true: "new", false: "old"}[i >= 9]; string(l.Data) != want {
			t.Errorf("entry %d: %q; want %q", i, l.Data, want)
		}
	}
}

// A data dir of an earlier version (raft-wal in raft/wal) is moved into the
// new store once, its entries and stable state whole; a log it cannot read
// stops the start with what to do and leaves raft.db as it was; after a
// rollback to the earlier version (which wrote a new raft/wal) it is moved
// again, the newer log replacing raft.db.
func TestMigrateWAL(t *testing.T) {
	discard := slog.New(slog.DiscardHandler)
	writeWAL := func(raftDir string, last uint64, term uint64) {
		t.Helper()
		walDir := filepath.Join(raftDir, "wal")
		os.MkdirAll(walDir, 0o700)
		meta := &metadb.BoltMetaDB{}
		w, err := wal.Open(walDir, wal.WithMetaStore(meta))
		if err != nil {
			t.Fatal(err)
		}
		if err := w.StoreLogs(entries(1, last, term, "entry")); err != nil {
			t.Fatal(err)
		}
		w.SetUint64([]byte("CurrentTerm"), term+4)
		w.SetUint64([]byte("LastVoteTerm"), term+3)
		w.Set([]byte("LastVoteCand"), []byte("n2"))
		w.Close()
		meta.Close()
	}
	check := func(raftDir string, last, term uint64) {
		t.Helper()
		ls, err := openLogStore(raftDir)
		if err != nil {
			t.Fatal(err)
		}
		defer ls.Close()
		if first, _ := ls.FirstIndex(); first != 1 {
			t.Errorf("first index %d; want 1", first)
		}
		if got, _ := ls.LastIndex(); got != last {
			t.Errorf("last index %d; want %d", got, last)
		}
		var l raft.Log
		if err := ls.GetLog(last/2+1, &l); err != nil || l.Term != term || string(l.Data) != "entry" {
			t.Errorf("entry %d: %+v, %v", last/2+1, l, err)
		}
		if v, _ := ls.GetUint64([]byte("CurrentTerm")); v != term+4 {
			t.Errorf("CurrentTerm %d; want %d", v, term+4)
		}
		if v, _ := ls.GetUint64([]byte("LastVoteTerm")); v != term+3 {
			t.Errorf("LastVoteTerm %d; want %d", v, term+3)
		}
		if v, _ := ls.Get([]byte("LastVoteCand")); !bytes.Equal(v, []byte("n2")) {
			t.Errorf("LastVoteCand %q; want n2", v)
		}
	}
	raftDir := t.TempDir()
	writeWAL(raftDir, 600, 3)
	if err := migrateWAL(raftDir, discard); err != nil {
		t.Fatal(err)
	}
	check(raftDir, 600, 3)
	if _, err := os.Stat(filepath.Join(raftDir, "wal.migrated")); err != nil {
		t.Errorf("the old log is not kept aside: %v", err)
	}
	// Once only: nothing to move the next time.
	if err := migrateWAL(raftDir, discard); err != nil {
		t.Fatal(err)
	}
	check(raftDir, 600, 3)
	// A rollback wrote a newer log there: it replaces raft.db, kept aside
	// under another name.
	writeWAL(raftDir, 700, 5)
	if err := migrateWAL(raftDir, discard); err != nil {
		t.Fatal(err)
	}
	check(raftDir, 700, 5)
	if _, err := os.Stat(filepath.Join(raftDir, "wal.migrated-2")); err != nil {
		t.Errorf("the second old log is not kept aside: %v", err)
	}
	if _, err := os.Stat(filepath.Join(raftDir, "raft.db.replaced")); err != nil {
		t.Errorf("the replaced raft.db is not kept aside: %v", err)
	}
	// A rollback that never caught up (its log behind raft.db: here at
	// a lower term) does not replace raft.db: a node never loses the
	// term, vote and entries it persisted.
	writeWAL(raftDir, 5, 1)
	if err := migrateWAL(raftDir, discard); err != nil {
		t.Fatal(err)
	}
	check(raftDir, 700, 5)
	for _, kept := range []string{"wal.migrated-3", "raft.db.from-wal"} {
		if _, err := os.Stat(filepath.Join(raftDir, kept)); err != nil {
			t.Errorf("%s not kept aside: %v", kept, err)
		}
	}
	if _, err := os.Stat(filepath.Join(raftDir, "wal")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the raft/wal behind raft.db is still there (it would be compared again at every start): %v", err)
	}

	// A log of an earlier version that cannot be read: raft.db untouched.
	broken := t.TempDir()
	writeWAL(broken, 10, 1)
	os.Rename(filepath.Join(broken, "wal"), filepath.Join(broken, "keep"))
	if err := migrateWAL(broken, discard); err != nil { // nothing to move
		t.Fatal(err)
	}
	os.Rename(filepath.Join(broken, "keep"), filepath.Join(broken, "wal"))
	if err := migrateWAL(broken, discard); err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(filepath.Join(broken, "wal"), 0o700)
	os.WriteFile(filepath.Join(broken, "wal", "wal-meta.db"), []byte("not a bolt file"), 0o600)
	err := migrateWAL(broken, discard)
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("move that directory away")) {
		t.Errorf("an unreadable old log: %v; want an error saying what to do", err)
	}
	if _, err := os.Stat(filepath.Join(broken, "raft.db.migrating")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed migration left raft.db.migrating: %v", err)
	}
	check(broken, 10, 1) // what the first migration made, as it was
}
