package ring

import (
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// ErrNotEnoughMembers is returned (wrapped) by Locate when more replicas are
// asked for than the ring has volumes. Check it with errors.Is.
var ErrNotEnoughMembers = errors.New("ring: not enough members")

// MaxWeight is the largest Member.Weight New accepts.
const MaxWeight = 1000

// Member is one volume.
type Member struct {
	// Name is the volume's stable, unique, non-empty name. It must not contain
	// '#', which separates the volume name from the index of its ring members.
	Name string
	// Weight is the volume's relative share of the keys (e.g. capacity units):
	// a volume of weight w owns about w times the partitions of a volume of
	// weight 1. 0 means 1; at most MaxWeight. The sum of the weights of a ring
	// must not exceed Config.Partitions, and New's time grows with it, so keep
	// units coarse.
	Weight int
}

// Ring is the placement of keys on a fixed set of volumes. Build it with New
// (the zero Ring is not usable). It is immutable once New returns and safe for
// concurrent use without locks.
type Ring struct {
	cfg     Config
	members []Member // sorted by Name, Weight normalized to >= 1
	slots   int      // ring members: the sum of the weights

	// orderOf[p] indexes orders: the preference list of partition p. Many
	// partitions share a list (those with the same owner usually do), so
	// distinct lists are stored once.
	orderOf []int32
	orders  [][]string

	owned   []int // partitions owned per member, same index as members
	maxLoad int
}

// slot is one ring member in consistent: the index-th share of a volume.
type slot struct {
	name string // "<volume>#<index>"
	vol  int    // index of the volume in Ring.members
}

// String implements consistent.Member.
func (s slot) String() string { return s.name }

// hasher implements consistent.Hasher with xxhash.
type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// New builds the placement of the given volumes. Zero fields of cfg take their
// defaults (see DefaultConfig). The result depends only on the configuration
// and the set of members, not on their order; members is not modified.
//
// New rejects an invalid cfg, empty or duplicate names, names containing '#',
// weights outside 0..MaxWeight, and a sum of weights above cfg.Partitions. An
// empty member list is allowed: Locate then returns ErrNotEnoughMembers.
//
// New takes about 25 ms for 100 ring members with the default Config and grows
// faster than linearly with the sum of the weights (about 1 s at 1000).
func New(cfg Config, members []Member) (*Ring, error) {
	cfg = cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ms, err := normalize(members)
	if err != nil {
		return nil, err
	}
	r := &Ring{
		cfg:     cfg,
		members: ms,
		owned:   make([]int, len(ms)),
	}
	if len(ms) == 0 {
		return r, nil
	}

	var slots []consistent.Member
	for i, m := range ms {
		for j := range m.Weight {
			slots = append(slots, slot{name: m.Name + "#" + strconv.Itoa(j), vol: i})
		}
	}
	if len(slots) > cfg.Partitions {
		// Past this, ring members own at most one partition each and weights
		// stop meaning anything, while consistent.New grows quadratically
		// with the number of ring members.
		return nil, fmt.Errorf("ring: total weight of %d members is %d, more than the %d partitions: use coarser weights or more partitions",
			len(ms), len(slots), cfg.Partitions)
	}
	r.slots = len(slots)
	r.maxLoad = maxLoad(cfg, r.slots)

	c := consistent.New(slots, consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    cfg.Partitions,
		ReplicationFactor: cfg.VirtualNodes,
		Load:              cfg.Load,
	})

	r.orderOf = make([]int32, cfg.Partitions)
	interned := make(map[string]int32)
	seen := make([]bool, len(ms))
	vols := make([]int, 0, len(ms))
	var id []byte
	for p := range cfg.Partitions {
		// All ring members in preference order: the partition's owner (chosen
		// with the load bound), then the others in the order of their name
		// hashes. Keeping each volume's first appearance gives the volume list.
		closest, err := c.GetClosestNForPartition(p, len(slots))
		if err != nil {
			return nil, fmt.Errorf("ring: place partition %d: %w", p, err)
		}
		clear(seen)
		vols = vols[:0]
		for _, m := range closest {
			s, ok := m.(slot)
			if !ok {
				return nil, fmt.Errorf("ring: place partition %d: unexpected member %T", p, m)
			}
			if !seen[s.vol] {
				seen[s.vol] = true
				vols = append(vols, s.vol)
			}
		}
		if len(vols) != len(ms) {
			// consistent keys members by the 64-bit hash of their name; only
			// a hash collision between two names can lose one.
			return nil, fmt.Errorf("ring: place partition %d: reached %d of %d volumes (member name hash collision)",
				p, len(vols), len(ms))
		}
		r.owned[vols[0]]++

		id = id[:0]
		for _, v := range vols {
			id = binary.AppendUvarint(id, uint64(v))
		}
		k, ok := interned[string(id)]
		if !ok {
			names := make([]string, len(vols))
			for i, v := range vols {
				names[i] = ms[v].Name
			}
			k = int32(len(r.orders))
			r.orders = append(r.orders, names)
			interned[string(id)] = k
		}
		r.orderOf[p] = k
	}
	return r, nil
}

// normalize checks members and returns a sorted copy with weights >= 1.
func normalize(members []Member) ([]Member, error) {
	ms := make([]Member, len(members))
	for i, m := range members {
		switch {
		case m.Name == "":
			return nil, fmt.Errorf("ring: member %d: empty name", i)
		case strings.Contains(m.Name, "#"):
			return nil, fmt.Errorf("ring: member %q: name must not contain '#'", m.Name)
		case m.Weight < 0 || m.Weight > MaxWeight:
			return nil, fmt.Errorf("ring: member %q: weight is %d, want 0..%d", m.Name, m.Weight, MaxWeight)
		}
		if m.Weight == 0 {
			m.Weight = 1
		}
		ms[i] = m
	}
	slices.SortFunc(ms, func(a, b Member) int { return strings.Compare(a.Name, b.Name) })
	for i := 1; i < len(ms); i++ {
		if ms[i].Name == ms[i-1].Name {
			return nil, fmt.Errorf("ring: duplicate member %q", ms[i].Name)
		}
	}
	return ms, nil
}

// maxLoad is consistent's bound on partitions per ring member, computed the
// same way (Consistent.averageLoad) and capped at the partition count.
func maxLoad(cfg Config, slots int) int {
	if slots == 0 {
		return 0
	}
	l := math.Ceil(float64(cfg.Partitions) / float64(slots) * cfg.Load)
	if l > float64(cfg.Partitions) {
		return cfg.Partitions
	}
	return int(l)
}

// Config returns the configuration of the ring, with defaults filled in.
func (r *Ring) Config() Config { return r.cfg }

// Len returns the number of volumes (not ring members: a volume of weight w
// counts once).
func (r *Ring) Len() int { return len(r.members) }

// Members returns a copy of the volumes sorted by Name. A weight given as 0
// is reported as 1, so New(r.Config(), r.Members()) places keys like r.
func (r *Ring) Members() []Member { return slices.Clone(r.members) }

// Has reports whether the ring has a volume with the given name.
func (r *Ring) Has(name string) bool {
	_, ok := slices.BinarySearchFunc(r.members, name, func(m Member, name string) int {
		return cmp.Compare(m.Name, name)
	})
	return ok
}

// Partition returns the partition of key: xxhash64(key) mod Partitions, as
// consistent's FindPartitionID computes it. It depends only on the key and
// Config.Partitions, so it never changes for a cluster.
func (r *Ring) Partition(key []byte) int {
	return int(xxhash.Sum64(key) % uint64(r.cfg.Partitions))
}

// Order returns every volume in preference order for key: [0] is the owner,
// then the volumes that should hold further replicas. It is nil when the ring
// is empty. The slice is shared by all keys of the partition and by all
// callers: it must not be modified. Order does not allocate.
func (r *Ring) Order(key []byte) []string {
	if len(r.members) == 0 {
		return nil
	}
	return r.orders[r.orderOf[r.Partition(key)]]
}

// Locate returns the n distinct volumes that should hold key, in preference
// order; [0] is the owner. Locate(key, n) equals Order(key)[:n]. The result
// is capped at n, so appending to it does not touch the ring, but its elements
// are shared and must not be modified. Locate returns an error when n < 1 and
// one wrapping ErrNotEnoughMembers when n exceeds Len. It does not allocate
// unless it fails.
func (r *Ring) Locate(key []byte, n int) ([]string, error) {
	if n < 1 {
		return nil, fmt.Errorf("ring: locate %d replicas: want at least 1", n)
	}
	if n > len(r.members) {
		return nil, fmt.Errorf("ring: locate %d replicas on %d volumes: %w", n, len(r.members), ErrNotEnoughMembers)
	}
	return r.Order(key)[:n:n], nil
}

// PartitionsOf returns, for every volume, the number of partitions it owns
// (is [0] of the preference list for). Volumes that own none are listed with 0.
// The map is a new copy.
func (r *Ring) PartitionsOf() map[string]int {
	out := make(map[string]int, len(r.members))
	for i, m := range r.members {
		out[m.Name] = r.owned[i]
	}
	return out
}

// MaxPartitions returns the bounded-load ceiling on partitions owned per ring
// member: ceil(Partitions / ring members × Load), where ring members is the
// sum of the weights, capped at Partitions. A volume of weight w owns at most
// w × MaxPartitions partitions. It is 0 for an empty ring.
func (r *Ring) MaxPartitions() int { return r.maxLoad }

// Diff returns the volumes that must gain (add) and lose (drop) a replica of
// key when placement moves from prev to next with n replicas. Each ring places
// min(n, Len) replicas; a nil or empty ring, or n < 1, places none. add is in
// next's preference order and drop in prev's; both are nil when empty.
func Diff(prev, next *Ring, key []byte, n int) (add, drop []string) {
	from, to := prev.placement(key, n), next.placement(key, n)
	for _, v := range to {
		if !slices.Contains(from, v) {
			add = append(add, v)
		}
	}
	for _, v := range from {
		if !slices.Contains(to, v) {
			drop = append(drop, v)
		}
	}
	return add, drop
}

// placement returns the first min(n, Len) volumes of key's order; nil for a
// nil ring.
func (r *Ring) placement(key []byte, n int) []string {
	if r == nil || n < 1 {
		return nil
	}
	o := r.Order(key)
	return o[:min(n, len(o))]
}
