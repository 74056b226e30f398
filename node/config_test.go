package node

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// checkFilled fails for every exported field of cfg (a struct) that is zero
// and not named in mayBeZero: a preset names every default explicitly.
func checkFilled(t *testing.T, cfg any, mayBeZero ...string) {
	t.Helper()
	v := reflect.ValueOf(cfg)
	for i := 0; i < v.NumField(); i++ {
		f := v.Type().Field(i)
		if !f.IsExported() {
			continue
		}
		zero := v.Field(i).IsZero()
		allowed := false
		for _, n := range mayBeZero {
			allowed = allowed || n == f.Name
		}
		switch {
		case zero && !allowed:
			t.Errorf("%s.%s is zero: the preset must set it", v.Type().Name(), f.Name)
		case !zero && allowed:
			t.Errorf("%s.%s is %v: the test expected it empty (update the test)", v.Type().Name(), f.Name, v.Field(i))
		}
	}
}

func TestConfigDefaultMasterComplete(t *testing.T) {
	d := DefaultMasterConfig()
	// Off by default, or empty because they have no default value.
	checkFilled(t, d, "Secret", "APIKeys", "Rebuild", "MaxConnsPerIP", "Pprof", "DisableWriteRedirect", "Raft")
	checkFilled(t, d.Gossip, "Bind", "Advertise", "Join", "Secret")
	if err := d.Validate(); err != nil {
		t.Fatalf("DefaultMasterConfig().Validate(): %v", err)
	}
	want := map[string]any{
		"Replicas": 2, "MaxValueSize": int64(5 << 30), "RepairDelay": time.Minute,
		"RebalanceRate": int64(128 << 20), "RebalanceDelay": 30 * time.Second,
		"RebalanceConcurrency": 4, "MaxConns": 10000, "Addr": ":3000", "Name": "master",
		"Dir": "./data/master",
	}
	v := reflect.ValueOf(d)
	for name, w := range want {
		if got := v.FieldByName(name).Interface(); got != w {
			t.Errorf("DefaultMasterConfig().%s = %v, want %v", name, got, w)
		}
	}
	// The preset is what withDefaults fills in: starting from it changes
	// nothing but the derived gossip address.
	got := d.withDefaults()
	if got.Gossip.Bind != ":4000" {
		t.Errorf("gossip bind derived from :3000: got %q, want :4000", got.Gossip.Bind)
	}
	got.Gossip.Bind = ""
	if !reflect.DeepEqual(got, d) {
		t.Errorf("DefaultMasterConfig().withDefaults() changed it:\n got %+v\nwant %+v", got, d)
	}
}

func TestConfigDefaultVolumeComplete(t *testing.T) {
	d := DefaultVolumeConfig()
	// Name, Advertise and Weight are derived at start; Capacity 0 is the
	// disk's size, Reserve 0 none.
	checkFilled(t, d, "Name", "Advertise", "Secret", "Capacity", "Reserve", "Weight", "Pprof", "MaxConnsPerIP")
	if err := d.Validate(); err != nil {
		t.Fatalf("DefaultVolumeConfig().Validate(): %v", err)
	}
	if d.ScrubInterval != 24*time.Hour || d.ScrubRate != 50<<20 || d.MaxConns != 10000 || d.Addr != ":3001" {
		t.Errorf("DefaultVolumeConfig() = %+v", d)
	}
	got := d.withDefaults()
	got.Gossip.Bind = ""
	if !reflect.DeepEqual(got, d) {
		t.Errorf("DefaultVolumeConfig().withDefaults() changed it:\n got %+v\nwant %+v", got, d)
	}
}

// TestConfigZeroTakesPreset: a config built from scratch (as the tests build
// theirs) runs with the preset's values, but for the fields documented to
// differ: Dir (required), the connection caps (none), and the gossip and ring
// settings, whose empty values their packages read as the same defaults.
func TestConfigZeroTakesPreset(t *testing.T) {
	m := MasterConfig{Dir: "d"}.withDefaults()
	dm := DefaultMasterConfig()
	for _, c := range []*MasterConfig{&m, &dm} {
		c.Dir, c.MaxConns, c.Logger, c.Gossip, c.Ring = "", 0, nil, GossipConfig{}, dm.Ring
	}
	if !reflect.DeepEqual(m, dm) {
		t.Errorf("zero MasterConfig with defaults:\n got %+v\nwant %+v", m, dm)
	}
	v := VolumeConfig{Dir: "d"}.withDefaults()
	dv := DefaultVolumeConfig()
	for _, c := range []*VolumeConfig{&v, &dv} {
		c.Dir, c.MaxConns, c.Logger, c.Gossip = "", 0, nil, GossipConfig{}
	}
	if !reflect.DeepEqual(v, dv) {
		t.Errorf("zero VolumeConfig with defaults:\n got %+v\nwant %+v", v, dv)
	}
	// Unlimited and Never survive: they are not zero.
	v = VolumeConfig{Dir: "d", ScrubRate: Unlimited, ScrubInterval: Never}.withDefaults()
	if v.ScrubRate != Unlimited || v.ScrubInterval != Never {
		t.Errorf("Unlimited and Never became %d and %v", v.ScrubRate, v.ScrubInterval)
	}
	if m := (MasterConfig{Dir: "d", RebalanceRate: Unlimited}).withDefaults(); m.RebalanceRate != Unlimited {
		t.Errorf("RebalanceRate Unlimited became %d", m.RebalanceRate)
	}
}

func TestConfigValidateReplicas(t *testing.T) {
	for _, tc := range []struct {
		replicas int
		ok       bool
	}{{-1, false}, {0, true}, {1, true}, {2, true}, {16, true}, {17, false}, {1000, false}} {
		c := DefaultMasterConfig()
		c.Replicas = tc.replicas
		err := c.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("Replicas %d: Validate() = %v, want ok %v", tc.replicas, err, tc.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "want 1 to 16") {
			t.Errorf("Replicas %d: error %q does not say what is accepted", tc.replicas, err)
		}
	}
}

func TestConfigValidateConnCaps(t *testing.T) {
	m := DefaultMasterConfig()
	m.MaxConnsPerIP = -1
	if err := m.Validate(); err == nil {
		t.Error("MasterConfig with MaxConnsPerIP -1 validated")
	}
	v := DefaultVolumeConfig()
	v.MaxConns = -1
	if err := v.Validate(); err == nil {
		t.Error("VolumeConfig with MaxConns -1 validated")
	}
}
