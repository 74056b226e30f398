package ring

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// The hashing must not change: stored keys are found through their placement,
// so a change here (a new library version, hasher, member naming or default)
// strands data. Regenerate testdata/golden.json with -update only for a
// deliberate, migrated change.
var update = flag.Bool("update", false, "rewrite testdata/golden.json from the current placement")

const goldenFile = "testdata/golden.json"

type goldenFileT struct {
	Comment string      `json:"comment"`
	Sets    []goldenSet `json:"sets"`
}

type goldenSet struct {
	Name     string      `json:"name"`
	Config   Config      `json:"config"`
	Members  []Member    `json:"members"`
	Replicas int         `json:"replicas"`
	Keys     []goldenKey `json:"keys"`
}

type goldenKey struct {
	Key       string   `json:"key"`
	Partition int      `json:"partition"`
	Locate    []string `json:"locate"`
}

// goldenSets are the member sets pinned by the golden file; they use
// DefaultConfig, so the file also pins the defaults.
func goldenSets() []goldenSet {
	return []goldenSet{
		{Name: "uniform", Members: vols("vol", 5, 1)},
		{Name: "weighted", Members: []Member{
			{Name: "hdd1", Weight: 1}, {Name: "hdd2", Weight: 2},
			{Name: "ssd1", Weight: 3}, {Name: "ssd2", Weight: 4}, {Name: "tiny"},
		}},
	}
}

func computeGolden(t *testing.T) goldenFileT {
	t.Helper()
	g := goldenFileT{Comment: "Pinned placement of ring (kvdb): must never change by accident. Regenerate with go test ./ring -run TestGolden -update."}
	for _, set := range goldenSets() {
		set.Config = DefaultConfig()
		set.Replicas = 3
		r := mustNew(t, set.Config, set.Members)
		for i := range 200 {
			k := key(i)
			loc, err := r.Locate(k, set.Replicas)
			if err != nil {
				t.Fatalf("%s: Locate(%q): %v", set.Name, k, err)
			}
			set.Keys = append(set.Keys, goldenKey{Key: string(k), Partition: r.Partition(k), Locate: slices.Clone(loc)})
		}
		g.Sets = append(g.Sets, set)
	}
	return g
}

func TestGolden(t *testing.T) {
	got := computeGolden(t)
	if *update {
		b, err := encodeGolden(got)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(filepath.Dir(goldenFile), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(goldenFile, b, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote %s", goldenFile)
		return
	}
	b, err := os.ReadFile(goldenFile)
	if err != nil {
		t.Fatalf("read golden placement: %v (generate it with -update)", err)
	}
	var want goldenFileT
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&want); err != nil {
		t.Fatalf("decode %s: %v", goldenFile, err)
	}
	if len(got.Sets) != len(want.Sets) {
		t.Fatalf("got %d member sets, want %d", len(got.Sets), len(want.Sets))
	}
	for i, w := range want.Sets {
		g := got.Sets[i]
		if g.Name != w.Name || g.Config != w.Config || g.Replicas != w.Replicas || !slices.Equal(g.Members, w.Members) {
			t.Errorf("set %d: got %s %+v %v n=%d, want %s %+v %v n=%d",
				i, g.Name, g.Config, g.Members, g.Replicas, w.Name, w.Config, w.Members, w.Replicas)
			continue
		}
		if len(g.Keys) != len(w.Keys) {
			t.Errorf("%s: got %d keys, want %d", w.Name, len(g.Keys), len(w.Keys))
			continue
		}
		bad := 0
		for j, wk := range w.Keys {
			gk := g.Keys[j]
			if gk.Key != wk.Key || gk.Partition != wk.Partition || !slices.Equal(gk.Locate, wk.Locate) {
				bad++
				if bad <= 10 {
					t.Errorf("%s: key %q: got partition %d, Locate %v; want key %q partition %d, Locate %v",
						w.Name, gk.Key, gk.Partition, gk.Locate, wk.Key, wk.Partition, wk.Locate)
				}
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d of %d keys placed differently: the hashing must not change", w.Name, bad, len(w.Keys))
		}
	}
}

// encodeGolden writes g as JSON with one key per line, so that a diff of the
// file shows which keys moved.
func encodeGolden(g goldenFileT) ([]byte, error) {
	var buf bytes.Buffer
	line := func(prefix string, v any, suffix string) error {
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		buf.WriteString(prefix)
		buf.Write(b)
		buf.WriteString(suffix + "\n")
		return nil
	}
	if err := line(`{"comment": `, g.Comment, `, "sets": [`); err != nil {
		return nil, err
	}
	for i, set := range g.Sets {
		keys := set.Keys
		set.Keys = nil
		head, err := json.Marshal(set)
		if err != nil {
			return nil, err
		}
		// Reopen the marshalled set (its "keys" is null) to list the keys.
		head = bytes.TrimSuffix(head, []byte(`"keys":null}`))
		buf.WriteString("  ")
		buf.Write(head)
		buf.WriteString(`"keys": [` + "\n")
		for j, k := range keys {
			sep := ","
			if j == len(keys)-1 {
				sep = ""
			}
			if err := line("    ", k, sep); err != nil {
				return nil, err
			}
		}
		sep := ","
		if i == len(g.Sets)-1 {
			sep = ""
		}
		buf.WriteString("  ]}" + sep + "\n")
	}
	buf.WriteString("]}\n")
	if !json.Valid(buf.Bytes()) {
		return nil, fmt.Errorf("encodeGolden: produced invalid JSON")
	}
	return buf.Bytes(), nil
}

// TestGoldenPartition pins a few key → partition values in the code itself:
// they can only change by changing the hash or the default partition count,
// which remaps every key of a cluster.
func TestGoldenPartition(t *testing.T) {
	r := mustNew(t, Config{}, nil)
	tests := []struct {
		key  string
		want int
	}{
		{"", 969},
		{"key-0", 492},
		{"key-1", 240},
		{"key-199", 557},
		{"/some/path/to/a/blob.bin", 325},
	}
	for _, tt := range tests {
		if got := r.Partition([]byte(tt.key)); got != tt.want {
			t.Errorf("Partition(%q) = %d, want %d", tt.key, got, tt.want)
		}
	}
	for _, tt := range []struct {
		p    int
		key  string
		want int
	}{{271, "key-0", 167}, {65521, "key-0", 56052}} {
		r := mustNew(t, Config{Partitions: tt.p}, nil)
		if got := r.Partition([]byte(tt.key)); got != tt.want {
			t.Errorf("Partitions=%d: Partition(%q) = %d, want %d", tt.p, tt.key, got, tt.want)
		}
	}
}

func ExampleRing_Locate() {
	r, err := New(DefaultConfig(), []Member{
		{Name: "vol1"}, {Name: "vol2"}, {Name: "vol3"}, {Name: "vol4", Weight: 2},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	replicas, err := r.Locate([]byte("/photos/cat.jpg"), 3)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("owner:", replicas[0], "all:", replicas)
	// Output: owner: vol4 all: [vol4 vol1 vol3]
}
