package node

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdb/kvdb/bench"
)

// replicaSampler checks, while membership changes, that sampled keys are
// readable through the master and that every replica their record names
// holds the value, with at least want replicas. It runs until stopped.
type replicaSampler struct {
	c       *testCluster
	keys    []string
	want    int
	stop    chan struct{}
	done    chan struct{}
	samples atomic.Int64
	mu      sync.Mutex
	errs    []string
}

func startSampler(c *testCluster, keys []string, want int) *replicaSampler {
	s := &replicaSampler{c: c, keys: keys, want: want, stop: make(chan struct{}), done: make(chan struct{})}
	client := &http.Client{Timeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		rng := rand.New(rand.NewPCG(1, 2))
		for {
			select {
			case <-s.stop:
				return
			default:
			}
			key := s.keys[rng.IntN(len(s.keys))]
			if err := s.check(client, key); err != nil {
				s.mu.Lock()
				if len(s.errs) < 10 {
					s.errs = append(s.errs, err.Error())
				}
				s.mu.Unlock()
			}
			s.samples.Add(1)
		}
	}()
	return s
}

func (s *replicaSampler) check(client *http.Client, key string) error {
	m := s.c.master
	var rec Record
	found, err := m.cat.get([]byte(key), &rec)
	if err != nil || !found {
		return fmt.Errorf("%s: index: found %v, err %v", key, found, err)
	}
	if len(rec.Replicas) < s.want {
		return fmt.Errorf("%s: %d replicas %v, want >= %d", key, len(rec.Replicas), rec.Replicas, s.want)
	}
	view := m.view.Load()
	for _, name := range rec.Replicas {
		vol, ok := view.vols[name]
		if !ok {
			return fmt.Errorf("%s: replica %s not live", key, name)
		}
		resp, err := client.Head(blobURL(vol.HTTP, []byte(key), rec.Version))
		if err != nil {
			return fmt.Errorf("%s: HEAD on %s: %v", key, name, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("%s: replica %s answers %d for version %x", key, name, resp.StatusCode, rec.Version)
		}
	}
	resp, err := client.Get(s.c.url(key))
	if err != nil {
		return fmt.Errorf("%s: GET: %v", key, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: GET through the master: %d", key, resp.StatusCode)
	}
	return nil
}

func (s *replicaSampler) finish(t *testing.T) {
	t.Helper()
	close(s.stop)
	<-s.done
	t.Logf("%d samples while membership changed", s.samples.Load())
	if s.samples.Load() == 0 {
		t.Error("the sampler took no sample")
	}
	for _, e := range s.errs {
		t.Error(e)
	}
}

// waitSettled waits until a placement pass found nothing to move.
func waitSettled(t *testing.T, c *testCluster, d time.Duration) {
	t.Helper()
	waitFor(t, d, "placement to match the ring", func() bool {
		r := c.master.rebalanceStatus()
		return r.State == "idle" && r.Misplaced == 0
	})
}

// waitStored waits until volume i's store holds exactly want values.
func waitStored(t *testing.T, c *testCluster, i int, want int64) {
	t.Helper()
	waitFor(t, 20*time.Second, fmt.Sprintf("vol%d to hold %d values", i+1, want), func() bool {
		return c.vols[i].store.Stats().Keys == want
	})
}

func putKeys(c *testCluster, n int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("rb/%04d", i)
		c.put(keys[i], "value of "+keys[i])
	}
	return keys
}

func TestRebalanceOnJoin(t *testing.T) {
	c := newTestCluster(t, 4, 2)
	keys := putKeys(c, 500)
	waitSettled(t, c, 20*time.Second)
	before := map[string][]string{}
	for _, k := range keys {
		var rec Record
		if found, err := c.master.cat.get([]byte(k), &rec); err != nil || !found {
			t.Fatalf("%s: %v %v", k, found, err)
		}
		before[k] = rec.Replicas
	}

	s := startSampler(c, keys, 2)
	i := c.addVolume()
	c.waitVolumes(5)
	name := c.vols[i].Name()
	waitFor(t, 30*time.Second, "the new volume to be given its keys", func() bool {
		r := c.master.rebalanceStatus()
		return r.State == "idle" && r.Misplaced == 0 && r.Moved > 0
	})
	s.finish(t)

	// Every key sits where the ring puts it, and nothing else moved.
	view := c.master.view.Load()
	onNew, changed := 0, 0
	for _, k := range keys {
		var rec Record
		if found, err := c.master.cat.get([]byte(k), &rec); err != nil || !found {
			t.Fatalf("%s: %v %v", k, found, err)
		}
		want, _ := view.ring.Locate([]byte(k), 2)
		if !sameNames(want, rec.Replicas) {
			t.Errorf("%s on %v, ring wants %v", k, rec.Replicas, want)
		}
		if contains(rec.Replicas, name) {
			onNew++
		}
		if !sameNames(before[k], rec.Replicas) {
			changed++
		}
		if st, body := c.get(k); st != 200 || body != "value of "+k {
			t.Errorf("GET %s after rebalance: %d %q", k, st, body)
		}
	}
	// Its fair share is 2/5 of the keys; the ring's load bound and the
	// sample's noise allow some spread.
	ideal := len(keys) * 2 / 5
	t.Logf("new volume holds %d keys (ideal %d); %d keys changed replicas (ideal %d)", onNew, ideal, changed, ideal)
	if onNew < ideal/2 || onNew > ideal*3/2 {
		t.Errorf("new volume holds %d keys, want about %d", onNew, ideal)
	}
	if changed != onNew {
		t.Errorf("%d keys changed replicas, but only %d went to the new volume", changed, onNew)
	}
	// The moved-away copies are deleted after the grace period: every
	// volume ends up holding exactly what the index says it holds.
	counts := map[string]int64{}
	for _, k := range keys {
		var rec Record
		c.master.cat.get([]byte(k), &rec)
		for _, v := range rec.Replicas {
			counts[v]++
		}
	}
	for j, v := range c.vols {
		waitStored(t, c, j, counts[v.Name()])
	}
}

func TestDrain(t *testing.T) {
	c := newTestCluster(t, 4, 2)
	keys := putKeys(c, 200)
	waitSettled(t, c, 20*time.Second)
	s := startSampler(c, keys, 2)

	// An operator drains vol1 through the master.
	name := c.vols[0].Name()
	resp, err := http.Post("http://"+c.master.Addr()+"/_kvdb/drain/"+name, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST drain: %d", resp.StatusCode)
	}
	waitFor(t, 30*time.Second, "vol1 to be drained", func() bool { return c.master.drainStatus(name).Done })
	waitStored(t, c, 0, 0)
	// New values go elsewhere while it drains.
	c.put("rb/new", "new")
	var rec Record
	c.master.cat.get([]byte("rb/new"), &rec)
	if contains(rec.Replicas, name) {
		t.Errorf("a new value was placed on draining %s: %v", name, rec.Replicas)
	}

	// vol2 leaves gracefully: Drain (what SIGTERM does) then Close.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.vols[1].Drain(ctx); err != nil {
		t.Fatal(err)
	}
	s.finish(t)
	c.vols[1].Close()
	c.vols[1] = nil
	for _, k := range keys {
		var rec Record
		c.master.cat.get([]byte(k), &rec)
		if len(rec.Replicas) != 2 || contains(rec.Replicas, name) || contains(rec.Replicas, "vol2") {
			t.Errorf("%s on %v after the drains", k, rec.Replicas)
		}
		if st, body := c.get(k); st != 200 || body != "value of "+k {
			t.Errorf("GET %s after the drains: %d %q", k, st, body)
		}
	}
	if u, _ := c.master.repairStatus(); u != 0 {
		t.Errorf("%d keys under-replicated", u)
	}

	// The drain survives a master restart; cancelling it gives vol1 keys
	// again.
	c.master.Close()
	c.startMaster()
	c.waitVolumes(2) // vol3 and vol4: vol1 is draining, so not in the ring
	if !c.master.drainSet()[name] {
		t.Fatal("drain of vol1 forgotten across a restart")
	}
	req, _ := http.NewRequest("DELETE", "http://"+c.master.Addr()+"/_kvdb/drain/"+name, nil)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, 30*time.Second, "vol1 to take keys again", func() bool {
		r := c.master.rebalanceStatus()
		return r.State == "idle" && c.vols[0].store.Stats().Keys > 0
	})
}

func TestRateLimiter(t *testing.T) {
	stop := make(chan struct{})
	l := newRateLimiter(1000, stop)
	var slept time.Duration // the longest wait: the sleep is not real
	l.sleep = func(d time.Duration, _ <-chan struct{}) bool { slept = max(slept, d); return true }
	for range 5 {
		l.wait(500)
	}
	// 5 transfers of 500 bytes at 1000 B/s: the last starts after the
	// first four are paid for, 2 s in (give or take the test's own time).
	if slept < 1900*time.Millisecond || slept > 4100*time.Millisecond {
		t.Errorf("slept %v for 2000 bytes at 1000 B/s before the last transfer", slept)
	}
	close(stop)
	if newRateLimiter(-1, stop).wait(1 << 30) {
		t.Error("an unlimited limiter waited past stop")
	}
}

// TestWeightedVolume checks that a volume's share of the ring follows its
// weight (its capacity class).
func TestWeightedVolume(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	i := c.addVolume()
	c.waitVolumes(3)
	c.vols[i].Close()
	c.vols[i] = nil
	c.waitVolumes(2)
	c.vcfgs[i].Weight = 4
	c.startVolume(i)
	waitFor(t, 15*time.Second, "the ring to give vol3 weight 4", func() bool {
		for _, m := range c.master.view.Load().ring.Members() {
			if m.Name == "vol3" && m.Weight == 4 {
				return true
			}
		}
		return false
	})
	owned := c.master.view.Load().ring.PartitionsOf()
	t.Logf("partitions owned: %v", owned)
	if owned["vol3"] < 2*owned["vol1"] || owned["vol3"] < 2*owned["vol2"] {
		t.Errorf("vol3 of weight 4 owns %d partitions, vol1 and vol2 of weight 1 own %d and %d", owned["vol3"], owned["vol1"], owned["vol2"])
	}
	// The cluster JSON shows each member's weight and load on the ring.
	for _, mem := range c.master.clusterState().Members {
		if mem.Role != RoleVolume {
			continue
		}
		if mem.Partitions != owned[mem.Name] || mem.Name == "vol3" && mem.Weight != 4 {
			t.Errorf("cluster JSON member %s: partitions %d weight %d, ring has %d", mem.Name, mem.Partitions, mem.Weight, owned[mem.Name])
		}
	}
}

// TestRedirectLeastLoaded checks that a GET is redirected away from a
// replica that is busy sending another value.
func TestRedirectLeastLoaded(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	const size = 64 << 20
	if st, _, body := c.do("PUT", "big", &patternReader{size: size}); st != 201 {
		t.Fatalf("PUT: %d %s", st, body)
	}
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	location := func() string {
		resp, err := noFollow.Get(c.url("big"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.Header.Get("Location")
	}
	first := location()
	u, err := url.Parse(first)
	if err != nil {
		t.Fatal(err)
	}
	// A client that asks the first replica for the value and does not read
	// it keeps a transfer in progress there.
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", u.RequestURI(), u.Host)
	waitFor(t, 10*time.Second, "a redirect to the idle replica", func() bool {
		loc := location()
		return loc != "" && !strings.Contains(loc, u.Host)
	})
	conn.Close()
	waitFor(t, 10*time.Second, "redirects back to the owner once idle", func() bool {
		return strings.Contains(location(), u.Host)
	})
}

// TestChurnUnderLoad runs bench (puts and verified gets) while volumes
// join and leave gracefully: no acknowledged write may fail to read back.
func TestChurnUnderLoad(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	mix, err := bench.ParseMix("mixed:60get/30put/10delete")
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		res bench.Result
		err error
	}
	done := make(chan outcome, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		res, err := bench.Run(ctx, bench.Config{
			URL:         "http://" + c.master.Addr(),
			Size:        bench.SizeRange{Min: 1 << 10, Max: 256 << 10},
			Duration:    time.Hour, // until cancelled
			Concurrency: 4,
			Ops:         mix,
			Verify:      true,
			Prefix:      "churn/",
		})
		done <- outcome{res, err}
	}()
	moved := func() int64 { return c.master.rebalanceStatus().Moved }
	waitFor(t, 10*time.Second, "some keys written", func() bool {
		n := 0
		_ = c.master.cat.scan(func([]byte, *Record) bool { n++; return n < 50 })
		return n >= 50
	})

	// A volume joins and takes its share...
	c.addVolume()
	c.waitVolumes(4)
	waitFor(t, 30*time.Second, "keys to move to the new volume", func() bool { return moved() > 0 })
	before := moved()
	// ...and another leaves gracefully.
	dctx, dcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer dcancel()
	if err := c.vols[0].Drain(dctx); err != nil {
		t.Fatal(err)
	}
	c.vols[0].Close()
	c.vols[0] = nil
	c.waitVolumes(3)
	// And a fifth joins while the load goes on.
	c.addVolume()
	c.waitVolumes(4)
	waitFor(t, 30*time.Second, "keys to move again", func() bool { return moved() > before })
	cancel()
	out := <-done
	if out.err != nil && !errors.Is(out.err, context.Canceled) {
		t.Fatalf("bench: %v", out.err)
	}
	var gets, puts int64
	for _, op := range out.res.Ops {
		t.Logf("%s: %d ops, %d errors %s", op.Op, op.Count, op.Errors, op.FirstErr)
		switch op.Op {
		case "get":
			gets = op.Count
		case "put":
			puts = op.Count
		}
		if op.Op == "get" || op.Op == "put" || op.Op == "delete" {
			if op.Errors > 0 {
				t.Errorf("%s: %d of %d failed, first: %s", op.Op, op.Errors, op.Count, op.FirstErr)
			}
		}
	}
	if gets == 0 || puts == 0 {
		t.Errorf("bench did %d gets and %d puts", gets, puts)
	}
	t.Logf("%d keys moved", moved())
}
