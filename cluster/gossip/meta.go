package gossip

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// MetaMaxSize is the largest encoded node metadata memberlist accepts
// (memberlist.MetaMaxSize). UpdateMeta and Start refuse anything bigger.
const MetaMaxSize = 512

// Meta is what every member advertises about itself. It travels inside
// memberlist's alive messages, so it is re-gossiped on every change and must
// stay small: see MetaMaxSize and EncodedMetaSize.
type Meta struct {
	Name   string // node name; unique in the cluster, fixed for the life of a Members
	Region string
	Lat    float64
	Lon    float64

	// Advertised addresses.
	HTTPAddr    string
	HTTPSAddr   string
	AdminAddr   string
	ClusterAddr string

	Voter bool
	// ConfigVersion is the gateway config version this node has applied.
	ConfigVersion uint64
	Draining      bool
	// GivesUpSeat: when this voter leaves, it leaves Raft too
	// (remove_on_leave); the leader removes it if it could not itself.
	GivesUpSeat bool
	// Bootstrap: configured with bootstrap: true (several such nodes
	// defer to the first by name, see cluster.tryBootstrap).
	Bootstrap bool
	// ClusterID names the cluster whose Raft history this node holds ("":
	// none yet). Gossip refuses members of another cluster (see
	// delegate.NotifyMerge): two histories cannot be merged.
	ClusterID string
}

// metaVersion is the first byte of the encoded metadata. A decoder accepts its
// own version and ignores bytes it does not know after the fields it knows, so
// a later version may append fields without breaking older nodes.
const metaVersion = 1

const (
	flagVoter       = 1 << 0
	flagDraining    = 1 << 1
	flagGivesUpSeat = 1 << 2 // older nodes ignore it
	flagBootstrap   = 1 << 3 // older nodes ignore it
)

// ErrMetaTooLarge is returned (wrapped) when encoded metadata would not fit
// in MetaMaxSize bytes.
var ErrMetaTooLarge = errors.New("gossip: node metadata too large")

// encodeMeta writes m compactly. The Name is not encoded: it is memberlist's
// node name. boot identifies this process's life (see Members.boot).
//
//	version u8 | flags u8 | boot u64 | configVersion uvarint | lat f64 | lon f64 |
//	region, http, https, admin, cluster, cluster id: uvarint length + bytes
//
// The cluster id came later: a decoder takes its absence as "".
func encodeMeta(m *Meta, boot uint64) ([]byte, error) {
	if math.IsNaN(m.Lat) || math.IsNaN(m.Lon) || m.Lat < -90 || m.Lat > 90 || m.Lon < -180 || m.Lon > 180 {
		return nil, fmt.Errorf("gossip: meta: location (%v, %v) out of range", m.Lat, m.Lon)
	}
	b := make([]byte, 0, 64+len(m.Region)+len(m.HTTPAddr)+len(m.HTTPSAddr)+len(m.AdminAddr)+len(m.ClusterAddr)+len(m.ClusterID))
	var flags byte
	if m.Voter {
		flags |= flagVoter
	}
	if m.Draining {
		flags |= flagDraining
	}
	if m.GivesUpSeat {
		flags |= flagGivesUpSeat
	}
	if m.Bootstrap {
		flags |= flagBootstrap
	}
	b = append(b, metaVersion, flags)
	b = binary.BigEndian.AppendUint64(b, boot)
	b = binary.AppendUvarint(b, m.ConfigVersion)
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(m.Lat))
	b = binary.BigEndian.AppendUint64(b, math.Float64bits(m.Lon))
	for _, s := range []string{m.Region, m.HTTPAddr, m.HTTPSAddr, m.AdminAddr, m.ClusterAddr, m.ClusterID} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes encoded, limit %d (shorten region or addresses)", ErrMetaTooLarge, len(b), MetaMaxSize)
	}
	return b, nil
}

// EncodedMetaSize reports how many bytes m takes on the wire, so a caller can
// check a configuration before starting.
func EncodedMetaSize(m Meta) int {
	b, err := encodeMeta(&m, 0)
	if err != nil {
		if errors.Is(err, ErrMetaTooLarge) {
			return MetaMaxSize + 1
		}
		return -1
	}
	return len(b)
}

// decodeMeta is the inverse of encodeMeta. It never panics on any input.
func decodeMeta(name string, b []byte) (Meta, uint64, error) {
	m := Meta{Name: name}
	if len(b) < 2 {
		return m, 0, errors.New("meta: too short")
	}
	if len(b) > MetaMaxSize {
		// More than any node sends (encodeMeta refuses it): a forged
		// member's (an outside check had one of 4 KB listed).
		return m, 0, fmt.Errorf("meta: %d bytes, over the %d a node sends", len(b), MetaMaxSize)
	}
	if b[0] != metaVersion {
		return m, 0, fmt.Errorf("meta: unknown version %d", b[0])
	}
	flags := b[1]
	m.Voter = flags&flagVoter != 0
	m.Draining = flags&flagDraining != 0
	m.GivesUpSeat = flags&flagGivesUpSeat != 0
	m.Bootstrap = flags&flagBootstrap != 0
	r := reader{b: b[2:]}
	boot := r.u64()
	m.ConfigVersion = r.uvarint()
	m.Lat = math.Float64frombits(r.u64())
	m.Lon = math.Float64frombits(r.u64())
	m.Region = r.str()
	m.HTTPAddr = r.str()
	m.HTTPSAddr = r.str()
	m.AdminAddr = r.str()
	m.ClusterAddr = r.str()
	if len(r.b) > 0 {
		m.ClusterID = r.str()
	}
	if r.err != nil {
		return m, 0, fmt.Errorf("meta: %w", r.err)
	}
	if math.IsNaN(m.Lat) || math.IsNaN(m.Lon) || m.Lat < -90 || m.Lat > 90 || m.Lon < -180 || m.Lon > 180 {
		return m, 0, fmt.Errorf("meta: location (%v, %v) out of range", m.Lat, m.Lon)
	}
	// Trailing bytes are fields of a later version: ignored on purpose.
	return m, boot, nil
}

// reader is a bounds-checked cursor; the first error sticks and every later
// read returns zero values.
type reader struct {
	b   []byte
	err error
}

var errShort = errors.New("truncated")

func (r *reader) u8() byte {
	if r.err != nil || len(r.b) < 1 {
		r.err = errShort
		return 0
	}
	v := r.b[0]
	r.b = r.b[1:]
	return v
}

func (r *reader) u64() uint64 {
	if r.err != nil || len(r.b) < 8 {
		r.err = errShort
		return 0
	}
	v := binary.BigEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errors.New("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

// str reads a uvarint-length-prefixed string.
func (r *reader) str() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n > uint64(len(r.b)) {
		r.err = errShort
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

// str8 reads a one-byte-length-prefixed string.
func (r *reader) str8() string {
	n := int(r.u8())
	if r.err != nil {
		return ""
	}
	if n > len(r.b) {
		r.err = errShort
		return ""
	}
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func appendStr8(b []byte, s string) []byte {
	b = append(b, byte(len(s)))
	return append(b, s...)
}
