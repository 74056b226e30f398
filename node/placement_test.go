package node

import (
	"slices"
	"testing"
	"time"
)

// The placement decision is a pure function, so the states a key can be in
// while volumes die, return, drain and join are tested here one by one,
// without a cluster. The cluster tests (rebalance_test.go,
// failure_test.go) check that the loop carries the decisions out.

const testRepairDelay = time.Minute

// live returns a set of live volume names.
func volSet(names ...string) map[string]bool {
	set := make(map[string]bool, len(names))
	for _, name := range names {
		set[name] = true
	}
	return set
}

// vols returns a list of volume names.
func vols(list ...string) []string { return list }

func TestPlacementDecision(t *testing.T) {
	// Volumes a to e; the ring holds the live volumes that are not
	// draining, and order is its preference order for the key.
	tests := []struct {
		name     string
		n        int
		replicas []string
		order    []string
		live     map[string]bool
		draining []string
		// missing is how long each volume not live has been missing; one
		// left out has just been found missing.
		missing  map[string]time.Duration
		unsettle bool // membership changed less than RebalanceDelay ago
		want     placement
	}{
		// Healthy keys.
		{
			name: "all replicas live and placed", n: 2,
			replicas: vols("a", "b"), order: vols("a", "b", "c"), live: volSet("a", "b", "c"),
			want: placement{Action: placeNone},
		},
		{
			name: "placed, record lists them in another order", n: 2,
			replicas: vols("b", "a"), order: vols("a", "b", "c"), live: volSet("a", "b", "c"),
			want: placement{Action: placeNone},
		},
		{
			name: "single replica placed", n: 1,
			replicas: vols("c"), order: vols("c", "a", "b"), live: volSet("a", "b", "c"),
			want: placement{Action: placeNone},
		},

		// A volume dies.
		{
			name: "replica missing less than the repair delay", n: 2,
			replicas: vols("a", "b"), order: vols("a", "c"), live: volSet("a", "c"),
			missing: map[string]time.Duration{"b": 10 * time.Second},
			want:    placement{Action: placeWait, Under: true},
		},
		{
			name: "replica just found missing", n: 2,
			replicas: vols("a", "b"), order: vols("a", "c"), live: volSet("a", "c"),
			want: placement{Action: placeWait, Under: true},
		},
		{
			name: "replica missing exactly the repair delay: repair to the next volume on the ring", n: 2,
			replicas: vols("a", "b"), order: vols("c", "a", "d"), live: volSet("a", "c", "d"),
			missing: map[string]time.Duration{"b": testRepairDelay},
			want: placement{Action: placeRepair, Under: true, Sources: vols("a"),
				Targets: vols("c", "d"), Need: 1, Gone: vols("b")},
		},
		{
			name: "repair skips volumes that already hold the key", n: 3,
			replicas: vols("a", "b", "c"), order: vols("a", "d", "b", "e"), live: volSet("a", "b", "d", "e"),
			missing: map[string]time.Duration{"c": time.Hour},
			want: placement{Action: placeRepair, Under: true, Sources: vols("a", "b"),
				Targets: vols("d", "e"), Need: 1, Gone: vols("c")},
		},
		{
			name: "two replicas gone: repair needs two copies", n: 3,
			replicas: vols("a", "b", "c"), order: vols("d", "a", "e"), live: volSet("a", "d", "e"),
			missing: map[string]time.Duration{"b": time.Hour, "c": 2 * time.Hour},
			want: placement{Action: placeRepair, Under: true, Sources: vols("a"),
				Targets: vols("d", "e"), Need: 2, Gone: vols("b", "c")},
		},
		{
			name: "one replica given up, another missing briefly: wait for it", n: 3,
			replicas: vols("a", "b", "c"), order: vols("a", "d"), live: volSet("a", "d"),
			missing: map[string]time.Duration{"b": time.Hour, "c": time.Second},
			want:    placement{Action: placeWait, Under: true},
		},
		{
			name: "all replicas missing: nothing to copy from", n: 2,
			replicas: vols("a", "b"), order: vols("c", "d"), live: volSet("c", "d"),
			missing: map[string]time.Duration{"a": time.Hour, "b": time.Hour},
			want:    placement{Action: placeUnavailable, Under: true},
		},
		{
			name: "all replicas missing, one briefly: wait", n: 2,
			replicas: vols("a", "b"), order: vols("c", "d"), live: volSet("c", "d"),
			missing: map[string]time.Duration{"a": time.Hour, "b": time.Second},
			want:    placement{Action: placeWait, Under: true},
		},
		{
			name: "repair ignores whether membership has settled", n: 2, unsettle: true,
			replicas: vols("a", "b"), order: vols("a", "c"), live: volSet("a", "c"),
			missing: map[string]time.Duration{"b": time.Hour},
			want: placement{Action: placeRepair, Under: true, Sources: vols("a"),
				Targets: vols("c"), Need: 1, Gone: vols("b")},
		},
		{
			name: "extra replica missing briefly, enough live: wait, not under", n: 2,
			replicas: vols("a", "b", "c"), order: vols("a", "b"), live: volSet("a", "b"),
			missing: map[string]time.Duration{"c": time.Second},
			want:    placement{Action: placeWait},
		},
		{
			name: "extra replica given up, enough live: drop it", n: 2,
			replicas: vols("a", "b", "c"), order: vols("a", "b", "d"), live: volSet("a", "b", "d"),
			missing: map[string]time.Duration{"c": time.Hour},
			want: placement{Action: placeDrop, Sources: vols("a", "b"),
				Want: vols("a", "b"), Drop: vols("c")},
		},

		// Fewer volumes than replicas.
		{
			name: "n greater than live volumes: repair with no volume to copy to", n: 3,
			replicas: vols("a", "b"), order: vols("a", "b"), live: volSet("a", "b"),
			want: placement{Action: placeRepair, Under: true, Sources: vols("a", "b"), Need: 1},
		},
		{
			name: "ring has no other volume: repair copies to a draining one", n: 2,
			replicas: vols("a", "b"), order: vols("a"), live: volSet("a", "c"), draining: vols("c"),
			missing: map[string]time.Duration{"b": time.Hour},
			want: placement{Action: placeRepair, Under: true, Sources: vols("a"),
				Targets: vols("c"), Need: 1, Gone: vols("b")},
		},
		{
			name: "draining volumes come after the ring's", n: 2,
			replicas: vols("a", "b"), order: vols("a", "d"), live: volSet("a", "c", "d"), draining: vols("c"),
			missing: map[string]time.Duration{"b": time.Hour},
			want: placement{Action: placeRepair, Under: true, Sources: vols("a"),
				Targets: vols("d", "c"), Need: 1, Gone: vols("b")},
		},
		{
			name: "fewer ring volumes than replicas: nothing moves off a draining one", n: 3,
			replicas: vols("a", "b", "c"), order: vols("a", "b"), live: volSet("a", "b", "c"), draining: vols("c"),
			want: placement{Action: placeNone},
		},

		// A volume drains.
		{
			name: "replica on a draining volume: move off it", n: 2,
			replicas: vols("a", "b"), order: vols("a", "c", "d"), live: volSet("a", "b", "c", "d"), draining: vols("b"),
			want: placement{Action: placeMove, Sources: vols("a", "b"),
				Want: vols("a", "c"), Add: vols("c"), Drop: vols("b")},
		},
		{
			name: "replica on a draining volume, membership not settled: hold", n: 2, unsettle: true,
			replicas: vols("a", "b"), order: vols("a", "c", "d"), live: volSet("a", "b", "c", "d"), draining: vols("b"),
			want: placement{Action: placeHold, Want: vols("a", "c")},
		},
		{
			name: "every replica on draining volumes", n: 2,
			replicas: vols("a", "b"), order: vols("c", "d"), live: volSet("a", "b", "c", "d"), draining: vols("a", "b"),
			want: placement{Action: placeMove, Sources: vols("a", "b"),
				Want: vols("c", "d"), Add: vols("c", "d"), Drop: vols("a", "b")},
		},

		// A volume joins.
		{
			name: "new volume joined and the ring wants it: move", n: 2,
			replicas: vols("a", "b"), order: vols("a", "e", "b", "c"), live: volSet("a", "b", "c", "e"),
			want: placement{Action: placeMove, Sources: vols("a", "b"),
				Want: vols("a", "e"), Add: vols("e"), Drop: vols("b")},
		},
		{
			name: "new volume joined, membership not settled: hold", n: 2, unsettle: true,
			replicas: vols("a", "b"), order: vols("a", "e", "b", "c"), live: volSet("a", "b", "c", "e"),
			want: placement{Action: placeHold, Want: vols("a", "e")},
		},
		{
			name: "new volume joined, the ring does not want it here", n: 2,
			replicas: vols("a", "b"), order: vols("b", "a", "e"), live: volSet("a", "b", "e"),
			want: placement{Action: placeNone},
		},

		// A volume returns.
		{
			name: "replica's volume returned before the repair delay", n: 2,
			replicas: vols("a", "b"), order: vols("a", "b", "c"), live: volSet("a", "b", "c"),
			want: placement{Action: placeNone},
		},
		{
			name: "volume returned after its replica was repaired elsewhere: move back", n: 2,
			replicas: vols("a", "c"), order: vols("a", "b", "c"), live: volSet("a", "b", "c"),
			want: placement{Action: placeMove, Sources: vols("a", "c"),
				Want: vols("a", "b"), Add: vols("b"), Drop: vols("c")},
		},

		// More replicas than n.
		{
			name: "more replicas than n, all live: drop the one the ring does not want", n: 2,
			replicas: vols("a", "b", "c"), order: vols("a", "c", "b"), live: volSet("a", "b", "c"),
			want: placement{Action: placeDrop, Sources: vols("a", "b", "c"),
				Want: vols("a", "c"), Drop: vols("b")},
		},
		{
			name: "more replicas than n, membership not settled: hold", n: 2, unsettle: true,
			replicas: vols("a", "b", "c"), order: vols("a", "c", "b"), live: volSet("a", "b", "c"),
			want: placement{Action: placeHold, Want: vols("a", "c")},
		},
		{
			name: "half-done move (extra copies) finishes, dropping and adding", n: 2,
			replicas: vols("a", "b", "c"), order: vols("d", "c", "a"), live: volSet("a", "b", "c", "d"),
			want: placement{Action: placeMove, Sources: vols("a", "b", "c"),
				Want: vols("d", "c"), Add: vols("d"), Drop: vols("a", "b")},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			missing := tt.missing
			if missing == nil {
				missing = map[string]time.Duration{}
			}
			v := &placementView{
				Replicas:    tt.n,
				Live:        tt.live,
				Draining:    tt.draining,
				Settled:     !tt.unsettle,
				MissingFor:  missing,
				RepairDelay: testRepairDelay,
			}
			replicas, order := slices.Clone(tt.replicas), slices.Clone(tt.order)
			got := decidePlacement(v, replicas, order)
			if !samePlacement(got, tt.want) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
			if !slices.Equal(replicas, tt.replicas) || !slices.Equal(order, tt.order) {
				t.Errorf("inputs modified: replicas %v, order %v", replicas, order)
			}
		})
	}
}

func TestPlacementRepairDelayZero(t *testing.T) {
	// With no repair delay a volume is given up on as soon as a pass finds
	// it missing.
	v := &placementView{Replicas: 2, Live: volSet("a", "c"), Settled: true, MissingFor: map[string]time.Duration{}}
	got := decidePlacement(v, vols("a", "b"), vols("a", "c"))
	want := placement{Action: placeRepair, Under: true, Sources: vols("a"), Targets: vols("c"), Need: 1, Gone: vols("b")}
	if !samePlacement(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestPlacementRepairPlanIgnoresDelay(t *testing.T) {
	// Verify's restore repairs at once: planRepair does not wait for a
	// volume missing less than the delay.
	v := &placementView{Replicas: 2, Live: volSet("a", "c"), MissingFor: map[string]time.Duration{}, RepairDelay: time.Hour}
	got := planRepair(v, vols("a", "b"), vols("a", "c"))
	want := placement{Action: placeRepair, Under: true, Sources: vols("a"), Targets: vols("c"), Need: 1, Gone: vols("b")}
	if !samePlacement(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
	got = planRepair(v, vols("b", "d"), vols("a", "c"))
	want = placement{Action: placeUnavailable, Under: true}
	if !samePlacement(got, want) {
		t.Errorf("no live replica: got %v, want %v", got, want)
	}
}

func TestPlacementSource(t *testing.T) {
	repair := placement{Action: placeRepair, Sources: vols("a", "b", "c")}
	move := placement{Action: placeMove, Sources: vols("a", "b", "c"), Want: vols("c", "d")}
	tests := []struct {
		name        string
		plan        placement
		unreachable map[string]bool
		want        string
	}{
		{"repair: first replica", repair, nil, "a"},
		{"repair: first reachable replica", repair, volSet("a"), "b"},
		{"repair: none reachable, first replica", repair, volSet("a", "b", "c"), "a"},
		{"move: a replica that stays, over earlier ones", move, nil, "c"},
		{"move: an unreachable replica that stays, over reachable ones that go", move, volSet("c"), "c"},
		{"move: none stays, first reachable", placement{Action: placeMove, Sources: vols("a", "b"), Want: vols("c", "d")}, volSet("a"), "b"},
		{"no sources", placement{Action: placeUnavailable}, nil, ""},
	}
	for _, tt := range tests {
		if got := tt.plan.source(tt.unreachable); got != tt.want {
			t.Errorf("%s: got %q, want %q", tt.name, got, tt.want)
		}
	}
}

// samePlacement compares decisions field by field; a nil and an empty
// list are the same.
func samePlacement(a, b placement) bool {
	return a.Action == b.Action && a.Under == b.Under && a.Need == b.Need &&
		slices.Equal(a.Sources, b.Sources) && slices.Equal(a.Targets, b.Targets) &&
		slices.Equal(a.Gone, b.Gone) && slices.Equal(a.Want, b.Want) &&
		slices.Equal(a.Add, b.Add) && slices.Equal(a.Drop, b.Drop)
}
