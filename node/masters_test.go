package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kvdb/kvdb/node/client"
)

// mastersCluster runs several masters (one Raft) and volumes as goroutines
// of the test process.
type mastersCluster struct {
	t       *testing.T
	label   string
	mcfgs   []MasterConfig
	masters []*Master // nil while stopped
	vols    []*Volume
	client  *http.Client
}

// newMastersCluster starts n masters with BootstrapExpect n and vols
// volumes, and waits until one leads and sees every volume. change, when
// not nil, adjusts master i's config before it starts.
func newMastersCluster(t *testing.T, n, vols, replicas int, change func(i int, c *MasterConfig)) *mastersCluster {
	t.Helper()
	dir := t.TempDir()
	c := &mastersCluster{
		t:      t,
		label:  fmt.Sprintf("masters-%d", clusterSeq.Add(1)),
		client: &http.Client{Timeout: time.Minute},
	}
	var seeds []string
	for i := 0; i < n; i++ {
		cfg := MasterConfig{
			Name:            fmt.Sprintf("master%d", i+1),
			Addr:            "127.0.0.1:0",
			Raft:            "127.0.0.1:0",
			Dir:             filepath.Join(dir, fmt.Sprintf("master%d", i+1)),
			Replicas:        replicas,
			BootstrapExpect: n,
			GCInterval:      200 * time.Millisecond,
			RepairDelay:     time.Second,
			RepairInterval:  200 * time.Millisecond,
			RebalanceDelay:  300 * time.Millisecond,
			RebalanceRate:   -1,
			Logger:          testLogger(),
			Gossip:          GossipConfig{Bind: "127.0.0.1:0", Cluster: c.label, Profile: ProfileTest, Join: append([]string(nil), seeds...)},
		}
		if change != nil {
			change(i, &cfg)
		}
		c.mcfgs = append(c.mcfgs, cfg)
		c.masters = append(c.masters, nil)
		c.startMaster(i)
		seeds = append(seeds, c.mcfgs[i].Gossip.Bind)
	}
	t.Cleanup(func() {
		for _, v := range c.vols {
			if v != nil {
				v.Kill()
			}
		}
		for _, m := range c.masters {
			if m != nil {
				m.Kill()
			}
		}
	})
	for i := 0; i < vols; i++ {
		v, err := NewVolume(VolumeConfig{
			Name: fmt.Sprintf("vol%d", i+1), Addr: "127.0.0.1:0",
			Dir:    filepath.Join(dir, fmt.Sprintf("vol%d", i+1)),
			Logger: testLogger(),
			Secret: c.mcfgs[0].Secret,
			Gossip: GossipConfig{Bind: "127.0.0.1:0", Cluster: c.label, Profile: ProfileTest, Join: seeds},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.vols = append(c.vols, v)
	}
	waitFor(t, 30*time.Second, "a leader that sees every volume, known to every master", func() bool {
		l := c.leader()
		if l < 0 || c.masters[l].LiveVolumes() != vols {
			return false
		}
		// A follower learns the leader's HTTP address by gossip, a moment
		// after Raft elected it: until then it answers 503.
		for i, m := range c.masters {
			if _, ok := m.leaderHTTP(); i != l && !ok {
				return false
			}
		}
		return true
	})
	return c
}

func (c *mastersCluster) startMaster(i int) {
	c.t.Helper()
	m, err := NewMaster(c.mcfgs[i])
	if err != nil {
		c.t.Fatalf("start master %d: %v", i, err)
	}
	c.masters[i] = m
	// A restart keeps the addresses, as a real master's would.
	c.mcfgs[i].Addr, c.mcfgs[i].Gossip.Bind, c.mcfgs[i].Raft = m.Addr(), m.GossipAddr(), m.raft.addr
}

// leader returns the index of the master that leads and serves, -1 if none.
func (c *mastersCluster) leader() int {
	for i, m := range c.masters {
		if m != nil && m.leads() {
			return i
		}
	}
	return -1
}

func (c *mastersCluster) waitLeader() int {
	c.t.Helper()
	l := -1
	waitFor(c.t, 30*time.Second, "a leader", func() bool { l = c.leader(); return l >= 0 })
	return l
}

// waitLeaderSees waits until master l, which leads, sees n live volumes
// (a master that has just joined may not know them all yet by gossip).
func (c *mastersCluster) waitLeaderSees(l, n int) {
	c.t.Helper()
	waitFor(c.t, 20*time.Second, "the new leader to see every volume", func() bool { return c.masters[l].LiveVolumes() == n })
}

// do sends a request to master i (following redirects, as curl -L does).
func (c *mastersCluster) do(i int, method, key, body string, hdr ...string) (int, string, http.Header) {
	c.t.Helper()
	req, err := http.NewRequest(method, "http://"+c.masters[i].Addr()+"/"+key, strings.NewReader(body))
	if err != nil {
		c.t.Fatal(err)
	}
	for j := 0; j+1 < len(hdr); j += 2 {
		req.Header.Set(hdr[j], hdr[j+1])
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, err.Error(), nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// noRedirect answers redirects instead of following them.
var noRedirect = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// TestMastersFollowerRedirects: any master takes any request; a follower
// redirects reads with 302 and writes with 307 to the leader, and answers
// its own admin endpoints; every master reports the same leader and
// configuration.
func TestMastersFollowerRedirects(t *testing.T) {
	c := newMastersCluster(t, 3, 2, 2, nil)
	l := c.waitLeader()
	f := (l + 1) % 3
	for i := range c.masters {
		if st, body, _ := c.do(i, "PUT", fmt.Sprintf("via/%d", i), fmt.Sprintf("value %d", i)); st != 201 {
			t.Fatalf("PUT through master %d: %d %s", i, st, body)
		}
	}
	for i := range c.masters {
		for j := range c.masters {
			if st, body, _ := c.do(j, "GET", fmt.Sprintf("via/%d", i), ""); st != 200 || body != fmt.Sprintf("value %d", i) {
				t.Fatalf("GET via/%d through master %d: %d %q", i, j, st, body)
			}
		}
	}
	leaderAddr := c.masters[l].Addr()
	for _, tc := range []struct {
		method string
		want   int
	}{{"GET", 302}, {"HEAD", 302}, {"PUT", 307}, {"POST", 307}, {"DELETE", 307}} {
		req, _ := http.NewRequest(tc.method, "http://"+c.masters[f].Addr()+"/via/0?x", nil)
		if tc.method == "PUT" || tc.method == "POST" || tc.method == "DELETE" {
			req.URL.RawQuery = ""
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != tc.want || !strings.HasPrefix(loc, "http://"+leaderAddr+"/via/0") {
			t.Errorf("%s on a follower: %d Location %q; want %d to the leader %s", tc.method, resp.StatusCode, loc, tc.want, leaderAddr)
		}
	}
	// Admin endpoints are the follower's own.
	resp, err := noRedirect.Get("http://" + c.masters[f].Addr() + "/_kvdb/cluster")
	if err != nil {
		t.Fatal(err)
	}
	var info client.ClusterInfo
	err = json.NewDecoder(resp.Body).Decode(&info)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || info.Masters == nil {
		t.Fatalf("cluster on a follower: %d %v %+v", resp.StatusCode, err, info.Masters)
	}
	if info.Masters.Leader != c.mcfgs[l].Name || info.Masters.LeaderAddr != leaderAddr || info.Masters.State != "Follower" || len(info.Masters.Servers) != 3 || info.Masters.Term == 0 {
		t.Fatalf("cluster on a follower: %+v", *info.Masters)
	}
}

// TestMastersLeaderKilled kills the leader while clients write through
// every master: a new leader takes over, and every acknowledged write is
// readable from it afterwards, through any surviving master.
func TestMastersLeaderKilled(t *testing.T) {
	c := newMastersCluster(t, 3, 3, 2, nil)
	l := c.waitLeader()
	var mu sync.Mutex
	acked := map[string]string{}
	var firstAfterKill time.Time
	var killedAt time.Time
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				key, val := fmt.Sprintf("w%d/%d", w, n), fmt.Sprintf("value %d of writer %d", n, w)
				i := (w + n) % 3
				mu.Lock()
				m := c.masters[i]
				mu.Unlock()
				if m == nil {
					continue
				}
				req, _ := http.NewRequest("PUT", "http://"+m.Addr()+"/"+key, strings.NewReader(val))
				resp, err := c.client.Do(req)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == 201 || resp.StatusCode == 200 {
					mu.Lock()
					acked[key] = val
					if !killedAt.IsZero() && firstAfterKill.IsZero() {
						firstAfterKill = time.Now()
					}
					mu.Unlock()
				}
			}
		}(w)
	}
	waitFor(t, 20*time.Second, "writes acknowledged", func() bool { mu.Lock(); defer mu.Unlock(); return len(acked) > 30 })
	mu.Lock()
	c.masters[l].Kill()
	c.masters[l] = nil
	killedAt = time.Now()
	mu.Unlock()
	waitFor(t, 30*time.Second, "a write acknowledged after the leader's death", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return !firstAfterKill.IsZero()
	})
	close(stop)
	wg.Wait()
	nl := c.waitLeader()
	c.waitLeaderSees(nl, 3)
	t.Logf("failover: first acknowledged write %v after the leader was killed; %d writes acknowledged", firstAfterKill.Sub(killedAt).Round(time.Millisecond), len(acked))
	for i, m := range c.masters {
		if m == nil {
			continue
		}
		for key, val := range acked {
			if st, body, _ := c.do(i, "GET", key, ""); st != 200 || body != val {
				t.Fatalf("acknowledged %s read through master %d (leader %d): %d %q, want %q", key, i, nl, st, body, val)
			}
		}
	}
	// The killed master comes back as a follower and catches up.
	c.startMaster(l)
	waitFor(t, 30*time.Second, "the restarted master to catch up", func() bool {
		return c.masters[l].cat.applied.Load() >= c.masters[nl].cat.applied.Load()
	})
	var rec Record
	for key := range acked {
		if found, err := c.masters[l].cat.get([]byte(key), &rec); err != nil || !found {
			t.Fatalf("restarted master's catalog lacks %s: %v", key, err)
		}
	}
}

// TestMastersNoQuorum pauses two of three masters (their Raft cut off):
// the one left refuses writes with 503 and Retry-After, and serves again
// once they are back.
func TestMastersNoQuorum(t *testing.T) {
	c := newMastersCluster(t, 3, 2, 2, nil)
	l := c.waitLeader()
	if st, body, _ := c.do(l, "PUT", "before", "x"); st != 201 {
		t.Fatalf("PUT: %d %s", st, body)
	}
	// The two others stop answering Raft (as if paused): their transports
	// are closed and reopened later on the same addresses.
	var cut []int
	for i := range c.masters {
		if i != l {
			cut = append(cut, i)
			c.masters[i].Kill()
			c.masters[i] = nil
		}
	}
	var st int
	var hdr http.Header
	waitFor(t, 20*time.Second, "writes refused with 503", func() bool {
		st, _, hdr = c.do(l, "PUT", "during", "y")
		return st == 503
	})
	if hdr.Get("Retry-After") == "" {
		t.Errorf("503 without Retry-After")
	}
	if st, _, _ := c.do(l, "GET", "before", ""); st != 503 {
		t.Errorf("GET without a quorum: %d, want 503 (a stale leader must not answer)", st)
	}
	for _, i := range cut {
		c.startMaster(i)
	}
	waitFor(t, 30*time.Second, "writes accepted again", func() bool {
		l := c.leader()
		if l < 0 {
			return false
		}
		st, _, _ := c.do(l, "PUT", "after", "z")
		return st == 201 || st == 200
	})
	for i := range c.masters {
		if st, body, _ := c.do(i, "GET", "before", ""); st != 200 || body != "x" {
			t.Fatalf("GET before via %d: %d %q", i, st, body)
		}
	}
}

// TestMastersClockBehind: the master that leads has a clock an hour behind
// the others. Its versions continue above those the previous leader handed
// out (the counter's ceiling is replicated), so no write it acknowledges is
// lost behind an older one.
func TestMastersClockBehind(t *testing.T) {
	var skew sync.Map // master index → offset
	c := newMastersCluster(t, 3, 2, 2, func(i int, cfg *MasterConfig) {
		cfg.now = func() time.Time {
			if d, ok := skew.Load(i); ok {
				return time.Now().Add(d.(time.Duration))
			}
			return time.Now()
		}
	})
	l := c.waitLeader()
	if st, body, _ := c.do(l, "PUT", "clock/k", "first"); st != 201 {
		t.Fatalf("PUT: %d %s", st, body)
	}
	// Every other master's clock goes an hour back; the leader dies, so
	// one of them leads.
	for i := range c.masters {
		if i != l {
			skew.Store(i, -time.Hour)
		}
	}
	c.masters[l].Kill()
	c.masters[l] = nil
	nl := c.waitLeader()
	c.waitLeaderSees(nl, 2)
	st, body, _ := c.do(nl, "PUT", "clock/k", "second")
	if st != 200 {
		t.Fatalf("overwrite on the leader whose clock is behind: %d %s", st, body)
	}
	if st, body, _ := c.do(nl, "GET", "clock/k", ""); st != 200 || body != "second" {
		t.Fatalf("GET after the overwrite: %d %q; the acknowledged write was lost", st, body)
	}
	for n := 0; n < 20; n++ {
		v := fmt.Sprintf("v%d", n)
		if st, _, _ := c.do(nl, "PUT", "clock/k", v); st != 200 {
			t.Fatalf("PUT %d: %d", n, st)
		}
		if st, body, _ := c.do(nl, "GET", "clock/k", ""); st != 200 || body != v {
			t.Fatalf("GET after PUT %d: %d %q", n, st, body)
		}
	}
}

// TestMastersSnapshotCatchUp: a master whose directory was deleted rejoins
// under its name and gets the catalog from the leader (by snapshot once
// the log was compacted).
func TestMastersSnapshotCatchUp(t *testing.T) {
	c := newMastersCluster(t, 3, 2, 2, nil)
	l := c.waitLeader()
	f := (l + 1) % 3
	c.masters[f].Kill()
	c.masters[f] = nil
	for n := 0; n < 50; n++ {
		if st, body, _ := c.do(l, "PUT", fmt.Sprintf("snap/%d", n), strings.Repeat("s", n)); st != 201 {
			t.Fatalf("PUT: %d %s", st, body)
		}
	}
	if err := c.masters[l].raft.r.Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	if err := os.RemoveAll(c.mcfgs[f].Dir); err != nil {
		t.Fatal(err)
	}
	c.startMaster(f)
	waitFor(t, 30*time.Second, "the wiped master to catch up", func() bool {
		return c.masters[f].cat.applied.Load() >= c.masters[l].cat.applied.Load()
	})
	var rec Record
	for n := 0; n < 50; n++ {
		if found, err := c.masters[f].cat.get([]byte(fmt.Sprintf("snap/%d", n)), &rec); err != nil || !found || rec.Size != int64(n) {
			t.Fatalf("rejoined master's catalog: snap/%d found %v size %d err %v", n, found, rec.Size, err)
		}
	}
	// It can lead: the others step aside, and it serves every key.
	c.masters[l].Kill()
	c.masters[l] = nil
	nl := c.waitLeader()
	c.waitLeaderSees(nl, 2)
	for n := 0; n < 50; n++ {
		if st, body, _ := c.do(nl, "GET", fmt.Sprintf("snap/%d", n), ""); st != 200 || !bytes.Equal([]byte(body), bytes.Repeat([]byte("s"), n)) {
			t.Fatalf("GET snap/%d from the new leader: %d %q", n, st, body)
		}
	}
}

// TestMastersCarryOver: an index kept by a single master before Raft is
// carried into the log when that master first leads, so masters added
// later learn it too, and serve it once the first one is gone.
func TestMastersCarryOver(t *testing.T) {
	dir := t.TempDir()
	label := fmt.Sprintf("carry-%d", clusterSeq.Add(1))
	// The index as a master before Raft left it: records, no log.
	cat, _, err := openCatalog(filepath.Join(dir, "m1", "index"), false, 16, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	for n := 0; n < 20; n++ {
		rec := Record{Version: uint64(1000 + n), Size: int64(n), Checksum: uint64(n), ModTime: time.Now(), Replicas: []string{"vol1", "vol2"}}
		if err := cat.writeLocal(putOne(recordKey(nil, []byte(fmt.Sprintf("old/%d", n))), appendRecord(nil, &rec)), true); err != nil {
			t.Fatal(err)
		}
	}
	cat.close()
	cfg := func(name string, expect int, join []string) MasterConfig {
		return MasterConfig{
			Name: name, Addr: "127.0.0.1:0", Raft: "127.0.0.1:0", Dir: filepath.Join(dir, name),
			BootstrapExpect: expect, Logger: testLogger(),
			Gossip: GossipConfig{Bind: "127.0.0.1:0", Cluster: label, Profile: ProfileTest, Join: join},
		}
	}
	m1, err := NewMaster(cfg("m1", 1, nil))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { m1.Kill() }()
	if !m1.leads() {
		t.Fatal("the single master does not lead")
	}
	var added []*Master
	defer func() {
		for _, m := range added {
			m.Kill()
		}
	}()
	for _, name := range []string{"m2", "m3"} {
		m, err := NewMaster(cfg(name, 3, []string{m1.GossipAddr()}))
		if err != nil {
			t.Fatal(err)
		}
		added = append(added, m)
	}
	waitFor(t, 30*time.Second, "the new masters to be added and catch up", func() bool {
		for _, m := range added {
			if m.cat.applied.Load() < m1.cat.applied.Load() || m.raft.r.LastIndex() == 0 {
				return false
			}
		}
		return m1.votersN.Load() == 3
	})
	m1.Kill()
	var leader *Master
	waitFor(t, 30*time.Second, "a new leader", func() bool {
		for _, m := range added {
			if m.leads() {
				leader = m
				return true
			}
		}
		return false
	})
	for n := 0; n < 20; n++ {
		resp, err := http.Head(fmt.Sprintf("http://%s/old/%d", leader.Addr(), n))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.ContentLength != int64(n) {
			t.Fatalf("HEAD old/%d on the new leader: %d, length %d", n, resp.StatusCode, resp.ContentLength)
		}
	}
}

// TestMastersRaftSecret: with a cluster secret, the masters' Raft
// connections open with a challenge; a connection that cannot answer it is
// closed before any Raft message is read, and the cluster goes on.
func TestMastersRaftSecret(t *testing.T) {
	secret := []byte("a cluster secret for raft tests")
	c := newMastersCluster(t, 3, 2, 2, func(i int, cfg *MasterConfig) { cfg.Secret = secret })
	l := c.waitLeader()
	if st, body, _ := c.do((l+1)%3, "PUT", "sec/k", "v"); st != 201 {
		t.Fatalf("PUT through a follower with a secret: %d %s", st, body)
	}
	conn, err := net.Dial("tcp", c.masters[l].raft.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	nonce := make([]byte, raftNonceLen)
	if _, err := io.ReadFull(conn, nonce); err != nil {
		t.Fatalf("no challenge: %v", err)
	}
	// A wrong answer, then what would be a Raft request.
	if _, err := conn.Write(append(make([]byte, 32), 0, 1, 2, 3)); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := conn.Read(make([]byte, 16)); err == nil {
		t.Fatalf("the master answered %d bytes to a connection without the secret", n)
	}
	if st, body, _ := c.do(l, "PUT", "sec/k2", "v"); st != 201 {
		t.Fatalf("PUT after the intruder: %d %s", st, body)
	}
}

// A write ticket whose master stops leading before the body arrives: the
// new leader does not know it, and the write fails with 503 (nothing took
// effect; a retry can succeed), not 403, and what the volume wrote for it
// is deleted.
func TestRedirectedWriteLeaderChange(t *testing.T) {
	c := newMastersCluster(t, 3, 3, 2, nil)
	l := c.leader()
	st, loc, body := expectWriteTo(t, c.masters[l].Addr(), "PUT", "lc/k", 5)
	if st != 307 || loc == "" {
		t.Fatalf("PUT with Expect to the leader: %d (%s), want 307", st, body)
	}
	c.masters[l].Kill()
	c.masters[l] = nil
	nl := c.waitLeader()
	c.waitLeaderSees(nl, 3)
	// The volumes commit to the master gossip names the leader: wait
	// until none still holds the dead one.
	dead := c.mcfgs[l].Name
	waitFor(t, 30*time.Second, "the volumes to see the old leader gone", func() bool {
		for _, v := range c.vols {
			if _, ok := v.gossip.member(dead); ok {
				return false
			}
			if addr, _ := v.gossip.httpOf(RoleMaster); addr != c.masters[nl].Addr() {
				return false
			}
		}
		return true
	})
	st, _, body = send(t, "PUT", loc, "hello")
	if st != 503 || !strings.Contains(body, "issued before the leading master took over") {
		t.Fatalf("PUT to a ticket of the former leader: %d (%s), want 503 saying why", st, body)
	}
	if st, _, _ := c.do(nl, "GET", "lc/k", ""); st != 404 {
		t.Fatalf("GET lc/k: %d, want 404", st)
	}
	waitFor(t, 10*time.Second, "the ticket's blobs deleted", func() bool {
		for _, v := range c.vols {
			if v.store.Stats().Keys != 0 {
				return false
			}
		}
		return true
	})
}
