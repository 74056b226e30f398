package ring

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/buraksezer/consistent"
)

// vols returns volumes prefix1..prefixN of weight w.
func vols(prefix string, n, w int) []Member {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{Name: fmt.Sprintf("%s%d", prefix, i+1), Weight: w}
	}
	return ms
}

func mustNew(t testing.TB, cfg Config, ms []Member) *Ring {
	t.Helper()
	r, err := New(cfg, ms)
	if err != nil {
		t.Fatalf("New(%+v, %d members): %v", cfg, len(ms), err)
	}
	return r
}

func key(i int) []byte { return fmt.Appendf(nil, "key-%d", i) }

func TestDefaultConfig(t *testing.T) {
	// Changing a default re-places every key of clusters that rely on it.
	want := Config{Partitions: 1021, Load: 1.25, VirtualNodes: 100}
	if got := DefaultConfig(); got != want {
		t.Fatalf("DefaultConfig() = %+v, want %+v", got, want)
	}
	if got := (Config{}).withDefaults(); got != want {
		t.Errorf("Config{}.withDefaults() = %+v, want %+v", got, want)
	}
	partial := Config{Partitions: 7}
	if got, want := partial.withDefaults(), (Config{Partitions: 7, Load: 1.25, VirtualNodes: 100}); got != want {
		t.Errorf("%+v.withDefaults() = %+v, want %+v", partial, got, want)
	}
	r := mustNew(t, Config{VirtualNodes: 5}, vols("vol", 3, 1))
	if got, want := r.Config(), (Config{Partitions: 1021, Load: 1.25, VirtualNodes: 5}); got != want {
		t.Errorf("Ring.Config() = %+v, want %+v", got, want)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		cfg     Config
		wantErr string // substring; "" means valid
	}{
		{Config{}, ""},
		{DefaultConfig(), ""},
		{Config{Partitions: 1, Load: 1, VirtualNodes: 1}, ""},
		{Config{Partitions: 1 << 20, Load: 1000, VirtualNodes: 1000}, ""},
		{Config{Partitions: -1}, "Partitions is -1"},
		{Config{Partitions: 1<<20 + 1}, "Partitions is 1048577"},
		{Config{Load: 0.99}, "Load is 0.99"},
		{Config{Load: -1}, "Load is -1"},
		{Config{Load: math.NaN()}, "Load is NaN"},
		{Config{Load: math.Inf(1)}, "Load is +Inf"},
		{Config{VirtualNodes: -3}, "VirtualNodes is -3"},
		{Config{VirtualNodes: 1001}, "VirtualNodes is 1001"},
	}
	for _, tt := range tests {
		err := tt.cfg.Validate()
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%+v.Validate() = %v, want nil", tt.cfg, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%+v.Validate() = %v, want error containing %q", tt.cfg, err, tt.wantErr)
		}
		if tt.wantErr != "" {
			if _, err := New(tt.cfg, vols("vol", 3, 1)); err == nil {
				t.Errorf("New(%+v) succeeded, want error", tt.cfg)
			}
		}
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		members []Member
		wantErr string
	}{
		{"empty name", Config{}, []Member{{Name: "a"}, {Name: ""}}, "member 1: empty name"},
		{"hash in name", Config{}, []Member{{Name: "a#1"}}, `member "a#1": name must not contain '#'`},
		{"negative weight", Config{}, []Member{{Name: "a", Weight: -1}}, `member "a": weight is -1`},
		{"weight too large", Config{}, []Member{{Name: "a", Weight: 1001}}, `member "a": weight is 1001`},
		{"duplicate", Config{}, []Member{{Name: "b"}, {Name: "a"}, {Name: "b", Weight: 2}}, `duplicate member "b"`},
		{"total weight above partitions", Config{Partitions: 7}, []Member{{Name: "a", Weight: 4}, {Name: "b", Weight: 4}}, "total weight of 2 members is 8, more than the 7 partitions"},
		{"bad config", Config{Load: 0.5}, []Member{{Name: "a"}}, "Load is 0.5"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := New(tt.cfg, tt.members)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("New() = %v, %v; want error containing %q", r, err, tt.wantErr)
			}
		})
	}
}

func TestNewAccepts(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		members []Member
	}{
		{"no members", Config{}, nil},
		{"one member", Config{}, []Member{{Name: "a"}}},
		// One virtual node keeps this quick: New is quadratic in ring members.
		{"max weight", Config{VirtualNodes: 1}, []Member{{Name: "a", Weight: 1000}, {Name: "b"}}},
		{"total weight equals partitions", Config{Partitions: 8}, []Member{{Name: "a", Weight: 4}, {Name: "b", Weight: 4}}},
		{"one partition", Config{Partitions: 1}, []Member{{Name: "a"}}},
		{"load 1", Config{Partitions: 13, Load: 1}, vols("vol", 13, 1)},
		{"one virtual node", Config{VirtualNodes: 1}, vols("vol", 10, 1)},
		{"odd names", Config{}, []Member{{Name: "a:b"}, {Name: "1:a"}, {Name: "ü/ß "}, {Name: "0"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := mustNew(t, tt.cfg, tt.members)
			if got, want := r.Len(), len(tt.members); got != want {
				t.Errorf("Len() = %d, want %d", got, want)
			}
			checkInvariants(t, r)
		})
	}
}

// checkInvariants checks every partition's preference list and the owner
// counts of r.
func checkInvariants(t *testing.T, r *Ring) {
	t.Helper()
	if r.Len() == 0 {
		if got := r.Order([]byte("k")); got != nil {
			t.Errorf("empty ring: Order() = %v, want nil", got)
		}
		if got := r.MaxPartitions(); got != 0 {
			t.Errorf("empty ring: MaxPartitions() = %d, want 0", got)
		}
		return
	}
	names := make([]string, 0, r.Len())
	for _, m := range r.Members() {
		names = append(names, m.Name)
	}
	owned := make(map[string]int)
	for p := range r.cfg.Partitions {
		o := r.orders[r.orderOf[p]]
		sorted := slices.Sorted(slices.Values(o))
		if !slices.Equal(sorted, names) {
			t.Fatalf("partition %d: order %v is not a permutation of %v", p, o, names)
		}
		owned[o[0]]++
	}
	got := r.PartitionsOf()
	if len(got) != r.Len() {
		t.Errorf("PartitionsOf() has %d volumes, want %d", len(got), r.Len())
	}
	total := 0
	for _, m := range r.Members() {
		if got[m.Name] != owned[m.Name] {
			t.Errorf("PartitionsOf()[%q] = %d, want %d", m.Name, got[m.Name], owned[m.Name])
		}
		if limit := m.Weight * r.MaxPartitions(); got[m.Name] > limit {
			t.Errorf("%q (weight %d) owns %d partitions, want <= %d (MaxPartitions %d)",
				m.Name, m.Weight, got[m.Name], limit, r.MaxPartitions())
		}
		total += got[m.Name]
	}
	if total != r.cfg.Partitions {
		t.Errorf("partitions owned sum to %d, want %d", total, r.cfg.Partitions)
	}
}

func TestNewDoesNotMutateInput(t *testing.T) {
	in := []Member{{Name: "c"}, {Name: "a", Weight: 2}, {Name: "b", Weight: 0}}
	orig := slices.Clone(in)
	r := mustNew(t, Config{}, in)
	if !slices.Equal(in, orig) {
		t.Errorf("New changed its input: got %v, want %v", in, orig)
	}
	want := []Member{{Name: "a", Weight: 2}, {Name: "b", Weight: 1}, {Name: "c", Weight: 1}}
	got := r.Members()
	if !slices.Equal(got, want) {
		t.Errorf("Members() = %v, want %v", got, want)
	}
	got[0].Name = "changed"
	if again := r.Members(); !slices.Equal(again, want) {
		t.Errorf("Members() after modifying a returned copy = %v, want %v", again, want)
	}
}

func TestHasLen(t *testing.T) {
	r := mustNew(t, Config{}, []Member{{Name: "vol2"}, {Name: "vol10"}, {Name: "vol1", Weight: 3}})
	if got, want := r.Len(), 3; got != want {
		t.Errorf("Len() = %d, want %d", got, want)
	}
	for _, tt := range []struct {
		name string
		want bool
	}{{"vol1", true}, {"vol2", true}, {"vol10", true}, {"vol3", false}, {"", false}, {"vol1#0", false}, {"vol", false}} {
		if got := r.Has(tt.name); got != tt.want {
			t.Errorf("Has(%q) = %v, want %v", tt.name, got, tt.want)
		}
	}
	var empty Ring
	if empty.Has("a") || empty.Len() != 0 {
		t.Errorf("zero Ring: Has(a) = %v, Len() = %d; want false, 0", empty.Has("a"), empty.Len())
	}
}

func TestPartitionMatchesConsistent(t *testing.T) {
	for _, p := range []int{1, 7, 271, 1021, 65521} {
		r := mustNew(t, Config{Partitions: p}, vols("vol", 1, 1))
		c := consistent.New(nil, consistent.Config{Hasher: hasher{}, PartitionCount: p, ReplicationFactor: 20, Load: 1.25})
		for i := range 2000 {
			k := key(i)
			if got, want := r.Partition(k), c.FindPartitionID(k); got != want {
				t.Fatalf("P=%d: Partition(%q) = %d, want %d (consistent.FindPartitionID)", p, k, got, want)
			}
		}
		if got, want := r.Partition(nil), c.FindPartitionID(nil); got != want {
			t.Errorf("P=%d: Partition(nil) = %d, want %d", p, got, want)
		}
	}
}

func TestLocate(t *testing.T) {
	for _, ms := range [][]Member{
		vols("vol", 1, 1),
		vols("vol", 5, 1),
		append(vols("hdd", 3, 1), vols("ssd", 3, 4)...),
	} {
		r := mustNew(t, Config{}, ms)
		for i := range 500 {
			k := key(i)
			order := r.Order(k)
			if len(order) != r.Len() {
				t.Fatalf("len(Order(%q)) = %d, want %d", k, len(order), r.Len())
			}
			for n := 1; n <= r.Len(); n++ {
				got, err := r.Locate(k, n)
				if err != nil {
					t.Fatalf("Locate(%q, %d): %v", k, n, err)
				}
				if want := order[:n]; !slices.Equal(got, want) {
					t.Fatalf("Locate(%q, %d) = %v, want Order()[:n] = %v", k, n, got, want)
				}
				if cap(got) != n {
					t.Fatalf("cap(Locate(%q, %d)) = %d, want %d", k, n, cap(got), n)
				}
			}
		}
	}
}

func TestLocateAppendDoesNotCorruptRing(t *testing.T) {
	r := mustNew(t, Config{}, vols("vol", 5, 1))
	k := []byte("some key")
	want := slices.Clone(r.Order(k))
	got, err := r.Locate(k, 2)
	if err != nil {
		t.Fatal(err)
	}
	_ = append(got, "intruder")
	if after := r.Order(k); !slices.Equal(after, want) {
		t.Errorf("Order() after appending to Locate's result = %v, want %v", after, want)
	}
}

func TestLocateErrors(t *testing.T) {
	empty := mustNew(t, Config{}, nil)
	three := mustNew(t, Config{}, vols("vol", 3, 2))
	tests := []struct {
		name       string
		r          *Ring
		n          int
		notEnough  bool // want errors.Is(err, ErrNotEnoughMembers)
		wantErrSub string
	}{
		{"empty ring", empty, 1, true, "locate 1 replicas on 0 volumes"},
		{"n above volumes", three, 4, true, "locate 4 replicas on 3 volumes"},
		{"n counts volumes, not weight", three, 6, true, "locate 6 replicas on 3 volumes"},
		{"n zero", three, 0, false, "want at least 1"},
		{"n negative", three, -2, false, "want at least 1"},
		{"n zero on empty ring", empty, 0, false, "want at least 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.r.Locate([]byte("k"), tt.n)
			if err == nil {
				t.Fatalf("Locate(k, %d) = %v, nil; want error", tt.n, got)
			}
			if errors.Is(err, ErrNotEnoughMembers) != tt.notEnough {
				t.Errorf("errors.Is(%v, ErrNotEnoughMembers) = %v, want %v", err, !tt.notEnough, tt.notEnough)
			}
			if !strings.Contains(err.Error(), tt.wantErrSub) {
				t.Errorf("error %q does not contain %q", err, tt.wantErrSub)
			}
			if got != nil {
				t.Errorf("Locate(k, %d) = %v, want nil with the error", tt.n, got)
			}
		})
	}
}

func TestMemberOrderIndependence(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, ms := range [][]Member{
		vols("vol", 7, 1),
		append(vols("hdd", 4, 1), append(vols("ssd", 3, 3), Member{Name: "big", Weight: 10})...),
	} {
		ref := mustNew(t, Config{}, ms)
		for range 5 {
			shuffled := slices.Clone(ms)
			rng.Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
			r := mustNew(t, Config{}, shuffled)
			for p := range ref.cfg.Partitions {
				got, want := r.orders[r.orderOf[p]], ref.orders[ref.orderOf[p]]
				if !slices.Equal(got, want) {
					t.Fatalf("members %v: partition %d order = %v, want %v (as built from %v)", shuffled, p, got, want, ms)
				}
			}
		}
	}
}

func TestOwnerLoadBound(t *testing.T) {
	for _, n := range []int{1, 2, 3, 4, 5, 10, 30, 100, 300} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			r := mustNew(t, Config{}, vols("vol", n, 1))
			want := int(math.Ceil(1021.0 / float64(n) * 1.25))
			if got := r.MaxPartitions(); got != min(want, 1021) {
				t.Errorf("MaxPartitions() = %d, want %d", got, min(want, 1021))
			}
			checkInvariants(t, r)
		})
	}
	r := mustNew(t, Config{}, []Member{{Name: "a", Weight: 3}, {Name: "b", Weight: 2}, {Name: "c"}})
	if got, want := r.MaxPartitions(), int(math.Ceil(1021.0/6*1.25)); got != want {
		t.Errorf("weights 3+2+1: MaxPartitions() = %d, want %d (6 ring members)", got, want)
	}
	checkInvariants(t, r)
}

func TestWeights(t *testing.T) {
	// Ten volumes of weight 1 and ten of weight 2: each weight-2 volume should
	// own about twice the partitions of a weight-1 volume.
	ms := append(vols("one", 10, 1), vols("two", 10, 2)...)
	r := mustNew(t, Config{}, ms)
	checkInvariants(t, r)
	owned := r.PartitionsOf()
	var sum1, sum2 int
	for _, m := range ms {
		if m.Weight == 1 {
			sum1 += owned[m.Name]
		} else {
			sum2 += owned[m.Name]
		}
	}
	ratio := float64(sum2) / float64(sum1)
	t.Logf("weight 2 vs weight 1: %d vs %d partitions, ratio %.2f; per volume %v", sum2, sum1, ratio, owned)
	if ratio < 1.6 || ratio > 2.4 {
		t.Errorf("weight-2 volumes own %.2f times the partitions of weight-1 volumes, want 2 ± 0.4", ratio)
	}
	// Per volume, against its ideal share 1021 × w / 30.
	for _, m := range ms {
		ideal := 1021.0 * float64(m.Weight) / 30
		if got := float64(owned[m.Name]); got < 0.5*ideal || got > 1.25*ideal+float64(m.Weight) {
			t.Errorf("%q (weight %d) owns %v partitions, want within [0.5, 1.25] × %.1f", m.Name, m.Weight, got, ideal)
		}
	}
}

func TestDiff(t *testing.T) {
	four := mustNew(t, Config{}, vols("vol", 4, 1))
	five := mustNew(t, Config{}, vols("vol", 5, 1))
	one := mustNew(t, Config{}, vols("vol", 1, 1))
	empty := mustNew(t, Config{}, nil)

	minus := func(a, b []string) []string {
		var out []string
		for _, v := range a {
			if !slices.Contains(b, v) {
				out = append(out, v)
			}
		}
		return out
	}
	// Find keys for which the join of vol5 changes one of the first two
	// replicas, both of them, and neither.
	var one1, both, still []byte
	for i := 0; one1 == nil || both == nil || still == nil; i++ {
		k := key(i)
		switch len(minus(five.Order(k)[:2], four.Order(k)[:2])) {
		case 0:
			if still == nil && slices.Equal(four.Order(k)[:2], five.Order(k)[:2]) {
				still = k
			}
		case 1:
			if one1 == nil && slices.Contains(five.Order(k)[:2], "vol5") {
				one1 = k
			}
		case 2:
			if both == nil {
				both = k
			}
		}
	}
	o4, o5 := four.Order(one1), five.Order(one1)
	joinAdd, joinDrop := minus(o5[:2], o4[:2]), minus(o4[:2], o5[:2])
	if !slices.Equal(joinAdd, []string{"vol5"}) || len(joinDrop) != 1 {
		t.Fatalf("test setup: key %q: join adds %v and drops %v, want [vol5] and one volume", one1, joinAdd, joinDrop)
	}
	b4, b5 := four.Order(both)[:2], five.Order(both)[:2]
	moved := one1

	tests := []struct {
		name           string
		prev, next     *Ring
		key            []byte
		n              int
		wantAdd, wantD []string
	}{
		{"nil to ring adds all", nil, five, moved, 3, five.Order(moved)[:3], nil},
		{"empty to ring adds all", empty, five, moved, 2, five.Order(moved)[:2], nil},
		{"ring to nil drops all", five, nil, moved, 3, nil, five.Order(moved)[:3]},
		{"nil to nil", nil, nil, moved, 3, nil, nil},
		{"same ring", five, five, moved, 3, nil, nil},
		{"equal rings", five, mustNew(t, Config{}, vols("vol", 5, 1)), moved, 5, nil, nil},
		{"n zero", four, five, moved, 0, nil, nil},
		{"join moves a replica", four, five, moved, 2, joinAdd, joinDrop},
		{"leave moves it back", five, four, moved, 2, joinDrop, joinAdd},
		{"join elsewhere", four, five, still, 2, nil, nil},
		{"join moves both replicas", four, five, both, 2, b5, b4},
		{"leave moves both back", five, four, both, 2, b4, b5},
		{"n clamped on small ring", one, five, moved, 3, minus(o5[:3], []string{"vol1"}), minus([]string{"vol1"}, o5[:3])},
		{"n above both", four, five, moved, 9, []string{"vol5"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			add, drop := Diff(tt.prev, tt.next, tt.key, tt.n)
			if !slices.Equal(add, tt.wantAdd) || !slices.Equal(drop, tt.wantD) {
				t.Errorf("Diff(key %q, n %d) = add %v, drop %v; want add %v, drop %v", tt.key, tt.n, add, drop, tt.wantAdd, tt.wantD)
			}
		})
	}
}

func TestZeroAllocs(t *testing.T) {
	r := mustNew(t, Config{}, vols("vol", 10, 1))
	k := []byte("key-42")
	for _, tt := range []struct {
		name string
		f    func()
	}{
		{"Locate", func() { _, _ = r.Locate(k, 3) }},
		{"Order", func() { _ = r.Order(k) }},
		{"Partition", func() { _ = r.Partition(k) }},
		{"Has", func() { _ = r.Has("vol7") }},
	} {
		if got := testing.AllocsPerRun(1000, tt.f); got != 0 {
			t.Errorf("%s: %v allocs per run, want 0", tt.name, got)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	prev := mustNew(t, Config{}, vols("vol", 4, 1))
	next := mustNew(t, Config{}, vols("vol", 5, 1))
	want := make([][]string, 1000)
	for i := range want {
		want[i] = slices.Clone(next.Order(key(i)))
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range want {
				k := key((i + g*131) % len(want))
				got, err := next.Locate(k, 3)
				if err != nil {
					t.Error(err)
					return
				}
				if w := want[(i+g*131)%len(want)][:3]; !slices.Equal(got, w) {
					t.Errorf("Locate(%q, 3) = %v, want %v", k, got, w)
					return
				}
				_ = append(got, "x") // capped: must not race with other readers
				Diff(prev, next, k, 2)
				_ = next.PartitionsOf()
				_ = next.Members()
			}
		})
	}
	wg.Wait()
}
