package ring

import (
	"fmt"
	"slices"
	"testing"
)

// The bounds below are generous multiples of the ideal: consistent's bounded
// loads and its successor-by-name-hash replicas move more than the ideal
// (LIBRARIES.md measured 1.2-1.4× for owners and 1.5-2× for replica sets).
// The measured figures are logged; the member names vary because the
// movement depends on where the names hash.

const movementKeys = 10000

func TestMovementOnJoin(t *testing.T) {
	const n = 2 // replicas
	for _, prefix := range []string{"vol", "v", "node-", "disk", "x"} {
		t.Run(prefix, func(t *testing.T) {
			all := vols(prefix, 5, 1)
			joined := all[4].Name
			before := mustNew(t, Config{}, all[:4])
			after := mustNew(t, Config{}, all)

			var ownerMoved, ownerToNew, setChanged, copiesMoved int
			for i := range movementKeys {
				k := key(i)
				ob, oa := before.Order(k), after.Order(k)
				if ob[0] != oa[0] {
					ownerMoved++
					if oa[0] == joined {
						ownerToNew++
					}
				}
				add, drop := Diff(before, after, k, n)
				if len(add) != len(drop) {
					t.Fatalf("key %q: Diff adds %v but drops %v: replica count changed", k, add, drop)
				}
				if len(add) > 0 {
					setChanged++
				}
				copiesMoved += len(add)
			}
			owner := float64(ownerMoved) / movementKeys
			toNew := float64(ownerToNew) / float64(max(ownerMoved, 1))
			set := float64(setChanged) / movementKeys
			copies := float64(copiesMoved) / (n * movementKeys)
			// Ideal: the new member takes 1/5 of the owners and 1/5 of the
			// replica copies, which touches the replica set of n/5 of the keys.
			const idealOwner, idealCopies, idealSet = 1.0 / 5, 1.0 / 5, float64(n) / 5
			t.Logf("4→5 (%s), %d replicas: owner changed %.3f (%.2f× ideal; %.0f%% of them to %s), replica set changed %.3f (%.2f× ideal %.2f), replica copies moved %.3f (%.2f× ideal)",
				prefix, n, owner, owner/idealOwner, 100*toNew, joined, set, set/idealSet, idealSet, copies, copies/idealCopies)

			if owner > 2.5*idealOwner || owner < 0.5*idealOwner {
				t.Errorf("owner changed for %.3f of keys, want within [0.5, 2.5] × %.2f", owner, idealOwner)
			}
			if copies > 2.5*idealCopies {
				t.Errorf("%.3f of replica copies moved, want < 2.5 × %.2f", copies, idealCopies)
			}
			if set > 2*idealSet {
				t.Errorf("replica set changed for %.3f of keys, want < 2 × %.2f", set, idealSet)
			}
			// Bounded loads can shift partitions between old members too, but
			// most owner changes must go to the member that joined.
			if toNew < 0.75 {
				t.Errorf("%.2f of owner changes went to %s, want >= 0.75", toNew, joined)
			}
		})
	}
}

func TestMovementOnLeave(t *testing.T) {
	const n = 2
	for _, prefix := range []string{"vol", "v", "node-", "disk", "x"} {
		t.Run(prefix, func(t *testing.T) {
			all := vols(prefix, 5, 1)
			left := all[2].Name
			before := mustNew(t, Config{}, all)
			after := mustNew(t, Config{}, slices.Delete(slices.Clone(all), 2, 3))

			// Keys that had a replica on the leaving member must move; the
			// others ideally keep their owner and replicas.
			var untouched, ownerMoved, setChanged, lostCopies int
			for i := range movementKeys {
				k := key(i)
				ob, oa := before.Order(k), after.Order(k)
				add, drop := Diff(before, after, k, n)
				if slices.Contains(ob[:n], left) {
					if !slices.Contains(drop, left) {
						t.Fatalf("key %q: Diff drops %v, want it to include %s", k, drop, left)
					}
					lostCopies++
					continue
				}
				untouched++
				if ob[0] != oa[0] {
					ownerMoved++
				}
				if len(add) > 0 {
					setChanged++
				}
			}
			owner := float64(ownerMoved) / float64(untouched)
			set := float64(setChanged) / float64(untouched)
			t.Logf("5→4 (%s leaves), %d replicas: %.3f of keys had a replica there; of the other %d keys, owner changed for %.3f and replica set for %.3f (ideal 0)",
				left, n, float64(lostCopies)/movementKeys, untouched, owner, set)
			if owner > 0.15 || set > 0.15 {
				t.Errorf("keys without a replica on %s: owner changed for %.3f, replica set for %.3f; want both < 0.15", left, owner, set)
			}
		})
	}
}

func TestMovementWeighted(t *testing.T) {
	// Doubling one volume's weight (e.g. a disk grown in place) should move
	// keys to that volume and about no others.
	before := mustNew(t, Config{}, vols("vol", 5, 1))
	grown := vols("vol", 5, 1)
	grown[0].Weight = 2
	after := mustNew(t, Config{}, grown)
	var moved, toGrown int
	for i := range movementKeys {
		k := key(i)
		ob, oa := before.Order(k), after.Order(k)
		if ob[0] != oa[0] {
			moved++
			if oa[0] == "vol1" {
				toGrown++
			}
		}
	}
	frac := float64(moved) / movementKeys
	toGrownFrac := float64(toGrown) / float64(max(moved, 1))
	// Ideal: vol1 goes from 1/5 to 2/6 of the keys, so 2/15 change owner.
	const ideal = 2.0 / 15
	t.Logf("vol1 weight 1→2: owner changed %.3f (%.2f× ideal %.3f), %.0f%% of them to vol1; owned before %v, after %v",
		frac, frac/ideal, ideal, 100*toGrownFrac, before.PartitionsOf(), after.PartitionsOf())
	if frac > 2.5*ideal {
		t.Errorf("owner changed for %.3f of keys, want < 2.5 × %.3f", frac, ideal)
	}
	if got, want := after.PartitionsOf()["vol1"], before.PartitionsOf()["vol1"]; got <= want {
		t.Errorf("vol1 owns %d partitions at weight 2, want more than %d (at weight 1)", got, want)
	}
}

func ExampleDiff() {
	before, _ := New(Config{}, []Member{{Name: "vol1"}, {Name: "vol2"}, {Name: "vol3"}, {Name: "vol4"}})
	after, _ := New(Config{}, []Member{{Name: "vol1"}, {Name: "vol2"}, {Name: "vol3"}, {Name: "vol4"}, {Name: "vol5"}})
	for _, k := range []string{"key-0", "key-2"} {
		add, drop := Diff(before, after, []byte(k), 2)
		fmt.Println(k, "add", add, "drop", drop)
	}
	// Output:
	// key-0 add [vol5 vol2] drop [vol1 vol3]
	// key-2 add [vol5] drop [vol2]
}
