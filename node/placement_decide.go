package node

import (
	"fmt"
	"strings"
	"time"
)

// The placement decision: what one key needs so that its replicas are
// where they should be. It is a pure function of plain values (no clock,
// no network, no index), so every state a key can be in while volumes die,
// return, drain and join is tested without a cluster (placement_test.go).
// The placement loop (placement.go) gathers the values, asks, and carries
// out the answer (repairKey, moveKey).

// placementAction is what a key needs.
type placementAction uint8

const (
	// placeNone: nothing to do. The key has its live replicas where the
	// ring wants them, or the ring has too few volumes to say where that
	// is (then nothing can move anyway).
	placeNone placementAction = iota
	// placeWait: a replica is on a volume missing for less than the repair
	// delay. The key is left as it is until the volume returns or is given
	// up on: a restarting volume must not set off a storm of copies, and
	// any change made meanwhile would be undone when it came back.
	placeWait
	// placeRepair: fewer live replicas than the replica count, and every
	// missing one given up on. Copy from a live replica (Sources) to the
	// first Need of Targets that take a copy.
	placeRepair
	// placeUnavailable: no replica is live, so there is nothing to copy
	// from until one comes back.
	placeUnavailable
	// placeMove: enough live replicas, but not the ones the ring wants.
	// Copy to Add, switch the record to Want, then drop Drop.
	placeMove
	// placeDrop: the ring wants a subset of the replicas (a record left
	// with extra ones by a move that failed half way, or a lower replica
	// count): switch the record to Want and drop Drop; nothing to copy.
	placeDrop
	// placeHold: misplaced, but membership changed less than the
	// rebalance delay ago, so moves wait for it to settle.
	placeHold
)

var placementActionNames = [...]string{
	placeNone:        "none",
	placeWait:        "wait",
	placeRepair:      "repair",
	placeUnavailable: "unavailable",
	placeMove:        "move",
	placeDrop:        "drop",
	placeHold:        "hold",
}

func (a placementAction) String() string {
	if int(a) < len(placementActionNames) {
		return placementActionNames[a]
	}
	return fmt.Sprintf("placementAction(%d)", a)
}

// placementView is the cluster as the placement decision sees it. The loop
// builds one per pass (see newPlacementView).
type placementView struct {
	// Replicas is the replica count, n.
	Replicas int
	// Live holds the live volumes, draining ones included.
	Live map[string]bool
	// Draining lists the live volumes being emptied. The ring leaves them
	// out; a repair copies to them only when the ring has no other volume.
	Draining []string
	// Settled reports that the set of live volumes has been unchanged for
	// the rebalance delay, so keys may move.
	Settled bool
	// MissingFor is how long each volume that records name but that is not
	// live has been missing. A volume absent from it has just been found
	// missing: 0.
	MissingFor map[string]time.Duration
	// RepairDelay is how long a volume must be missing before the replicas
	// on it are given up and copied elsewhere.
	RepairDelay time.Duration
}

// placement is the decision for one key. Only the fields of its Action are
// set. Its slices never alias the replicas it was decided from, but Want
// shares the ring's order: neither may be modified.
type placement struct {
	Action placementAction
	// Under reports fewer live replicas than the replica count, whatever
	// the Action: a key waiting for a missing volume, or with no live
	// replica, is under-replicated too.
	Under bool
	// Sources are the live replicas, in the record's order: what a repair
	// or a move copies from (see source).
	Sources []string

	// Repair: the volumes that may take a copy, in preference order (the
	// ring's order for the key, then the draining volumes, leaving out
	// those the record names); Need of them must take one. The record then
	// names Sources and the new copies; Gone, the replicas on volumes that
	// are not live, are dropped from it (their copies deleted if those
	// volumes return).
	Targets []string
	Need    int
	Gone    []string

	// Move, drop: the replicas the ring wants (Want), those of them that
	// lack the key (Add), and the replicas it does not want (Drop).
	Want []string
	Add  []string
	Drop []string
}

// moves reports whether the decision is to move the key (moveKey
// carries out drops too).
func (p *placement) moves() bool {
	return p.Action == placeMove || p.Action == placeDrop
}

// misplaced reports whether the key's replicas differ from the ring's
// placement, whether or not it may move yet.
func (p *placement) misplaced() bool {
	return p.moves() || p.Action == placeHold
}

// decidePlacement returns what a key needs, given the volumes its record
// names as replicas (in the record's order) and order, the ring's
// preference order for the key (ring.Order: every ring volume, owner
// first). It keeps no reference to replicas.
func decidePlacement(v *placementView, replicas, order []string) placement {
	n := v.Replicas
	live, due := 0, true
	for _, name := range replicas {
		if v.Live[name] {
			live++
		} else if v.MissingFor[name] < v.RepairDelay {
			due = false
		}
	}
	switch {
	case !due:
		// Even with enough live replicas: the key's placement stays as it
		// is until the missing volume is given up on, rather than moving
		// it now and back when the volume returns.
		return placement{Action: placeWait, Under: live < n}
	case live < n:
		return planRepair(v, replicas, order)
	}

	// Enough live replicas. Are they where the ring puts the key? With
	// fewer ring volumes than replicas (say, the rest are draining) the
	// ring cannot say, and nothing moves.
	if n < 1 || len(order) < n {
		return placement{}
	}
	// Capped, so that appending to Want cannot write into the ring.
	want := order[:n:n]
	if sameNames(want, replicas) {
		return placement{}
	}
	if !v.Settled {
		return placement{Action: placeHold, Want: want}
	}
	p := placement{Action: placeMove, Want: want}
	for _, name := range replicas {
		if v.Live[name] {
			p.Sources = append(p.Sources, name)
		}
		if !contains(want, name) {
			p.Drop = append(p.Drop, name)
		}
	}
	for _, name := range want {
		if !contains(replicas, name) {
			p.Add = append(p.Add, name)
		}
	}
	if len(p.Add) == 0 {
		p.Action = placeDrop
	}
	return p
}

// planRepair is the repair half of decidePlacement. It ignores the repair
// delay, so verify's restore (repairKey) also uses it on its own: a copy a
// volume reported lost is not coming back, there is nothing to wait for.
func planRepair(v *placementView, replicas, order []string) placement {
	p := placement{Action: placeRepair}
	for _, name := range replicas {
		if v.Live[name] {
			p.Sources = append(p.Sources, name)
		} else {
			p.Gone = append(p.Gone, name)
		}
	}
	p.Under = len(p.Sources) < v.Replicas
	if len(p.Sources) == 0 {
		return placement{Action: placeUnavailable, Under: p.Under}
	}
	p.Need = max(v.Replicas-len(p.Sources), 0)
	// Draining volumes come last: a copy there must move again, but it
	// beats one replica too few when the ring has no other volume.
	for _, list := range [][]string{order, v.Draining} {
		for _, name := range list {
			if !contains(replicas, name) {
				p.Targets = append(p.Targets, name)
			}
		}
	}
	return p
}

// source returns the replica to copy from: for a move, preferably one
// that stays (a replica on its way out may be on a draining volume, busy
// sending everything it holds), and among equals one that answers probes,
// first in the record's order. It is "" when there are no sources.
//
// unreachable is a separate argument rather than part of the view because
// probes change it between the pass's decision and the copy, which may be
// many keys later: the copy should use the freshest.
func (p *placement) source(unreachable map[string]bool) string {
	best, bestRank := "", -1
	for _, name := range p.Sources {
		rank := 0
		if contains(p.Want, name) {
			rank += 2
		}
		if !unreachable[name] {
			rank++
		}
		if rank > bestRank {
			best, bestRank = name, rank
		}
	}
	return best
}

// String renders the decision with the fields its Action uses, for logs
// and test failures.
func (p placement) String() string {
	var b strings.Builder
	b.WriteString(p.Action.String())
	if p.Under {
		b.WriteString(" under")
	}
	field := func(name string, list []string) {
		if len(list) > 0 {
			fmt.Fprintf(&b, " %s=%v", name, list)
		}
	}
	field("sources", p.Sources)
	field("targets", p.Targets)
	if p.Action == placeRepair {
		fmt.Fprintf(&b, " need=%d", p.Need)
	}
	field("gone", p.Gone)
	field("want", p.Want)
	field("add", p.Add)
	field("drop", p.Drop)
	return b.String()
}

// sameNames reports whether a and b hold the same names (each list has no
// duplicates).
func sameNames(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !contains(b, x) {
			return false
		}
	}
	return true
}
