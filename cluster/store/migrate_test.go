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
// stops the start with what to do.
func TestMigrateWAL(t *testing.T) {
	raftDir := t.TempDir()
	walDir := filepath.Join(raftDir, "wal")
	os.MkdirAll(walDir, 0o700)
	meta := &metadb.BoltMetaDB{}
	w, err := wal.Open(walDir, wal.WithMetaStore(meta))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.StoreLogs(entries(1, 600, 3, "entry")); err != nil {
		t.Fatal(err)
	}
	w.SetUint64([]byte("CurrentTerm"), 7)
	w.SetUint64([]byte("LastVoteTerm"), 6)
	w.Set([]byte("LastVoteCand"), []byte("n2"))
	w.Close()
	meta.Close()

	ls, err := openLogStore(raftDir)
	if err != nil {
		t.Fatal(err)
	}
	defer ls.Close()
	if err := migrateWAL(raftDir, ls, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}
	if first, _ := ls.FirstIndex(); first != 1 {
		t.Errorf("first index %d; want 1", first)
	}
	if last, _ := ls.LastIndex(); last != 600 {
		t.Errorf("last index %d; want 600", last)
	}
	var l raft.Log
	if err := ls.GetLog(377, &l); err != nil || l.Term != 3 || string(l.Data) != "entry" {
		t.Errorf("entry 377: %+v, %v", l, err)
	}
	if v, _ := ls.GetUint64([]byte("CurrentTerm")); v != 7 {
		t.Errorf("CurrentTerm %d; want 7", v)
	}
	if v, _ := ls.GetUint64([]byte("LastVoteTerm")); v != 6 {
		t.Errorf("LastVoteTerm %d; want 6", v)
	}
	if v, _ := ls.Get([]byte("LastVoteCand")); !bytes.Equal(v, []byte("n2")) {
		t.Errorf("LastVoteCand %q; want n2", v)
	}
	if _, err := os.Stat(walDir + ".migrated"); err != nil {
		t.Errorf("the old log is not kept aside: %v", err)
	}
	// Once only: nothing to move the next time.
	if err := migrateWAL(raftDir, ls, slog.New(slog.DiscardHandler)); err != nil {
		t.Fatal(err)
	}

	// A log of an earlier version that cannot be read.
	broken := t.TempDir()
	os.MkdirAll(filepath.Join(broken, "wal"), 0o700)
	os.WriteFile(filepath.Join(broken, "wal", "wal-meta.db"), []byte("not a bolt file"), 0o600)
	ls2, err := openLogStore(broken)
	if err != nil {
		t.Fatal(err)
	}
	defer ls2.Close()
	err = migrateWAL(broken, ls2, slog.New(slog.DiscardHandler))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("move that directory away")) {
		t.Errorf("an unreadable old log: %v; want an error saying what to do", err)
	}
	if errors.Is(err, os.ErrNotExist) {
		t.Errorf("unexpected: %v", err)
	}
}
