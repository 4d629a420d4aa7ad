package store

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/meridian-gw/meridian/internal/atomicfile"
	"github.com/meridian-gw/meridian/internal/smallfile"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/hashicorp/raft"
)

// Command kinds, the first byte of every Raft log entry this store writes.
// New kinds (certificates, ACME locks) get new bytes; an FSM that does not know
// a kind returns an error for it and leaves its state alone, so entries from a
// newer version do not corrupt an older node.
const (
	opSetDocument byte = 1
	opKV          byte = 2
)

// kvCommand is the body of an opKV entry: a put or a delete, optionally
// conditional on the key's current ModIndex (CAS; 0 = "must not exist").
type kvCommand struct {
	Key     string `json:"key"`
	Value   []byte `json:"value,omitempty"`
	Delete  bool   `json:"delete,omitempty"`
	CAS     bool   `json:"cas,omitempty"`
	IfIndex uint64 `json:"if_index,omitempty"`
}

type kvItem struct {
	Value    []byte `json:"v"`
	ModIndex uint64 `json:"m"`
}

// docCommand is the body of an opSetDocument entry.
type docCommand struct {
	Raw       []byte `json:"raw"`
	Hash      string `json:"hash"`
	IfVersion uint64 `json:"if_version,omitempty"` // NoDocument: only if there is none
}

// fsmResult is what fsm.Apply returns to the leader's ApplyFuture.
type fsmResult struct {
	Version uint64
	Hash    string
	Err     error
}

// fsmState is the whole replicated state, as held in memory, in snapshots
// and in the local state file.
type fsmState struct {
	// Index is the Raft index of the last log entry applied to this state.
	Index   uint64 `json:"index"`
	Version uint64 `json:"version"`
	Hash    string `json:"hash,omitempty"`
	Raw     []byte `json:"raw,omitempty"`
	// KV is the generic replicated key/value space (certificates, locks...).
	// Applies copy the map on write, so a snapshot may share it.
	KV map[string]kvItem `json:"kv,omitempty"`
}

// stateFile is the local copy of the FSM state, rewritten (atomically) after
// every applied entry. The log store does not record the commit index, so without
// it a restarted node would serve nothing (or, with an old snapshot, an older
// version) until it hears from a leader. Entries and snapshots at or below
// the recovered index are skipped: the applied state is always a prefix of
// the one committed history, so the higher index is the newer state.
const stateFile = "fsm-state.json"

type fsm struct {
	dir string // where stateFile lives; "" = not persisted

	mu    sync.Mutex
	st    fsmState
	waitC chan struct{} // closed and replaced when served advances
	// served is the state whose document every subscriber has been given:
	// what read-your-writes waits for, so that a write returns only once
	// this node serves it (not merely once the FSM recorded it), and what
	// current() reports, so a reader never sees a version that the
	// subscribers have not been handed yet.
	served fsmState

	// deliverMu serialises deliveries to subscribers so they see documents in
	// apply order, including the initial delivery on Subscribe.
	deliverMu sync.Mutex
	subs      []func(Document)

	persistErr func(error)
}

// maxStateFile bounds the state file read at open: the document (8 MiB at
// most) and the key-value entries, with room to spare. It is read only as
// a regular file (smallfile): a FIFO there must not hold the start.
const maxStateFile = 256 << 20

func newFSM(dir string, persistErr func(error)) (*fsm, error) {
	f := &fsm{dir: dir, waitC: make(chan struct{}), persistErr: persistErr}
	if dir == "" {
		return f, nil
	}
	b, err := smallfile.Read(filepath.Join(dir, stateFile), maxStateFile)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("store: read %s: %w", stateFile, err)
	default:
		if err := json.Unmarshal(b, &f.st); err != nil {
			return nil, fmt.Errorf("store: decode %s: %w", stateFile, err)
		}
		f.served = f.st
	}
	return f, nil
}

// Apply implements raft.FSM.
func (f *fsm) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand || len(l.Data) == 0 {
		return nil
	}
	f.deliverMu.Lock()
	defer f.deliverMu.Unlock()

	f.mu.Lock()
	if l.Index <= f.st.Index {
		// Replay of an entry already contained in the recovered state.
		f.mu.Unlock()
		return fsmResult{Err: fmt.Errorf("store: entry %d already applied", l.Index)}
	}
	var res fsmResult
	changed := false
	switch l.Data[0] {
	case opSetDocument:
		var c docCommand
		if err := json.Unmarshal(l.Data[1:], &c); err != nil {
			res.Err = fmt.Errorf("store: bad document command at index %d: %w", l.Index, err)
			break
		}
		if c.IfVersion == NoDocument && f.st.Version != 0 {
			res = fsmResult{Version: f.st.Version, Hash: f.st.Hash,
				Err: fmt.Errorf("%w: expected no document, current is version %d", ErrVersionConflict, f.st.Version)}
			break
		}
		if c.IfVersion != 0 && c.IfVersion != NoDocument && c.IfVersion != f.st.Version {
			res = fsmResult{Version: f.st.Version, Hash: f.st.Hash,
				Err: fmt.Errorf("%w: expected version %d, current is %d", ErrVersionConflict, c.IfVersion, f.st.Version)}
			break
		}
		f.st.Version++
		f.st.Raw = c.Raw
		f.st.Hash = c.Hash
		res = fsmResult{Version: f.st.Version, Hash: c.Hash}
		changed = true
	case opKV:
		var c kvCommand
		if err := json.Unmarshal(l.Data[1:], &c); err != nil {
			res.Err = fmt.Errorf("store: bad kv command at index %d: %w", l.Index, err)
			break
		}
		cur, exists := f.st.KV[c.Key]
		if c.CAS && ((c.IfIndex == 0 && exists) || (c.IfIndex != 0 && (!exists || cur.ModIndex != c.IfIndex))) {
			res = fsmResult{Version: cur.ModIndex, Err: fmt.Errorf("%w: key %q is at index %d, expected %d", ErrVersionConflict, c.Key, cur.ModIndex, c.IfIndex)}
			break
		}
		kv := make(map[string]kvItem, len(f.st.KV)+1)
		for k, v := range f.st.KV {
			kv[k] = v
		}
		if c.Delete {
			delete(kv, c.Key)
		} else {
			kv[c.Key] = kvItem{Value: c.Value, ModIndex: l.Index}
		}
		f.st.KV = kv
		res = fsmResult{Version: l.Index}
	default:
		res.Err = fmt.Errorf("store: unknown command kind %d at index %d (newer node version?)", l.Data[0], l.Index)
	}
	f.st.Index = l.Index
	st := f.st
	f.persistLocked()
	subs := f.subs
	f.mu.Unlock()

	if changed {
		doc := Document{Version: st.Version, Hash: st.Hash, Raw: st.Raw}
		for _, fn := range subs {
			fn(doc)
		}
	}
	f.markServed(st)
	return res
}

// markServed records that subscribers have seen the document of st, and
// wakes waiters.
func (f *fsm) markServed(st fsmState) {
	f.mu.Lock()
	if st.Index > f.served.Index {
		f.served = st
	}
	f.signalLocked()
	f.mu.Unlock()
}

func (f *fsm) signalLocked() {
	close(f.waitC)
	f.waitC = make(chan struct{})
}

// persistLocked writes the state file (temp file, fsync, rename). A failure
// is reported but not fatal: the state is still in Raft.
func (f *fsm) persistLocked() {
	if f.dir == "" {
		return
	}
	b, err := json.Marshal(f.st)
	if err == nil {
		err = atomicfile.Write(filepath.Join(f.dir, stateFile), b, 0o600)
	}
	if err != nil && f.persistErr != nil {
		f.persistErr(err)
	}
}

// Snapshot implements raft.FSM. The state is immutable once applied (Raw is
// replaced, never modified), so a shallow copy is a consistent snapshot.
func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return &fsmSnapshot{st: f.st}, nil
}

// Restore implements raft.FSM: it replaces the state with the snapshot's
// unless the state already held (recovered from the local state file) is at
// a later index.
func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	var st fsmState
	if err := json.NewDecoder(rc).Decode(&st); err != nil {
		return fmt.Errorf("store: decode snapshot: %w", err)
	}
	f.deliverMu.Lock()
	defer f.deliverMu.Unlock()
	f.mu.Lock()
	if st.Index <= f.st.Index {
		f.mu.Unlock()
		return nil
	}
	changed := st.Version != f.st.Version || st.Hash != f.st.Hash
	f.st = st
	f.persistLocked()
	subs := f.subs
	f.mu.Unlock()
	if changed && st.Version > 0 {
		doc := Document{Version: st.Version, Hash: st.Hash, Raw: st.Raw}
		for _, fn := range subs {
			fn(doc)
		}
	}
	f.markServed(st)
	return nil
}

// current returns the state subscribers have been given. The FSM's own state
// may be one entry ahead while its document is being delivered.
func (f *fsm) current() fsmState {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.served
}

// waitCh returns the index delivered to subscribers and a channel closed
// when it advances.
func (f *fsm) waitCh() (uint64, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.served.Index, f.waitC
}

func (f *fsm) subscribe(fn func(Document)) {
	f.deliverMu.Lock()
	defer f.deliverMu.Unlock()
	f.mu.Lock()
	f.subs = append(f.subs[:len(f.subs):len(f.subs)], fn)
	st := f.st
	f.mu.Unlock()
	if st.Version > 0 {
		fn(Document{Version: st.Version, Hash: st.Hash, Raw: st.Raw})
	}
}

type fsmSnapshot struct{ st fsmState }

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if err := json.NewEncoder(sink).Encode(s.st); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (s *fsmSnapshot) Release() {}
