package node

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/kvdb/kvdb/node/client"
)

func TestStatusPageServed(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	url := "http://" + c.master.Addr() + "/" + ReservedPrefix + "status"

	resp, err := c.client.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	body := string(b)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: got status %d, want 200: %s", url, resp.StatusCode, body)
	}
	for _, h := range []struct{ name, want string }{
		{"Content-Type", "text/html; charset=utf-8"},
		{"Cache-Control", "no-cache"},
	} {
		if got := resp.Header.Get(h.name); got != h.want {
			t.Errorf("%s: got %q, want %q", h.name, got, h.want)
		}
	}
	for _, want := range []string{"<script>", "fetch('cluster'", "</html>"} {
		if !strings.Contains(body, want) {
			t.Errorf("page does not contain %q", want)
		}
	}
	// Data reaches the page as text only: no API that parses markup.
	for _, api := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("} {
		if strings.Contains(body, api) {
			t.Errorf("page uses %s; render data with textContent", api)
		}
	}
	// Self-contained: nothing loaded from another origin.
	if m := regexp.MustCompile(`(?i)(src|href)\s*=\s*["']?(https?:)?//`).FindString(body); m != "" {
		t.Errorf("page loads from another origin: %q", m)
	}

	req, _ := http.NewRequest(http.MethodHead, url, nil)
	resp, err = c.client.Do(req)
	if err != nil {
		t.Fatalf("HEAD %s: %v", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD %s: got status %d, want 200", url, resp.StatusCode)
	}
}

// headlessBrowsers are the names a Chromium-family browser goes by on PATH.
var headlessBrowsers = []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless_shell", "chrome-headless-shell"}

func findBrowser() string {
	for _, name := range headlessBrowsers {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// runBrowser runs one headless browser command to completion and returns
// what it printed on stdout. The browser and every helper process it
// forks are killed if it outlives the timeout or the test.
func runBrowser(t *testing.T, bin string, args ...string) []byte {
	t.Helper()
	home := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	all := append([]string{
		"--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--user-data-dir=" + filepath.Join(home, "profile"),
		// The page talks only to the test cluster on 127.0.0.1: no proxy,
		// and none of the browser's own background traffic.
		"--no-proxy-server", "--no-first-run", "--no-default-browser-check",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--disable-extensions", "--disable-default-apps", "--disable-crash-reporter",
		"--hide-scrollbars", "--mute-audio",
		// Virtual time runs the page's timers until 5 s have passed on
		// the page's clock, waiting for fetches in flight: enough for the
		// first refresh and two more, without sleeping in the test.
		"--virtual-time-budget=5000",
	}, args...)
	cmd := exec.CommandContext(ctx, bin, all...)
	cmd.Env = append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, ".config"), "XDG_CACHE_HOME="+filepath.Join(home, ".cache"))
	// Chromium forks a zygote and renderers; its own process group lets a
	// timeout kill them all, not just the parent.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 5 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("%s %s: %v", filepath.Base(bin), strings.Join(args, " "), time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("%s: %v (context: %v)\nstderr:\n%s", filepath.Base(bin), err, ctx.Err(), lastLines(stderr.String(), 30))
	}
	return stdout.Bytes()
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// browserOrSkip returns the headless browser to test with, or skips.
func browserOrSkip(t *testing.T) string {
	t.Helper()
	bin := findBrowser()
	if bin == "" {
		t.Skipf("no chromium on PATH (looked for %s); .ci/run installs it", strings.Join(headlessBrowsers, ", "))
	}
	if testing.Short() {
		t.Skip("starts a browser; skipped with -short")
	}
	return bin
}

// screenshot saves url as drawn in a window of size ("W,H") into the test's artifact
// directory (kept with go test -artifacts -outputdir DIR) and checks that
// a page was drawn.
func screenshot(t *testing.T, bin, url, name, size string) {
	t.Helper()
	shot := filepath.Join(t.ArtifactDir(), name)
	runBrowser(t, bin, "--screenshot="+shot, "--window-size="+size, url)
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG\r\n\x1a\n")) {
		t.Fatalf("screenshot %s is not a PNG (starts %q)", shot, png[:min(len(png), 8)])
	}
	// A blank page of this size compresses to a few KB; a drawn one is far bigger.
	if len(png) < 16<<10 {
		t.Errorf("screenshot %s is %d bytes, want a drawn page (over 16 KiB)", shot, len(png))
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
}

func checkDOM(t *testing.T, dom string, wants, unwanted []string) {
	t.Helper()
	for _, want := range wants {
		if !strings.Contains(dom, want) {
			t.Errorf("rendered DOM does not contain %q", want)
		}
	}
	for _, bad := range unwanted {
		if strings.Contains(dom, bad) {
			t.Errorf("rendered DOM contains %q", bad)
		}
	}
	if t.Failed() {
		t.Logf("DOM:\n%s", dom)
	}
}

// TestStatusPageInBrowser loads the status page in a real headless
// Chromium against a live cluster: the page's script must fetch the
// cluster JSON and draw it.
func TestStatusPageInBrowser(t *testing.T) {
	bin := browserOrSkip(t)
	c := newTestCluster(t, 3, 2)
	url := "http://" + c.master.Addr() + "/" + ReservedPrefix + "status"
	state := c.master.clusterState()

	wants := []string{
		"Updated ", // a refresh succeeded
		`id="master-name">` + state.Node.Name + `<`,
		`<dt>Replicas per value</dt><dd>` + strconv.Itoa(state.Replicas) + `</dd>`,
		`id="error" class="banner" role="alert" hidden=""`,
		`id="master-addr">` + c.master.Addr() + `</span>`,
		// An idle cluster's rebalance, in words; the test master has no
		// cap on the copy rate (RebalanceRate -1, sent as 0).
		`This pass: no keys to move.`,
		`<dt>Since the master started</dt><dd><span>0 keys moved · 0 B copied · 0 failed</span></dd>`,
		`<dt>Copy rate limit</dt><dd>no limit · 4 keys at a time</dd>`,
	}
	vols := 0
	for _, m := range state.Members {
		if m.Role == RoleVolume {
			vols++
			wants = append(wants, `<td class="name" title="`+m.Name+`">`+m.Name+`</td>`, `<div class="mono" title="`+m.Name+`">`+m.Name+`</div>`)
		}
	}
	if vols != 3 {
		t.Fatalf("cluster state lists %d volumes, want 3: %+v", vols, state.Members)
	}
	dom := string(runBrowser(t, bin, "--dump-dom", url))
	checkDOM(t, dom, wants, nil)
	checkMembersTable(t, dom, state.Node.Name)
	// The volumes' directories are on one filesystem (the test's
	// temporary directory), and the page counts it once. (Two volumes if
	// gossip, slowed down by the race detector, gives up on one.)
	if !regexp.MustCompile(`· [23] volumes on 1 filesystem</div>`).MatchString(dom) {
		t.Errorf("Disk used does not count the volumes' one filesystem once")
	}
	screenshot(t, bin, url, "status.png", "1280,900")
}

// statusFixture is a cluster document with everything the page must cope
// with: fields the master does not send yet (keys, load, rebalance),
// departed members, repairs under way, and names that are markup.
const statusFixture = `{
  "node": {"name": "master-eu1", "role": "master", "addr": "[::]:3000", "state": "alive"},
  "replicas": 3,
  "members": [
    {"name": "vol-b", "role": "volume", "addr": "10.0.0.3:3001", "gossip": "10.0.0.3:7947", "state": "suspect", "free": 85899345920, "total": 1099511627776, "fs": 2049, "keys": 48211, "weight": 1, "partitions": 270, "load": 1.04, "draining": true},
    {"name": "master-eu1", "role": "master", "addr": "10.0.0.1:3000", "gossip": "10.0.0.1:7946", "state": "alive", "free": 0, "total": 0, "keys": 0, "weight": 1},
    {"name": "vol-a", "role": "volume", "addr": "10.0.0.2:3001", "gossip": "10.0.0.2:7947", "state": "alive", "free": 659706976665, "total": 1099511627776, "fs": 2049, "keys": 51876, "weight": 2, "partitions": 260, "load": 0.97},
    {"name": "<img src=x onerror=document.title='owned'>", "role": "volume", "addr": "<b>10.0.0.9</b>", "state": "alive", "free": 1073741824, "total": 2147483648, "keys": 12},
    {"name": "vol-c", "role": "volume", "addr": "10.0.0.2:3002", "state": "alive", "free": 660000000000, "total": 1099511627776, "fs": 2049, "future_field": "ok"}
  ],
  "departed": [
    {"name": "vol-old", "role": "volume", "addr": "10.0.0.5:3001", "state": "dead", "free": 5, "total": 10},
    {"name": "vol-gone", "role": "volume", "addr": "10.0.0.6:3001", "state": "left"}
  ],
  "ring": {"partitions": 1021, "load": 1.25, "max_partitions": 320,
    "owned": {"vol-a": 260, "vol-b": 270, "vol-c": 250, "<img src=x onerror=document.title='owned'>": 241}},
  "merging": ["vol-c"],
  "pending_deletes": {"vol-a": 3, "vol-b": 12},
  "under_replicated": 1742,
  "repair_copies": 96,
  "repair_starts_in": {"vol-old": 42.3, "vol-gone": 0},
  "rebalance": {"state": "moving", "misplaced": 5000, "moved_total": 9000, "bytes_total": 7340032000, "failed_total": 2,
    "moved": 1234, "bytes": 987654321, "total": 5000, "rate_limit": 134217728, "concurrency": 4, "draining": ["vol-b"],
    "started": "2026-03-01T10:00:00Z", "detail": {"pass": 3}}
}`

// TestStatusPageRendersFixture draws a fixture cluster document in the
// browser: every kind of field is shown, markup in names stays text, and
// when the next refresh fails a banner says so while the last data stays.
func TestStatusPageRendersFixture(t *testing.T) {
	bin := browserOrSkip(t)
	var fetches atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/" + ReservedPrefix + "status":
			fetches.Store(0) // each page load gets one good answer, then errors
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			io.WriteString(w, statusPage)
		case "/" + ReservedPrefix + "cluster":
			if fetches.Add(1) > 1 {
				http.Error(w, "master unavailable", http.StatusServiceUnavailable)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			io.WriteString(w, statusFixture)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	url := srv.URL + "/" + ReservedPrefix + "status"

	dom := string(runBrowser(t, bin, "--dump-dom", url))
	if n := fetches.Load(); n < 2 {
		t.Fatalf("page fetched the cluster %d times in 5 s, want a refresh every 2 s", n)
	}
	checkDOM(t, dom, []string{
		`<title>kvdb · master-eu1</title>`,
		`<td class="name" title="vol-a">vol-a</td>`,
		`<tr class="departed"><td class="name" title="vol-old">vol-old</td>`,
		`<tr class="departed"><td class="name" title="vol-gone">vol-gone</td>`,
		`<span class="badge warn">suspect</span>`,
		`<span class="badge bad">dead</span>`,
		`>Keys</th>`, `<td class="num">51,876</td>`,
		`>Load</th>`, `<td class="num">1.04</td>`,
		// vol-a: weight 2, 260 partitions, load 0.97.
		`<td class="num">2</td><td class="num">260</td><td class="num">0.97</td>`,
		// The header shows the address the master advertises, not the
		// one it listens on.
		`id="master-addr" title="listens on [::]:3000">10.0.0.1:3000</span>`,
		`<th class="num">Future field</th>`,
		`<b>944 GiB</b> of 1.00 TiB · 92%`, // vol-b: 1 TiB less 80 GiB free
		`<b>260</b> / 320`,
		`&lt;img src=x onerror=document.title='owned'&gt;`,
		`&lt;b&gt;10.0.0.9&lt;/b&gt;`,
		`<dt>Pending deletes</dt><dd><span>15<span class="muted"> — vol-a 3, vol-b 12</span></span></dd>`,
		`1,742`,
		// Disk used counts each filesystem once (issue 11: kvdb dev's
		// three volumes on one disk made it look three times its size).
		// vol-a and vol-c share one on 10.0.0.2 (the least free of the
		// two counts); vol-b's on 10.0.0.3 has the same device number
		// but is another host's; the last volume does not say.
		`<div class="k">Disk used</div><div class="v">66%</div><div class="s">1.32 TiB of 2.00 TiB · 4 volumes on 3 filesystems</div>`,
		`title="614 GiB free; filesystem shared with vol-c"`,
		`title="615 GiB free; filesystem shared with vol-a"`,
		// Repair waits out the repair delay for vol-old (issue 11: the
		// page said "repairing" while nothing was being copied).
		`repair starts in 43 s`,
		`<span class="badge warn" title="Repair waits for vol-old to come back before copying its replicas elsewhere.">waiting (repair in 43 s)</span><span class="muted"> vol-old gone</span>`,
		// Rebalance in words (issue 11: "Moved", "Moved total", "Bytes"
		// and "Total" left an operator guessing).
		`<span class="badge warn">moving</span> the last pass found keys to move`,
		`This pass: moved 1,234 of 5,000 keys (942 MiB) · 25%`,
		`<dt>Misplaced at the last full pass</dt><dd>5,000 keys</dd>`,
		`<dt>Since the master started</dt><dd><span>9,000 keys moved · 6.84 GiB copied · <span class="badge bad">2 failed</span></span></dd>`,
		`<dt>Copy rate limit</dt><dd>128 MiB/s · 4 keys at a time</dd>`,
		`<dt>Draining</dt><dd>vol-b</dd>`,
		// Fields the page does not know are listed as they come.
		`<dt>Started</dt><dd><span>2026-03-01T10:00:00Z</span></dd>`,
		`<dt>Detail</dt><dd><span>{"pass":3}</span></dd>`,
		`<span class="badge warn">suspect</span> <span class="badge warn">draining</span>`,
		`Cannot refresh from /_kvdb/cluster: HTTP 503. Showing data from `,
	}, []string{
		`<img`,
		`<b>10.0.0.9`,
		`>[::]:3000<`,
		`owned</title>`,
		`id="rebalance-panel" hidden`,
		`>repairing<`,
		`<dt>Moved</dt>`, `<dt>Moved total</dt>`, `<dt>Bytes</dt>`, `<dt>Bytes total</dt>`, `<dt>Total</dt>`,
		`<dt>Failed total</dt>`, `<dt>Misplaced</dt>`, `<dt>State</dt>`,
	})
	checkMembersTable(t, dom, "master-eu1")
	screenshot(t, bin, url, "status-fixture.png", "1280,1200")
}

// checkMembersTable checks the members table of a rendered page: each
// column once (issue 11: "Partitions" came twice, once from the ring and
// once from the member's own field), and no keys, weight, partitions or
// load in the master's row, whose gossip entry says keys 0 and weight 1.
func checkMembersTable(t *testing.T, dom, master string) {
	t.Helper()
	head := regexp.MustCompile(`<tr id="members-head">(.*?)</tr>`).FindStringSubmatch(dom)
	if head == nil {
		t.Fatalf("no members table head in the DOM:\n%s", dom)
	}
	seen := map[string]int{}
	for _, m := range regexp.MustCompile(`<th[^>]*>([^<]*)</th>`).FindAllStringSubmatch(head[1], -1) {
		seen[m[1]]++
	}
	for _, col := range []string{"Name", "Role", "Address", "State", "Disk (used of total)", "Keys", "Weight", "Partitions", "Load"} {
		if seen[col] != 1 {
			t.Errorf("members table has %d %q columns, want 1 (head: %s)", seen[col], col, head[1])
		}
	}
	for col, n := range seen {
		if n > 1 {
			t.Errorf("members table has %d %q columns", n, col)
		}
	}
	row := regexp.MustCompile(`<tr><td class="name" title="` + regexp.QuoteMeta(master) + `">.*?</tr>`).FindString(dom)
	if row == "" {
		t.Fatalf("no row for the master %s in the DOM:\n%s", master, dom)
	}
	// Disk, then Keys, Weight, Partitions and Load: all empty.
	if !strings.Contains(row, `<td><span class="muted">—</span></td><td class="num"></td><td class="num"></td><td class="num"></td><td class="num"></td>`) {
		t.Errorf("master's row shows volume figures: %s", row)
	}
}

// TestStatusRepairWaiting loses a volume on a cluster whose repair delay
// is a minute: until the delay is over nothing is copied, so the cluster
// document says when repair starts (repair_starts_in) and the page shows
// "waiting", not "repairing".
func TestStatusRepairWaiting(t *testing.T) {
	const delay = time.Minute
	c := newTestClusterWith(t, 3, 2, func(c *testCluster) { c.mcfg.RepairDelay = delay })
	for i := range 30 {
		c.put(fmt.Sprintf("k%02d", i), "value")
	}
	gone := c.vcfgs[0].Name
	c.killVolume(0)
	start := time.Now()

	var state client.ClusterInfo
	waitFor(t, 15*time.Second, "the master to find "+gone+"'s keys under-replicated", func() bool {
		state = c.master.clusterState()
		_, ok := state.RepairStartsIn[gone]
		return ok && state.UnderReplicated > 0
	})
	// The clock starts when a pass finds the volume gone: at the time the
	// pass began, which may be a while before the kill returned (a pass
	// over the keys takes seconds on a loaded machine: 10 s have been seen).
	if in, least := state.RepairStartsIn[gone], (delay-time.Since(start)).Seconds()-15; in < least || in > delay.Seconds() {
		t.Errorf("repair_starts_in[%s] = %v s, want between %.1f and %v", gone, in, least, delay.Seconds())
	}
	// Only gone volumes are waited for. (Under the race detector gossip
	// may give up on another volume for a moment too: not only vol1.)
	for name := range state.RepairStartsIn {
		for _, m := range state.Members {
			if m.Name == name {
				t.Errorf("repair_starts_in lists %s, which is live: %v", name, state.RepairStartsIn)
			}
		}
	}
	// The document the page reads has it too.
	resp, err := c.client.Get("http://" + c.master.Addr() + "/" + ReservedPrefix + "cluster")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		RepairStartsIn map[string]float64 `json:"repair_starts_in"`
	}
	err = json.NewDecoder(resp.Body).Decode(&doc)
	resp.Body.Close()
	if err != nil || doc.RepairStartsIn[gone] <= 0 {
		t.Errorf("/_kvdb/cluster: repair_starts_in = %v (%v), want %s waiting", doc.RepairStartsIn, err, gone)
	}

	bin := browserOrSkip(t)
	url := "http://" + c.master.Addr() + "/" + ReservedPrefix + "status"
	dom := string(runBrowser(t, bin, "--dump-dom", url))
	checkDOM(t, dom, []string{"waiting (repair in ", " s)</span>", "repair starts in "}, []string{">repairing<"})
	if !regexp.MustCompile(`<span class="muted"> [^<]*\b` + gone + `\b[^<]* gone</span>`).MatchString(dom) {
		t.Errorf("the page does not name %s as the volume repair waits for", gone)
	}
	screenshot(t, bin, url, "status-repair-waiting.png", "1280,900")
}

// TestStatusVolumeFilesystems checks what the Disk used card relies on:
// volumes whose directories share a filesystem gossip the same non-zero
// filesystem identity, and a volume with a capacity of its own gossips
// none (its free and total bytes are its own, not the filesystem's).
func TestStatusVolumeFilesystems(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	c.addVolume(func(vc *VolumeConfig) { vc.Capacity = 1 << 30 })
	c.waitVolumes(3)
	fs := map[string]uint64{}
	waitFor(t, 10*time.Second, "the volumes' filesystems in gossip", func() bool {
		for _, m := range c.master.clusterState().Members {
			if m.Role == RoleVolume {
				fs[m.Name] = m.FS
			}
		}
		return len(fs) == 3 && fs["vol1"] != 0 && fs["vol2"] != 0
	})
	if fs["vol1"] != fs["vol2"] {
		t.Errorf("vol1 and vol2 share a filesystem but gossip fs %d and %d", fs["vol1"], fs["vol2"])
	}
	if fs["vol3"] != 0 {
		t.Errorf("vol3 has a capacity of its own but gossips fs %d, want 0", fs["vol3"])
	}
}
