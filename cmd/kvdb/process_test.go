package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"

	"github.com/kvdb/kvdb/node/client"
)

// These tests run kvdb as separate processes, the way users do, so that
// each process's memory can be measured and a node can be SIGKILLed.

var kvdbBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "kvdb-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	kvdbBin = filepath.Join(dir, "kvdb")
	build := exec.Command("go", "build", "-o", kvdbBin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build kvdb:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one running kvdb process and what it logged at start.
type proc struct {
	cmd     *exec.Cmd
	started map[string]any
	exited  chan error
	logs    *strings.Builder
	mu      sync.Mutex
}

// startProc runs kvdb with args (JSON logs) and waits for the log line with
// message startMsg, which carries the addresses it bound.
func startProc(t *testing.T, startMsg string, args ...string) *proc {
	t.Helper()
	return startCmd(t, exec.Command(kvdbBin, append(args, "--log-format", "json")...), startMsg, args...)
}

// startCmd is startProc for a command the caller built (its environment, a
// wrapper); args only name it in messages.
func startCmd(t *testing.T, cmd *exec.Cmd, startMsg string, args ...string) *proc {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, exited: make(chan error, 1), logs: &strings.Builder{}}
	started := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.logs.WriteString(line + "\n")
			p.mu.Unlock()
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == startMsg {
				select {
				case started <- rec:
				default:
				}
			}
		}
		p.exited <- cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		if t.Failed() {
			p.mu.Lock()
			t.Logf("logs of %v:\n%s", args, p.logs.String())
			p.mu.Unlock()
		}
	})
	select {
	case p.started = <-started:
	case err := <-p.exited:
		p.exited <- err
		t.Fatalf("kvdb %v exited before starting: %v\n%s", args, err, p.logs.String())
	case <-time.After(20 * time.Second):
		t.Fatalf("kvdb %v did not start", args)
	}
	return p
}

func (p *proc) field(name string) string { s, _ := p.started[name].(string); return s }

// vmHWM reads the peak resident set size of the process, in bytes.
func (p *proc) vmHWM(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

type testProcCluster struct {
	master     *proc // masters[0]
	masterArgs []string
	vols       []*proc
	url        string
	// With several masters (startProcMasters): each one's process, its
	// arguments, and every master's URL.
	masters     []*proc
	mastersArgs [][]string
	urls        []string
}

// restartMaster starts the master again on the addresses and directory it
// had, after it was killed.
func (c *testProcCluster) restartMaster(t *testing.T) {
	t.Helper()
	c.master = restartProc(t, c.master, c.masterArgs)
	if len(c.masters) > 0 {
		c.masters[0] = c.master
	}
}

// restartMasterN starts master i of several again, on its addresses.
func (c *testProcCluster) restartMasterN(t *testing.T, i int) {
	t.Helper()
	c.masters[i] = restartProc(t, c.masters[i], c.mastersArgs[i])
	if i == 0 {
		c.master = c.masters[0]
	}
}

// restartProc starts a master again with args, on the addresses old bound.
func restartProc(t *testing.T, old *proc, args []string) *proc {
	t.Helper()
	args = append([]string(nil), args...)
	for i, a := range args {
		switch {
		case a == "--addr":
			args[i+1] = old.field("http")
		case a == "--gossip":
			args[i+1] = old.field("gossip")
		case a == "--raft":
			args[i+1] = old.field("raft")
		}
	}
	return startProc(t, "master started", args...)
}

func startProcCluster(t *testing.T, volumes, replicas int) *testProcCluster {
	t.Helper()
	dir := t.TempDir()
	label := fmt.Sprintf("proc-%d-%s", os.Getpid(), t.Name())
	common := []string{"--gossip-profile", "test", "--cluster", label}
	c := &testProcCluster{}
	c.masterArgs = append([]string{"master", "--addr", "127.0.0.1:0", "--gossip", "127.0.0.1:0", "--raft", "127.0.0.1:0",
		"--replicas", strconv.Itoa(replicas), filepath.Join(dir, "master")}, common...)
	c.master = startProc(t, "master started", c.masterArgs...)
	c.url = "http://" + c.master.field("http")
	c.urls = []string{c.url}
	for i := 0; i < volumes; i++ {
		v := startProc(t, "volume started", append([]string{"volume", "--addr", "127.0.0.1:0", "--gossip", "127.0.0.1:0",
			"--join", c.master.field("gossip"), "--name", fmt.Sprintf("vol%d", i+1),
			filepath.Join(dir, fmt.Sprintf("vol%d", i+1))}, common...)...)
		c.vols = append(c.vols, v)
	}
	c.waitLiveVolumes(t, volumes)
	return c
}

// startProcMasters starts n masters (--bootstrap-expect n) and the volumes,
// each a process, and waits until a leader sees every volume.
func startProcMasters(t *testing.T, n, volumes, replicas int) *testProcCluster {
	t.Helper()
	return startProcMastersProfile(t, n, volumes, replicas, "test")
}

// startProcMastersProfile is startProcMasters with the given gossip (and
// Raft timing) profile.
func startProcMastersProfile(t *testing.T, n, volumes, replicas int, profile string) *testProcCluster {
	t.Helper()
	dir := t.TempDir()
	label := fmt.Sprintf("proc-%d-%s-%d", os.Getpid(), t.Name(), time.Now().UnixNano())
	common := []string{"--gossip-profile", profile, "--cluster", label}
	c := &testProcCluster{}
	var seeds []string
	for i := 0; i < n; i++ {
		args := append([]string{"master", "--name", fmt.Sprintf("master%d", i+1), "--addr", "127.0.0.1:0", "--gossip", "127.0.0.1:0",
			"--raft", "127.0.0.1:0", "--bootstrap-expect", strconv.Itoa(n),
			"--replicas", strconv.Itoa(replicas), filepath.Join(dir, fmt.Sprintf("master%d", i+1))}, common...)
		if len(seeds) > 0 {
			args = append(args, "--join", strings.Join(seeds, ","))
		}
		p := startProc(t, "master started", args...)
		c.masters = append(c.masters, p)
		c.mastersArgs = append(c.mastersArgs, args)
		c.urls = append(c.urls, "http://"+p.field("http"))
		seeds = append(seeds, p.field("gossip"))
	}
	c.master, c.masterArgs, c.url = c.masters[0], c.mastersArgs[0], c.urls[0]
	for i := 0; i < volumes; i++ {
		v := startProc(t, "volume started", append([]string{"volume", "--addr", "127.0.0.1:0", "--gossip", "127.0.0.1:0",
			"--join", strings.Join(seeds, ","), "--name", fmt.Sprintf("vol%d", i+1),
			filepath.Join(dir, fmt.Sprintf("vol%d", i+1))}, common...)...)
		c.vols = append(c.vols, v)
	}
	l := c.waitLeader(t)
	c.url = c.urls[l]
	c.waitLiveVolumes(t, volumes)
	return c
}

// leaderInfo asks master i who leads.
func (c *testProcCluster) leaderInfo(i int) (client.MastersInfo, error) {
	var info client.ClusterInfo
	hc := &http.Client{Timeout: 2 * time.Second}
	resp, err := hc.Get(c.urls[i] + "/_kvdb/cluster")
	if err != nil {
		return client.MastersInfo{}, err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(&info); err != nil || info.Masters == nil {
		return client.MastersInfo{}, fmt.Errorf("cluster: %v", err)
	}
	return *info.Masters, nil
}

// waitLeader waits until a master says it leads (and serves), and returns
// its index.
func (c *testProcCluster) waitLeader(t *testing.T) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for i := range c.masters {
			if c.masters[i] == nil {
				continue
			}
			if info, err := c.leaderInfo(i); err == nil && info.State == "Leader" {
				// It serves once it has caught up: an absent key is 404.
				resp, err := http.Head(c.urls[i] + "/_kvdb-probe/absent")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode == 404 {
						return i
					}
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("no master leads")
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func (c *testProcCluster) waitLiveVolumes(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		var st struct {
			Ring struct {
				Owned map[string]int `json:"owned"`
			} `json:"ring"`
		}
		resp, err := http.Get(c.url + "/_kvdb/cluster")
		if err == nil {
			err = json.NewDecoder(resp.Body).Decode(&st)
			resp.Body.Close()
		}
		if err == nil && len(st.Ring.Owned) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("master did not see %d volumes (last: %v, err %v)", n, st.Ring.Owned, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// pattern yields size deterministic bytes without holding them.
type pattern struct{ size, off int64 }

func (p *pattern) Read(b []byte) (int, error) {
	if p.off >= p.size {
		return 0, io.EOF
	}
	if rem := p.size - p.off; int64(len(b)) > rem {
		b = b[:rem]
	}
	for i := range b {
		x := uint64(p.off + int64(i))
		b[i] = byte(x*0x9E3779B1>>15) ^ byte(x)
	}
	p.off += int64(len(b))
	return len(b), nil
}

// TestLargeValueMemory PUTs and GETs a 200 MB value through separate
// processes and checks that no process held it: each one's peak RSS stays
// within a few buffers of its idle size.
func TestLargeValueMemory(t *testing.T) {
	size := int64(200 << 20)
	if testing.Short() {
		size = 32 << 20
	}
	c := startProcCluster(t, 3, 2)
	sum := xxhash.New()
	_, _ = io.Copy(sum, &pattern{size: size})

	start := time.Now()
	req, _ := http.NewRequest("PUT", c.url+"/large", &pattern{size: size})
	req.ContentLength = size
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("PUT: got %d (%s)", resp.StatusCode, body)
	}
	putTime := time.Since(start)

	start = time.Now()
	resp, err = http.Get(c.url + "/large")
	if err != nil {
		t.Fatal(err)
	}
	got := xxhash.New()
	n, err := io.Copy(got, resp.Body)
	resp.Body.Close()
	if err != nil || n != size || got.Sum64() != sum.Sum64() {
		t.Fatalf("GET: got %d bytes (err %v), checksum %x; want %d bytes, %x", n, err, got.Sum64(), size, sum.Sum64())
	}
	getTime := time.Since(start)
	t.Logf("%d MiB: PUT %.0f MB/s, GET %.0f MB/s", size>>20,
		float64(size)/1e6/putTime.Seconds(), float64(size)/1e6/getTime.Seconds())

	const limit = 96 << 20
	for _, p := range append([]*proc{c.master}, c.vols...) {
		hwm := p.vmHWM(t)
		t.Logf("%s peak RSS (VmHWM) %.1f MiB", p.cmd.Args[1], float64(hwm)/(1<<20))
		if hwm > limit {
			t.Errorf("%s: peak RSS %d MiB after a %d MiB value, want under %d MiB", p.cmd.Args[1], hwm>>20, size>>20, limit>>20)
		}
	}
}

// TestKillVolumeProcess SIGKILLs a volume process: values stay readable
// through the other replica once gossip has noticed.
func TestKillVolumeProcess(t *testing.T) {
	c := startProcCluster(t, 3, 2)
	for i := 0; i < 30; i++ {
		req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/p%d", c.url, i), strings.NewReader(fmt.Sprint("v", i)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("PUT p%d: got %d", i, resp.StatusCode)
		}
	}
	if err := c.vols[0].cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.waitLiveVolumes(t, 2)
	for i := 0; i < 30; i++ {
		resp, err := http.Get(fmt.Sprintf("%s/p%d", c.url, i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != fmt.Sprint("v", i) {
			t.Fatalf("GET p%d after SIGKILL of a volume: got %d %q", i, resp.StatusCode, b)
		}
	}
	// SIGTERM stops the master cleanly.
	if err := c.master.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.master.exited:
		c.master.exited <- err
		if err != nil {
			t.Fatalf("master exit after SIGTERM: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("master did not exit after SIGTERM")
	}
}

// freeBasePort finds a port P with P..P+3 and P+1000..P+1003 free, for
// `kvdb dev`, which lays its nodes out on consecutive ports.
func freeBasePort(t *testing.T) int {
	t.Helper()
	for try := 0; try < 50; try++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		base := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if base > 60000 {
			continue
		}
		ok := true
		for _, p := range []int{base, base + 1, base + 2, base + 3, base + 1000, base + 1001, base + 1002, base + 1003, base + 2000} {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// TestDevSeedUsage runs `kvdb dev` and the original kvDB's curl usage.
func TestDevSeedUsage(t *testing.T) {
	port := freeBasePort(t)
	dir := t.TempDir()
	dev := startProc(t, "dev cluster running", "dev", "--addr", fmt.Sprintf("127.0.0.1:%d", port), "--dir", dir)
	_ = dev
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	waitReady(t, base)
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl not installed")
	}
	run := func(args ...string) string {
		out, err := exec.Command("curl", append([]string{"-sS", "-L"}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("curl %v: %v: %s", args, err, out)
		}
		return string(out)
	}
	run("-X", "POST", "-d", "examplevalue", base+"/examplekey")
	if got := run("-X", "GET", base+"/examplekey"); got != "examplevalue" {
		t.Fatalf("curl GET: got %q, want examplevalue", got)
	}
	run("-X", "DELETE", base+"/examplekey")
	if got := run("-o", "/dev/null", "-w", "%{http_code}", base+"/examplekey"); got != "404" {
		t.Fatalf("curl GET after DELETE: got %s, want 404", got)
	}
	if _, err := os.Stat(filepath.Join(dir, "vol3", "NAME")); err != nil {
		t.Fatalf("dev did not lay out vol3 under --dir: %v", err)
	}
}

// slowPattern is a pattern that reports how far it got and slows down after
// pauseAt bytes, so a test can crash a node while the body streams.
type slowPattern struct {
	pattern
	pauseAt int64
	sent    chan struct{}
	once    sync.Once
}

func (p *slowPattern) Read(b []byte) (int, error) {
	if p.off >= p.pauseAt {
		p.once.Do(func() { close(p.sent) })
		time.Sleep(20 * time.Millisecond)
		if len(b) > 64<<10 {
			b = b[:64<<10]
		}
	}
	return p.pattern.Read(b)
}

// TestCrashMasterMidWrite SIGKILLs the master while a 200 MB overwrite is
// streaming. After a restart the key holds the old value whole, and the
// blobs the cut-off write left on the volumes are deleted.
func TestCrashMasterMidWrite(t *testing.T) {
	c := startProcCluster(t, 3, 2)
	req, _ := http.NewRequest("PUT", c.url+"/crash/key", strings.NewReader("old value"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("PUT old: got %d", resp.StatusCode)
	}

	body := &slowPattern{pattern: pattern{size: 200 << 20}, pauseAt: 40 << 20, sent: make(chan struct{})}
	req, _ = http.NewRequest("PUT", c.url+"/crash/key", body)
	req.ContentLength = body.size
	done := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		done <- err
	}()
	select {
	case <-body.sent:
	case <-time.After(30 * time.Second):
		t.Fatal("the body never got 40 MB in")
	}
	if err := c.master.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c.master.exited <- <-c.master.exited // wait for it; leave the result for cleanup
	t.Logf("the cut-off PUT ended with: %v", <-done)

	c.restartMaster(t)
	c.waitLiveVolumes(t, 3)
	// A client of its own: the default one still holds the connection the
	// crash cut.
	fresh := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}}
	resp, err = fresh.Get(c.url + "/crash/key")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "old value" {
		t.Fatalf("GET after the crash: got %d and %d bytes, want the old value whole", resp.StatusCode, len(got))
	}
	// Every volume ends up holding only the committed version.
	deadline := time.Now().Add(30 * time.Second)
	for {
		total := 0
		for _, v := range c.vols {
			var page struct {
				Entries []struct {
					Size int64 `json:"size"`
				} `json:"entries"`
			}
			resp, err := fresh.Get("http://" + v.field("http") + "/_kvdb/index")
			if err != nil {
				t.Fatal(err)
			}
			err = json.NewDecoder(resp.Body).Decode(&page)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range page.Entries {
				if e.Size != int64(len("old value")) {
					total += 100 // an orphan of the cut-off write
				}
				total++
			}
		}
		if total == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("volumes still hold %d entries (orphans count 101), want the 2 replicas of the old value", total)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestVolumeSIGTERMDrains stops a volume the graceful way: on SIGTERM it
// hands its values to the others before leaving, so no key is ever below
// its replica count.
func TestVolumeSIGTERMDrains(t *testing.T) {
	t.Setenv("KVDB_REBALANCE_DELAY", "300ms") // the environment sets flags too
	c := startProcCluster(t, 4, 2)
	const n = 40
	for i := range n {
		req, _ := http.NewRequest("PUT", fmt.Sprintf("%s/d%d", c.url, i), strings.NewReader(fmt.Sprint("v", i)))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 201 {
			t.Fatalf("PUT d%d: got %d", i, resp.StatusCode)
		}
	}
	if err := c.vols[0].cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-c.vols[0].exited:
		c.vols[0].exited <- err
		if err != nil {
			t.Fatalf("volume exit after SIGTERM: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("volume did not drain and exit after SIGTERM")
	}
	c.vols[0].mu.Lock()
	logs := c.vols[0].logs.String()
	c.vols[0].mu.Unlock()
	if !strings.Contains(logs, `"msg":"drained"`) {
		t.Fatalf("volume left without draining:\n%s", logs)
	}
	c.waitLiveVolumes(t, 3)
	var st struct {
		Members []struct {
			Name string `json:"name"`
			Keys int64  `json:"keys"`
		} `json:"members"`
		UnderReplicated int `json:"under_replicated"`
	}
	resp, err := http.Get(c.url + "/_kvdb/cluster")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if st.UnderReplicated != 0 {
		t.Errorf("%d keys under-replicated after a graceful leave", st.UnderReplicated)
	}
	for i := range n {
		resp, err := http.Get(fmt.Sprintf("%s/d%d", c.url, i))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != fmt.Sprint("v", i) {
			t.Fatalf("GET d%d after the drain: got %d %q", i, resp.StatusCode, b)
		}
	}
	// The CLI's drain follows the same path through the master.
	var out, errb strings.Builder
	if code := run([]string{"drain", "--url", c.url, "--interval", "100ms", "vol2"}, &out, &errb); code != 0 {
		t.Fatalf("kvdb drain: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "vol2: drained") {
		t.Errorf("kvdb drain printed %q", out.String())
	}
	for _, v := range []string{"vol2", "vol3", "vol4"} {
		out.Reset()
		if code := run([]string{"drain", "--url", c.url, "--wait=false", "--cancel", v}, &out, &errb); code != 0 {
			t.Fatalf("kvdb drain --cancel %s: exit %d: %s", v, code, errb.String())
		}
	}
	if code := run([]string{"drain", "--url", c.url, "nosuchvolume"}, &out, &errb); code != 1 {
		t.Errorf("kvdb drain of an unknown volume: exit %d, want 1", code)
	}
}
