package ring

import (
	"fmt"
	"math"
)

// Defaults of Config. DefaultConfig returns them; New uses them for zero fields.
const (
	defaultPartitions   = 1021 // prime; about 10 partitions per ring member at 100 members
	defaultLoad         = 1.25
	defaultVirtualNodes = 100

	// Upper limits catch typos before they cost a long New: New's time and
	// memory grow linearly with Partitions and with VirtualNodes.
	maxPartitionCount = 1 << 20
	maxVirtualNodes   = 1000
)

// Config holds the parameters of placement. Every field changes where keys go,
// so all nodes of a cluster must use the same Config; a zero field means its
// default.
type Config struct {
	// Partitions is the number of partitions keys are hashed into: a key's
	// partition is xxhash64(key) mod Partitions, and every key of a partition
	// has the same replicas. It is fixed for the life of a cluster: changing it
	// remaps almost every key. More partitions balance finer (each ring member
	// owns about Partitions / ring members of them, and membership changes move
	// keys in steps of 1/Partitions of the keyspace) but New's time and memory
	// grow linearly with it. Choose it for the largest cluster you expect, at
	// least ~10 per ring member (sum of weights); a prime spreads keys best.
	// Default 1021; at most 1<<20.
	Partitions int

	// Load is the bounded-load factor of consistent hashing: no ring member owns
	// more than ceil(Partitions / ring members × Load) partitions (see
	// Ring.MaxPartitions). Close to 1 the balance is tight but a membership
	// change pushes more partitions along the circle to the next member with
	// room; large values let the hash circle alone decide, which is less even.
	// It bounds partitions, not bytes or requests. Default 1.25; must be at
	// least 1 (consistent panics below 1) and finite.
	Load float64

	// VirtualNodes is the number of points each ring member has on the hash
	// circle (consistent's ReplicationFactor; it is not the number of data
	// replicas, which callers pass to Locate). More points spread partitions
	// more evenly before the load bound has to step in, but New's time grows
	// with ring members × VirtualNodes. Default 100 (20 left a 5-volume ring
	// owning 115 to 256 partitions each against an ideal 204; 100 gives
	// 191 to 212 for about the same build time); at most 1000.
	VirtualNodes int
}

// DefaultConfig returns the default placement parameters: 1021 partitions,
// load factor 1.25 and 100 virtual nodes per ring member.
func DefaultConfig() Config {
	return Config{
		Partitions:   defaultPartitions,
		Load:         defaultLoad,
		VirtualNodes: defaultVirtualNodes,
	}
}

// withDefaults returns c with every zero field replaced by its default.
func (c Config) withDefaults() Config {
	if c.Partitions == 0 {
		c.Partitions = defaultPartitions
	}
	if c.Load == 0 {
		c.Load = defaultLoad
	}
	if c.VirtualNodes == 0 {
		c.VirtualNodes = defaultVirtualNodes
	}
	return c
}

// Validate reports whether c is usable, after zero fields take their defaults.
// The error says which field is wrong and what is accepted.
func (c Config) Validate() error {
	c = c.withDefaults()
	switch {
	case c.Partitions < 1 || c.Partitions > maxPartitionCount:
		return fmt.Errorf("ring: config: Partitions is %d, want 1..%d (0 means %d)",
			c.Partitions, maxPartitionCount, defaultPartitions)
	case math.IsNaN(c.Load) || math.IsInf(c.Load, 0) || c.Load < 1:
		return fmt.Errorf("ring: config: Load is %v, want a finite number >= 1 (0 means %v)",
			c.Load, defaultLoad)
	case c.VirtualNodes < 1 || c.VirtualNodes > maxVirtualNodes:
		return fmt.Errorf("ring: config: VirtualNodes is %d, want 1..%d (0 means %d)",
			c.VirtualNodes, maxVirtualNodes, defaultVirtualNodes)
	}
	return nil
}
