package main

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
)

// metric returns the value of the sample named exactly series (name and
// labels as exposed) on the node at addr, 0 when absent.
func metric(t *testing.T, addr, series string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/_kvdb/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err != nil {
				t.Fatalf("metric %s: %v", series, err)
			}
			return v
		}
	}
	return 0
}

// TestRedirectedWriteCurl: curl, as README shows it, with and without
// Expect. A body over 1 MB (curl sends Expect: 100-continue) is redirected
// to a volume and crosses the master not at all; a small one, or one sent
// with Expect disabled, streams through the master. Both read back whole.
func TestRedirectedWriteCurl(t *testing.T) {
	if _, err := exec.LookPath("curl"); err != nil {
		t.Skip("curl is not installed")
	}
	c := startProcCluster(t, 3, 2)
	dir := t.TempDir()
	big := filepath.Join(dir, "big")
	f, err := os.Create(big)
	if err != nil {
		t.Fatal(err)
	}
	const size = 8 << 20
	if _, err := io.Copy(f, &pattern{size: size}); err != nil {
		t.Fatal(err)
	}
	f.Close()
	master := c.master.field("http")
	before := metric(t, master, `kvdb_request_bytes_total{role="master"}`)
	redirectedBefore := metric(t, master, `kvdb_redirected_writes_total{role="master"}`)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"PUT with Expect (curl's own, over 1 MB)", []string{"-T", big, c.url + "/curl/put"}, "201"},
		{"POST with Expect", []string{"-X", "POST", "--data-binary", "@" + big, c.url + "/curl/post"}, "201"},
		{"POST to an existing key", []string{"-X", "POST", "--data-binary", "@" + big, c.url + "/curl/post"}, "409"},
		{"PUT without Expect", []string{"-H", "Expect:", "-T", big, c.url + "/curl/noexpect"}, "201"},
		{"the seed's POST", []string{"-X", "POST", "-d", "examplevalue", c.url + "/curl/small"}, "201"},
	} {
		args := append([]string{"-sS", "-L", "-o", "/dev/null", "-w", "%{http_code}"}, tc.args...)
		out, err := exec.Command("curl", args...).CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != tc.want {
			t.Fatalf("%s: curl %v: %s %v, want %s", tc.name, args, out, err, tc.want)
		}
	}
	redirected := metric(t, master, `kvdb_redirected_writes_total{role="master"}`) - redirectedBefore
	through := metric(t, master, `kvdb_request_bytes_total{role="master"}`) - before
	t.Logf("redirected writes: %.0f; request bytes through the master: %.0f (one %d MiB body without Expect)", redirected, through, size>>20)
	if redirected < 2 {
		t.Errorf("%.0f writes were redirected, want the 2 with Expect (and the refused POST's 409 before its body)", redirected)
	}
	if through > size+(1<<20) {
		t.Errorf("%.0f request bytes went through the master, want at most the one body sent without Expect", through)
	}
	want := xxhash.New()
	_, _ = io.Copy(want, &pattern{size: size})
	for _, k := range []string{"curl/put", "curl/post", "curl/noexpect"} {
		st, n, sum := crashGetSum(t, http.DefaultClient, c.url+"/"+k)
		if st != 200 || n != size || sum != want.Sum64() {
			t.Errorf("GET %s: got %d, %d bytes, %x; want the file", k, st, n, sum)
		}
	}
}

// TestPutStdinRedirected: kvdb put of a 200 MiB stream from stdin (size
// unknown, so sent chunked with Expect) goes straight to the volumes, and
// no process (client, master, volumes) grows past a few MB of buffers.
func TestPutStdinRedirected(t *testing.T) {
	size := int64(200 << 20)
	if testing.Short() {
		size = 32 << 20
	}
	c := startProcCluster(t, 3, 2)
	master := c.master.field("http")
	redirectedBefore := metric(t, master, `kvdb_redirected_writes_total{role="master"}`)
	cmd := exec.Command(kvdbBin, "put", "--url", c.url, "stdin/big", "-")
	cmd.Stdin = &pattern{size: size}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The client's peak RSS, from /proc while it runs: wait4's ru_maxrss
	// would count the test process's own size, inherited across the fork
	// before exec.
	var clientRSS int64
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	status := fmt.Sprintf("/proc/%d/status", cmd.Process.Pid)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
wait:
	for {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("kvdb put from stdin: %v: %s", err, stderr.String())
			}
			break wait
		case <-tick.C:
			if hwm := statusKB(status, "VmHWM:"); hwm > clientRSS {
				clientRSS = hwm
			}
		}
	}
	if metric(t, master, `kvdb_redirected_writes_total{role="master"}`) <= redirectedBefore {
		t.Error("the write was not redirected to a volume")
	}
	want := xxhash.New()
	_, _ = io.Copy(want, &pattern{size: size})
	st, n, sum := crashGetSum(t, http.DefaultClient, c.url+"/stdin/big")
	if st != 200 || n != size || sum != want.Sum64() {
		t.Fatalf("GET: got %d, %d bytes, %x; want the stream whole", st, n, sum)
	}
	const limit = 96 << 20
	t.Logf("kvdb put peak RSS %.1f MiB", float64(clientRSS)/(1<<20))
	if clientRSS > limit {
		t.Errorf("kvdb put: peak RSS %d MiB for a %d MiB stream", clientRSS>>20, size>>20)
	}
	for _, p := range append([]*proc{c.master}, c.vols...) {
		hwm := p.vmHWM(t)
		t.Logf("%s peak RSS (VmHWM) %.1f MiB", p.cmd.Args[1], float64(hwm)/(1<<20))
		if hwm > limit {
			t.Errorf("%s: peak RSS %d MiB after a %d MiB value, want under %d MiB", p.cmd.Args[1], hwm>>20, size>>20, limit>>20)
		}
	}
}

// statusKB reads a "Name:   N kB" line of a /proc status file, in bytes (0
// when the process is gone).
func statusKB(path, name string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb << 10
			}
		}
	}
	return 0
}
