package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kvdb/kvdb/node"
)

var clusterSeq atomic.Int64

// startCluster runs a master and three volumes in the test process and
// returns the master's URL once it sees all three.
func startCluster(t *testing.T) string {
	t.Helper()
	url, _ := startClusterVolumes(t)
	return url
}

// startClusterVolumes is startCluster that also returns the volumes.
func startClusterVolumes(t *testing.T) (string, []*node.Volume) {
	t.Helper()
	dir := t.TempDir()
	label := fmt.Sprintf("bench-test-%d-%d", os.Getpid(), clusterSeq.Add(1))
	m, err := node.NewMaster(node.MasterConfig{
		Addr: "127.0.0.1:0", Dir: filepath.Join(dir, "m"), Replicas: 2,
		Gossip: node.GossipConfig{Bind: "127.0.0.1:0", Cluster: label, Profile: node.ProfileTest},
	})
	if err != nil {
		t.Fatalf("start master: %v", err)
	}
	t.Cleanup(m.Kill)
	var vols []*node.Volume
	for i := 1; i <= 3; i++ {
		v, err := node.NewVolume(node.VolumeConfig{
			Name: fmt.Sprintf("vol%d", i), Addr: "127.0.0.1:0", Dir: filepath.Join(dir, fmt.Sprintf("vol%d", i)),
			Gossip: node.GossipConfig{
				Bind: "127.0.0.1:0", Cluster: label, Profile: node.ProfileTest,
				Join: []string{m.GossipAddr()},
			},
		})
		if err != nil {
			t.Fatalf("start volume %d: %v", i, err)
		}
		t.Cleanup(v.Kill)
		vols = append(vols, v)
	}
	waitFor(t, 15*time.Second, "master to see 3 volumes", func() bool { return m.LiveVolumes() == 3 })
	return "http://" + m.Addr(), vols
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func row(t *testing.T, res Result, name string) OpStats {
	t.Helper()
	s, ok := findRow(res.Ops, name)
	if !ok {
		t.Fatalf("no %q row in %+v", name, res.Ops)
	}
	return s
}

func mustMix(t *testing.T, s string) Mix {
	t.Helper()
	m, err := ParseMix(s)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestRunAgainstCluster(t *testing.T) {
	url := startCluster(t)
	tests := []struct {
		ops string
		// want counts per row; rows not listed must be absent. -1: any.
		want map[string]int64
		// total of the timed rows, when their split is random.
		total int64
	}{
		{ops: "put,get,delete", want: map[string]int64{"put": 20, "get": 20, "delete": 20}},
		{ops: "put", want: map[string]int64{"put": 60, rowCleanup: 60}},
		{ops: "get", want: map[string]int64{rowSetup: 16, "get": 60, rowCleanup: 16}},
		{ops: "head", want: map[string]int64{rowSetup: 16, "head": 60, rowCleanup: 16}},
		{ops: "put,get", want: map[string]int64{"put": 30, "get": 30, rowCleanup: 30}},
		{
			ops:   "mixed:70get/20put/10delete",
			want:  map[string]int64{"put": -1, "get": -1, "delete": -1, rowCleanup: -1},
			total: 60,
		},
	}
	for i, tt := range tests {
		t.Run(tt.ops, func(t *testing.T) {
			var buf bytes.Buffer
			prefix := fmt.Sprintf("bench/t%d/", i)
			res, err := Run(context.Background(), Config{
				URL: url, Size: SizeRange{4 << 10, 64 << 10}, Count: 60, Concurrency: 4,
				Ops: mustMix(t, tt.ops), Prefix: prefix, Verify: true, Seed: uint64(i), Progress: &buf,
			})
			if err != nil {
				t.Fatal(err)
			}
			var table bytes.Buffer
			if err := res.WriteTable(&table); err != nil {
				t.Fatal(err)
			}
			t.Logf("\n%s", table.String())
			var total int64
			for _, s := range res.Ops {
				want, ok := tt.want[s.Op]
				if !ok {
					t.Errorf("unexpected row %q (count %d)", s.Op, s.Count)
					continue
				}
				if want >= 0 && s.Count != want {
					t.Errorf("%s: count %d, want %d", s.Op, s.Count, want)
				}
				if s.Errors != 0 {
					t.Errorf("%s: %d errors, first: %s", s.Op, s.Errors, s.FirstErr)
				}
				if s.Count > 0 && (s.P50 <= 0 || s.Max < s.P99 || s.P99 < s.P90 || s.P90 < s.P50) {
					t.Errorf("%s: latencies p50 %v p90 %v p99 %v max %v", s.Op, s.P50, s.P90, s.P99, s.Max)
				}
				if s.Op != rowSetup && s.Op != rowCleanup {
					total += s.Count
				}
			}
			for name, want := range tt.want {
				if _, ok := findRow(res.Ops, name); !ok && want != 0 && (want > 0 || name != rowCleanup) {
					t.Errorf("no %q row", name)
				}
			}
			if tt.total > 0 && total != tt.total {
				t.Errorf("timed ops: %d, want %d", total, tt.total)
			}
			if g := row(t, res, res.Ops[0].Op); g.MBPerSec <= 0 && g.Op != "delete" && g.Op != "head" {
				t.Errorf("%s: MB/s %v", g.Op, g.MBPerSec)
			}
			if !strings.Contains(buf.String(), "ops") {
				t.Errorf("no progress written: %q", buf.String())
			}
			// Cleanup left nothing behind.
			resp, err := http.Get(url + "/" + prefix + "?list")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var list struct{ Keys []string }
			if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
				t.Fatal(err)
			}
			if len(list.Keys) != 0 {
				t.Errorf("keys left under %s: %q", prefix, list.Keys)
			}
		})
	}
}

// memServer is a minimal store: PUT keeps the body, GET answers with a
// relative 302 to /_blob/KEY, which serves it through corrupt.
type memServer struct {
	mu      sync.Mutex
	vals    map[string][]byte
	corrupt func([]byte) []byte
}

func (s *memServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/")
	blob, isBlob := strings.CutPrefix(key, "_blob/")
	s.mu.Lock()
	defer s.mu.Unlock()
	switch r.Method {
	case http.MethodPut:
		b, err := io.ReadAll(r.Body) // small test values only
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		s.vals[key] = b
		w.WriteHeader(http.StatusCreated)
	case http.MethodGet, http.MethodHead:
		if !isBlob {
			http.Redirect(w, r, "/_blob/"+key, http.StatusFound)
			return
		}
		b, ok := s.vals[blob]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if s.corrupt != nil {
			b = s.corrupt(bytes.Clone(b))
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Write(b)
	case http.MethodDelete:
		delete(s.vals, key)
		w.WriteHeader(http.StatusNoContent)
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func TestVerifyCatchesCorruption(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func([]byte) []byte
		want    string
	}{
		{"intact", nil, ""},
		{"flipped byte", func(b []byte) []byte { b[1234] ^= 0x40; return b }, "verify: byte 1234 differs"},
		{"short", func(b []byte) []byte { return b[:len(b)-1] }, "verify: body is"},
		{"long", func(b []byte) []byte { return append(b, 0) }, "verify: body longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &memServer{vals: map[string][]byte{}, corrupt: tt.corrupt}
			srv := httptest.NewServer(s)
			defer srv.Close()
			res, err := Run(context.Background(), Config{
				URL: srv.URL, Size: SizeRange{4 << 10, 8 << 10}, Count: 30, Concurrency: 3,
				Ops: mustMix(t, "put,get,delete"), Verify: true,
			})
			if err != nil {
				t.Fatal(err)
			}
			get := row(t, res, "get")
			if tt.want == "" {
				if get.Errors != 0 {
					t.Fatalf("get: %d errors: %s", get.Errors, get.FirstErr)
				}
				if get.Bytes < 10*(4<<10) {
					t.Errorf("get: %d bytes", get.Bytes)
				}
				return
			}
			if get.Errors != get.Count || get.Count != 10 {
				t.Errorf("get: %d errors of %d, want 10 of 10", get.Errors, get.Count)
			}
			if !strings.Contains(get.FirstErr, tt.want) || !strings.HasPrefix(get.FirstErr, "GET ") {
				t.Errorf("first error %q, want %q", get.FirstErr, tt.want)
			}
			if p := row(t, res, "put"); p.Errors != 0 {
				t.Errorf("put: %d errors: %s", p.Errors, p.FirstErr)
			}
		})
	}
}

// TestVerifyLargeValue streams values larger than a worker's buffers
// through a server that generates them, and finds a byte flipped deep in.
func TestVerifyLargeValue(t *testing.T) {
	const size = 20<<20 + 3
	cfg := Config{Size: SizeRange{size, size}, Seed: 7, Prefix: "big/"}
	var flipAt atomic.Int64
	flipAt.Store(-1)
	var putBytes atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := strings.TrimPrefix(r.URL.Path, "/")
		v := newValue(cfg.Seed, key, cfg.Size)
		switch r.Method {
		case http.MethodPut:
			// Check the body streamed in is the value, without keeping it.
			c := checker{v: v, exp: make([]byte, 64<<10)}
			buf := make([]byte, 100_003)
			for {
				n, err := r.Body.Read(buf)
				if cerr := c.check(buf[:n]); cerr != nil {
					http.Error(w, cerr.Error(), 400)
					return
				}
				putBytes.Add(int64(n))
				if err == io.EOF {
					break
				}
				if err != nil {
					http.Error(w, err.Error(), 400)
					return
				}
			}
			if err := c.done(); err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			w.WriteHeader(http.StatusCreated)
		case http.MethodGet:
			w.Header().Set("Content-Length", fmt.Sprint(v.size))
			vr := &valueReader{}
			vr.reset(context.Background(), v, make([]byte, 1<<20))
			if at := flipAt.Load(); at >= 0 {
				io.CopyN(w, vr, at)
				var b [1]byte
				vr.Read(b[:])
				b[0] ^= 1
				w.Write(b[:])
			}
			io.Copy(w, vr)
		default:
			w.WriteHeader(http.StatusOK)
		}
	}))
	defer srv.Close()
	cfg.URL, cfg.Count, cfg.Concurrency, cfg.Ops, cfg.Verify = srv.URL, 6, 2, mustMix(t, "put,get,delete"), true

	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Ops {
		if s.Errors != 0 {
			t.Errorf("%s: %d errors: %s", s.Op, s.Errors, s.FirstErr)
		}
	}
	if g := row(t, res, "get"); g.Bytes != 2*size {
		t.Errorf("get moved %d bytes, want %d", g.Bytes, 2*size)
	}
	if putBytes.Load() != 2*size {
		t.Errorf("server received %d bytes, want %d", putBytes.Load(), 2*size)
	}

	flipAt.Store(13_000_001)
	res, err = Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if g := row(t, res, "get"); g.Errors != 2 || !strings.Contains(g.FirstErr, "verify: byte 13000001 differs") {
		t.Errorf("get: %d errors, first %q; want 2, byte 13000001", g.Errors, g.FirstErr)
	}
}

func TestStatusErrors(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		http.Error(w, "boom\nsecond line", http.StatusInternalServerError)
	}))
	defer srv.Close()
	res, err := Run(context.Background(), Config{
		URL: srv.URL, Size: SizeRange{1 << 10, 1 << 10}, Count: 12, Concurrency: 2,
		Ops: mustMix(t, "put,get,delete"), Prefix: "x/",
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range []string{"put", "get", "delete"} {
		s := row(t, res, op)
		if s.Count != 4 || s.Errors != 4 {
			t.Errorf("%s: %d errors of %d, want 4 of 4", op, s.Errors, s.Count)
		}
		if !strings.Contains(s.FirstErr, ": status 500: boom") || strings.Contains(s.FirstErr, "second") {
			t.Errorf("%s: first error %q", op, s.FirstErr)
		}
		if !strings.HasPrefix(s.FirstErr, strings.ToUpper(op)+" x/") {
			t.Errorf("%s: first error %q does not name the op and key", op, s.FirstErr)
		}
		if s.Bytes != 0 || s.P50 != 0 {
			t.Errorf("%s: failed ops counted bytes %d, p50 %v", op, s.Bytes, s.P50)
		}
	}
	// Nothing was written, so nothing to clean up.
	if _, ok := findRow(res.Ops, rowCleanup); ok {
		t.Errorf("cleanup row without keys: %+v", res.Ops)
	}
}

func TestTransportError(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	res, err := Run(context.Background(), Config{
		URL: url, Size: SizeRange{1 << 10, 1 << 10}, Count: 3, Ops: mustMix(t, "put"), Timeout: 5 * time.Second,
	})
	if err != nil {
		t.Fatal(err)
	}
	if p := row(t, res, "put"); p.Errors != 3 || !strings.Contains(p.FirstErr, "PUT bench/") {
		t.Errorf("put: %d errors, first %q", p.Errors, p.FirstErr)
	}
}

func TestDurationAndCancel(t *testing.T) {
	s := &memServer{vals: map[string][]byte{}}
	srv := httptest.NewServer(s)
	defer srv.Close()
	cfg := Config{
		URL: srv.URL, Size: SizeRange{1 << 10, 2 << 10}, Duration: 300 * time.Millisecond, Concurrency: 2,
		Ops: mustMix(t, "mixed:50get/30put/10delete/10head"), Verify: true,
	}
	start := time.Now()
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 10*time.Second {
		t.Errorf("a 300ms run took %v", d)
	}
	var timed int64
	for _, r := range res.Ops {
		if r.Errors != 0 {
			t.Errorf("%s: %d errors: %s", r.Op, r.Errors, r.FirstErr)
		}
		if r.Op != rowCleanup {
			timed += r.Count
		}
	}
	if timed == 0 {
		t.Error("no operation in 300ms")
	}
	s.mu.Lock()
	left := len(s.vals)
	s.mu.Unlock()
	if left != 0 {
		t.Errorf("%d keys left after cleanup", left)
	}

	// A cancelled run stops early and still reports and cleans up.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	cfg.Duration = time.Hour
	res, err = Run(ctx, cfg)
	if err != context.DeadlineExceeded {
		t.Errorf("cancelled run: err %v", err)
	}
	if len(res.Ops) == 0 || time.Since(start) > time.Minute {
		t.Errorf("cancelled run: %+v", res.Ops)
	}
	s.mu.Lock()
	left = len(s.vals)
	s.mu.Unlock()
	if left != 0 {
		t.Errorf("%d keys left after a cancelled run", left)
	}
}

func TestRunBaseline(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "a", "b")
	rows, err := RunBaseline(context.Background(), Config{
		Size: SizeRange{4 << 10, 64 << 10}, Count: 20, Concurrency: 2, Verify: true,
	}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 2 || rows[0].Op != RowWriteFsync || rows[1].Op != RowSendfileGet {
		t.Fatalf("rows %+v", rows)
	}
	for _, r := range rows {
		if r.Count != 20 || r.Errors != 0 || r.MBPerSec <= 0 || r.P50 <= 0 {
			t.Errorf("%s: count %d errors %d (%s) MB/s %v p50 %v", r.Op, r.Count, r.Errors, r.FirstErr, r.MBPerSec, r.P50)
		}
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("left behind in %s: %v", parent, ents)
	}

	// An existing directory stays, empty.
	rows, err = RunBaseline(context.Background(), Config{Size: SizeRange{1 << 10, 1 << 10}, Count: 4}, parent)
	if err != nil || len(rows) != 2 {
		t.Fatalf("rows %+v, err %v", rows, err)
	}
	if ents, err := os.ReadDir(parent); err != nil || len(ents) != 0 {
		t.Errorf("existing dir: %v, %v", ents, err)
	}
}

func TestParseSizeRange(t *testing.T) {
	tests := []struct {
		in      string
		want    SizeRange
		wantErr bool
	}{
		{"4096", SizeRange{4096, 4096}, false},
		{"1MiB", SizeRange{1 << 20, 1 << 20}, false},
		{"1mib", SizeRange{1 << 20, 1 << 20}, false},
		{"1KiB-16MiB", SizeRange{1 << 10, 16 << 20}, false},
		{"64K-1G", SizeRange{64 << 10, 1 << 30}, false},
		{"1MB", SizeRange{1e6, 1e6}, false},
		{"2 GB", SizeRange{2e9, 2e9}, false},
		{"10B", SizeRange{10, 10}, false},
		{"16MiB-1MiB", SizeRange{}, true},
		{"", SizeRange{}, true},
		{"lots", SizeRange{}, true},
		{"1.5MiB", SizeRange{}, true},
		{"1MiB-", SizeRange{}, true},
		{"99999999TiB", SizeRange{}, true},
	}
	for _, tt := range tests {
		got, err := ParseSizeRange(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSizeRange(%q) = %v, %v; want %v, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
	for _, s := range []string{"1KiB", "1MiB-16MiB", "4097", "1GiB"} {
		r, _ := ParseSizeRange(s)
		if back, err := ParseSizeRange(r.String()); err != nil || back != r {
			t.Errorf("%q: String %q parses back as %v, %v", s, r.String(), back, err)
		}
	}
}

// TestParseSize: the one size syntax of bench and of kvdb's flags.
func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    int64
		wantErr bool
	}{
		{"0", 0, false},
		{"4096", 4096, false},
		{"10B", 10, false},
		{"64KiB", 64 << 10, false},
		{"64K", 64 << 10, false},
		{"64kib", 64 << 10, false},
		{"1MiB", 1 << 20, false},
		{"1m", 1 << 20, false},
		{"5GiB", 5 << 30, false},
		{"5 GiB", 5 << 30, false},
		{" 2G ", 2 << 30, false},
		{"3TiB", 3 << 40, false},
		{"3T", 3 << 40, false},
		{"1KB", 1e3, false},
		{"1MB", 1e6, false},
		{"2 GB", 2e9, false},
		{"4TB", 4e12, false},
		{"4096TiB", 4096 << 40, false},
		{"4194304TiB", 1 << 62, false},
		{"4194305TiB", 0, true},
		{"4611686018427387904", 1 << 62, false},
		{"4611686018427387905", 0, true},
		{"99999999TiB", 0, true},
		{"", 0, true},
		{"KiB", 0, true},
		{"lots", 0, true},
		{"1.5MiB", 0, true},
		{"-1", 0, true},
		{"-1KiB", 0, true},
		{"1PiB", 0, true},
		{"1 2", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestFormatSize(t *testing.T) {
	for _, tt := range []struct {
		in   int64
		want string
	}{
		{0, "0"}, {1000, "1000"}, {1 << 10, "1KiB"}, {1536 << 10, "1536KiB"},
		{128 << 20, "128MiB"}, {50 << 20, "50MiB"}, {5 << 30, "5GiB"}, {2 << 40, "2TiB"},
		{1<<30 + 1, "1073741825"},
	} {
		got := FormatSize(tt.in)
		if got != tt.want {
			t.Errorf("FormatSize(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := ParseSize(got); err != nil || back != tt.in {
			t.Errorf("ParseSize(FormatSize(%d)) = %d, %v", tt.in, back, err)
		}
	}
}

func TestParseMix(t *testing.T) {
	tests := []struct {
		in      string
		seq     []Op
		weights []weightedOp
		setup   bool
		wantErr string
	}{
		{in: "put", seq: []Op{OpPut}},
		{in: "get", seq: []Op{OpGet}, setup: true},
		{in: "HEAD", seq: []Op{OpHead}, setup: true},
		{in: "put,get,delete", seq: []Op{OpPut, OpGet, OpDelete}},
		{in: "put, head, get, delete", seq: []Op{OpPut, OpHead, OpGet, OpDelete}},
		{in: "get,head", seq: []Op{OpGet, OpHead}, setup: true},
		{in: "put,get", seq: []Op{OpPut, OpGet}},
		{in: "mixed:70get/20put/10delete", weights: []weightedOp{{OpGet, 70}, {OpPut, 20}, {OpDelete, 10}}},
		{in: "mixed:1head/0put", weights: []weightedOp{{OpHead, 1}}},
		{in: "", wantErr: "empty"},
		{in: "post", wantErr: "unknown op"},
		{in: "delete", wantErr: "delete needs a put"},
		{in: "get,delete", wantErr: "delete needs a put"},
		{in: "put,delete,get", wantErr: "get after a delete"},
		{in: "get,put", wantErr: "get after a delete"},
		{in: "put,,get", wantErr: "unknown op"},
		{in: "mixed:", wantErr: "weight"},
		{in: "mixed:get", wantErr: "weight"},
		{in: "mixed:50get/50get", wantErr: "twice"},
		{in: "mixed:0get", wantErr: "all weights are zero"},
		{in: "mixed:10fetch", wantErr: "unknown op"},
	}
	for _, tt := range tests {
		m, err := ParseMix(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseMix(%q): error %v, want %q", tt.in, err, tt.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseMix(%q): %v", tt.in, err)
			continue
		}
		if fmt.Sprint(m.seq) != fmt.Sprint(tt.seq) || fmt.Sprint(m.weights) != fmt.Sprint(tt.weights) {
			t.Errorf("ParseMix(%q) = seq %v weights %v; want %v %v", tt.in, m.seq, m.weights, tt.seq, tt.weights)
		}
		if m.needsSetup() != tt.setup {
			t.Errorf("ParseMix(%q).needsSetup() = %v, want %v", tt.in, m.needsSetup(), tt.setup)
		}
		if m.String() != strings.TrimSpace(tt.in) {
			t.Errorf("ParseMix(%q).String() = %q", tt.in, m.String())
		}
	}
	m := mustMix(t, "mixed:70get/20put/10delete")
	counts := map[Op]int{}
	for x := range m.total {
		counts[m.pick(x)]++
	}
	if counts[OpGet] != 70 || counts[OpPut] != 20 || counts[OpDelete] != 10 {
		t.Errorf("pick over [0,100): %v", counts)
	}
}

func TestValidate(t *testing.T) {
	ok := Config{URL: "http://127.0.0.1:3000"}
	if err := ok.Validate(); err != nil {
		t.Errorf("defaults: %v", err)
	}
	tests := []struct {
		name string
		mod  func(*Config)
	}{
		{"no url", func(c *Config) { c.URL = "" }},
		{"bad scheme", func(c *Config) { c.URL = "ftp://h/" }},
		{"no host", func(c *Config) { c.URL = "http:///x" }},
		{"query", func(c *Config) { c.URL = "http://h/?a=1" }},
		{"under 1KiB", func(c *Config) { c.Size = SizeRange{512, 4096} }},
		{"over 1GiB", func(c *Config) { c.Size = SizeRange{1 << 20, 1<<30 + 1} }},
		{"min over max", func(c *Config) { c.Size = SizeRange{8192, 4096} }},
		{"negative count", func(c *Config) { c.Count = -1 }},
		{"negative duration", func(c *Config) { c.Duration = -time.Second }},
		{"negative concurrency", func(c *Config) { c.Concurrency = -2 }},
		{"negative timeout", func(c *Config) { c.Timeout = -time.Second }},
		{"negative retries", func(c *Config) { c.Retries = -1 }},
		{"reserved prefix", func(c *Config) { c.Prefix = "_kvdb/x/" }},
		{"long prefix", func(c *Config) { c.Prefix = strings.Repeat("p", 901) }},
	}
	for _, tt := range tests {
		c := ok
		tt.mod(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: Validate passed", tt.name)
		}
	}
	c := Config{URL: "http://h:1"}.withDefaults()
	if c.Size != (SizeRange{1 << 20, 1 << 20}) || c.Concurrency != 1 || c.Duration != 10*time.Second ||
		c.Ops.String() != "put,get,delete" || c.Timeout != time.Minute || !strings.HasPrefix(c.Prefix, "bench/") || len(c.Prefix) != 13 {
		t.Errorf("defaults: %+v", c)
	}
}

func readAllChunks(t *testing.T, r io.Reader, chunk int) []byte {
	t.Helper()
	var out []byte
	buf := make([]byte, chunk)
	for {
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err == io.EOF {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestValueStream(t *testing.T) {
	r := SizeRange{100_000, 100_000}
	ctx := context.Background()
	gen := func(seed uint64, key string, chunk int) []byte {
		vr := &valueReader{}
		vr.reset(ctx, newValue(seed, key, r), make([]byte, 4096))
		return readAllChunks(t, vr, chunk)
	}
	a := gen(1, "k", 65536)
	if len(a) != 100_000 {
		t.Fatalf("length %d", len(a))
	}
	if !bytes.Equal(a, gen(1, "k", 65536)) {
		t.Error("same seed and key gave different bytes")
	}
	for _, chunk := range []int{1, 3, 7, 8, 13, 4095, 99_999} {
		if !bytes.Equal(a, gen(1, "k", chunk)) {
			t.Errorf("reading by %d bytes gave another stream", chunk)
		}
	}
	var wt bytes.Buffer
	vr := &valueReader{}
	vr.reset(ctx, newValue(1, "k", r), make([]byte, 777))
	if n, err := vr.WriteTo(&wt); err != nil || n != 100_000 || !bytes.Equal(wt.Bytes(), a) {
		t.Errorf("WriteTo: %d, %v, same bytes %v", n, err, bytes.Equal(wt.Bytes(), a))
	}
	for _, other := range [][]byte{gen(1, "l", 65536), gen(2, "k", 65536)} {
		same := 0
		for i := range a {
			if a[i] == other[i] {
				same++
			}
		}
		if same > len(a)/100 {
			t.Errorf("another key or seed shares %d of %d bytes", same, len(a))
		}
	}
	// The checker accepts the stream in any chunking and finds a flip.
	c := checker{v: newValue(1, "k", r), exp: make([]byte, 1000)}
	for i := 0; i < len(a); i += 333 {
		if err := c.check(a[i:min(i+333, len(a))]); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.done(); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Clone(a)
	bad[54321] ^= 0x80
	c = checker{v: newValue(1, "k", r), exp: make([]byte, 1000)}
	if err := c.check(bad); err == nil || err.Error() != "verify: byte 54321 differs" {
		t.Errorf("flipped byte: %v", err)
	}
	// Sizes in a range stay in it and vary by key.
	rg := SizeRange{1 << 10, 1 << 20}
	sizes := map[int64]bool{}
	for i := range 100 {
		v := newValue(3, fmt.Sprint("k", i), rg)
		if v.size < rg.Min || v.size > rg.Max {
			t.Fatalf("size %d outside %v", v.size, rg)
		}
		sizes[v.size] = true
	}
	if len(sizes) < 90 {
		t.Errorf("only %d distinct sizes of 100", len(sizes))
	}
}

func TestHistogram(t *testing.T) {
	var h histogram
	var all []time.Duration
	x := uint64(1)
	for range 100_000 {
		x = mix64(x)
		// Log-uniform from 1 µs to about 10 s.
		d := time.Duration(float64(time.Microsecond) * math.Pow(10, float64(x%7000)/1000))
		all = append(all, d)
		h.add(d)
	}
	slices.Sort(all)
	for _, q := range []float64{0.5, 0.9, 0.99, 0.999} {
		exact := all[int(q*float64(len(all)))-1]
		got := h.quantile(q)
		if diff := float64(got-exact) / float64(exact); diff > 0.01 || diff < -0.01 {
			t.Errorf("p%v: %v, exact %v", q*100, got, exact)
		}
	}
	if time.Duration(h.max) != all[len(all)-1] {
		t.Errorf("max %v, want %v", time.Duration(h.max), all[len(all)-1])
	}
	for _, v := range []int64{0, 1, 255, 256, 257, 1000, 1 << 20, 1<<42 - 1, 1 << 42, 1 << 62} {
		b := bucketOf(v)
		if b < 0 || b >= nBuckets {
			t.Fatalf("bucketOf(%d) = %d", v, b)
		}
		if v < 1<<42 {
			if mid := bucketValue(b); float64(mid-v) > float64(v)/256+1 || float64(v-mid) > float64(v)/256+1 {
				t.Errorf("bucketValue(bucketOf(%d)) = %d", v, mid)
			}
		}
	}
}

func TestResolveLocation(t *testing.T) {
	tests := []struct{ req, loc, want string }{
		{"http://m:3000/a/b", "http://v:3001/a/b?v=1", "http://v:3001/a/b?v=1"},
		{"http://m:3000/a/b", "//v:3001/x", "http://v:3001/x"},
		{"http://m:3000/a/b", "/_blob/a/b", "http://m:3000/_blob/a/b"},
		{"http://m:3000/a/b", "c%20d", "http://m:3000/a/c%20d"},
		{"http://m:3000", "x", "http://m:3000/x"},
		{"http://m:3000/a/b?q=/z", "c", "http://m:3000/a/c"},
	}
	for _, tt := range tests {
		if got := resolveLocation(tt.req, tt.loc); got != tt.want {
			t.Errorf("resolveLocation(%q, %q) = %q, want %q", tt.req, tt.loc, got, tt.want)
		}
	}
}

func TestAppendEscaped(t *testing.T) {
	tests := []struct{ in, want string }{
		{"bench/ab12/0-1", "bench/ab12/0-1"},
		{"a b?c#d%e", "a%20b%3Fc%23d%25e"},
		{"é~_.", "%C3%A9~_."},
	}
	for _, tt := range tests {
		if got := string(appendEscaped(nil, tt.in)); got != tt.want {
			t.Errorf("appendEscaped(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestWriteTable(t *testing.T) {
	res := Result{
		Config: Summary{URL: "http://h:1", Size: "1MiB", Concurrency: 4, Ops: "put", Count: 10},
		Ops: []OpStats{{Op: "put", Count: 10, OpsPerSec: 5, MBPerSec: 5.2, P50: 1500 * time.Microsecond,
			P90: 12 * time.Millisecond, P99: 2 * time.Second, Max: 3 * time.Second, Errors: 1, FirstErr: "PUT k: status 503: no"}},
		Baseline: []OpStats{{Op: RowWriteFsync, Count: 10, MBPerSec: 52}},
	}
	var b bytes.Buffer
	if err := res.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ops/s", "p99", "first error", "1.50ms", "12.0ms", "2.00s", "PUT k: status 503: no", "write+fsync", "put at 10% of write+fsync"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
	if strings.Contains(b.String(), "retr") {
		t.Errorf("retries shown in a run without them:\n%s", b.String())
	}

	// With retries: a retried column; the first error column shows a
	// final error first, else the first retried one.
	res = Result{
		Config: Summary{Size: "1MiB", Concurrency: 4, Ops: "put,get", Retries: 3},
		Ops: []OpStats{
			{Op: "put", Count: 10},
			{Op: "get", Count: 10, Retried: 7, FirstRetryErr: "GET k: status 503: later"},
			{Op: "head", Count: 10, Errors: 1, FirstErr: "HEAD k after 3 retries: status 502", Retried: 2, FirstRetryErr: "HEAD k: status 500"},
		},
	}
	b.Reset()
	if err := res.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(b.String(), "\n")
	if len(lines) < 5 || !strings.Contains(lines[0], "retries 3") || !strings.Contains(lines[1], "errors retried  first error") {
		t.Fatalf("table:\n%s", b.String())
	}
	for i, want := range []string{
		`^put .* 0 +0$`,
		`^get .* 0 +7  retry: GET k: status 503: later$`,
		`^head .* 1 +2  HEAD k after 3 retries: status 502$`,
	} {
		if !regexp.MustCompile(want).MatchString(lines[2+i]) {
			t.Errorf("line %q, want %s", lines[2+i], want)
		}
	}
	js, err := json.Marshal(res.Ops[1])
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(js), `"retried":7`) || !strings.Contains(string(js), `"first_retry_error":"GET k: status 503: later"`) {
		t.Errorf("JSON %s", js)
	}
}

// TestIdleTimeout: Timeout bounds the wait for the next byte, not the
// whole body: a slow body that keeps moving succeeds, a stalled one fails.
func TestIdleTimeout(t *testing.T) {
	const size = 4 << 10
	cfg := Config{Size: SizeRange{size, size}, Count: 2, Ops: mustMix(t, "put,get"), Verify: true,
		Timeout: 300 * time.Millisecond, Keep: true}
	var stall atomic.Bool
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.Method != http.MethodGet {
			w.WriteHeader(http.StatusCreated)
			return
		}
		vr := &valueReader{}
		vr.reset(context.Background(), newValue(cfg.Seed, strings.TrimPrefix(r.URL.Path, "/"), cfg.Size), make([]byte, 512))
		w.Header().Set("Content-Length", fmt.Sprint(size))
		for range 8 { // 8 × 100 ms: longer than Timeout in all
			io.CopyN(w, vr, 512)
			w.(http.Flusher).Flush()
			if stall.Load() {
				time.Sleep(time.Second)
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}))
	defer srv.Close()
	cfg.URL = srv.URL
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if g := row(t, res, "get"); g.Errors != 0 || g.Count != 1 || g.Max < 700*time.Millisecond {
		t.Errorf("slow get: %d of %d failed (%s), took %v", g.Errors, g.Count, g.FirstErr, g.Max)
	}
	stall.Store(true)
	res, err = Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if g := row(t, res, "get"); g.Errors != 1 || !strings.Contains(g.FirstErr, "timeout") {
		t.Errorf("stalled get: %d errors, first %q; want a timeout", g.Errors, g.FirstErr)
	}
}

// flakyServer is a memServer that misbehaves on chosen requests: fail
// decides, per method and key, for the how-many-th such request (1 for the
// first), what goes wrong, if anything. It counts the requests the client
// made, redirect followed or not, under the method on the key's path.
type flakyServer struct {
	mu    sync.Mutex
	vals  map[string][]byte
	seen  map[string]int // method + " " + key → requests on the key's path
	fail  func(method string, nth int) fault
	blobs map[string]fault // blob key → fault decided at redirect time
	gone  map[string]bool  // keys deleted
}

// fault is what a flakyServer does wrong with one request.
type fault string

const (
	faultNone    fault = ""
	fault503     fault = "503"     // answer 503 at once
	fault500     fault = "500"     // answer 500 at once
	faultLost    fault = "lost"    // a write: apply it, then answer 503 (leadership lost)
	faultCut     fault = "cut"     // redirect; the volume sends half the body and closes
	fault404     fault = "404"     // redirect; the volume answers 404
	faultRefused fault = "refused" // redirect to a port where nothing listens
	faultFlip    fault = "flip"    // redirect; one byte of the body is wrong
)

func newFlakyServer(fail func(method string, nth int) fault) (*flakyServer, *httptest.Server) {
	s := &flakyServer{vals: map[string][]byte{}, seen: map[string]int{}, blobs: map[string]fault{}, gone: map[string]bool{}, fail: fail}
	return s, httptest.NewServer(s)
}

func (s *flakyServer) requests(method string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for k, c := range s.seen {
		if strings.HasPrefix(k, method+" ") {
			n += c
		}
	}
	return n
}

func (s *flakyServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/")
	if blob, ok := strings.CutPrefix(key, "_blob/"); ok {
		s.serveBlob(w, r, blob)
		return
	}
	s.mu.Lock()
	s.seen[r.Method+" "+key]++
	f := s.fail(r.Method, s.seen[r.Method+" "+key])
	s.mu.Unlock()
	switch f {
	case fault503:
		io.Copy(io.Discard, r.Body)
		http.Error(w, "try later", http.StatusServiceUnavailable)
		return
	case fault500:
		io.Copy(io.Discard, r.Body)
		http.Error(w, "broken", http.StatusInternalServerError)
		return
	}
	switch r.Method {
	case http.MethodPut:
		b, err := io.ReadAll(r.Body) // small test values only
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		s.mu.Lock()
		s.vals[key] = b
		s.mu.Unlock()
		if f == faultLost {
			http.Error(w, "leadership lost", http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusCreated)
	case http.MethodGet, http.MethodHead:
		s.mu.Lock()
		b, ok := s.vals[key]
		s.blobs[key] = f
		s.mu.Unlock()
		switch {
		case !ok:
			http.NotFound(w, r)
		case r.Method == http.MethodHead:
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		case f == faultRefused:
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				http.Error(w, err.Error(), 500)
				return
			}
			addr := ln.Addr().String()
			ln.Close()
			http.Redirect(w, r, "http://"+addr+"/_blob/"+key, http.StatusFound)
		default:
			http.Redirect(w, r, "/_blob/"+key, http.StatusFound)
		}
	case http.MethodDelete:
		s.mu.Lock()
		_, ok := s.vals[key]
		delete(s.vals, key)
		wasGone := s.gone[key]
		s.gone[key] = true
		s.mu.Unlock()
		switch {
		case f == faultLost:
			http.Error(w, "leadership lost", http.StatusServiceUnavailable)
		case !ok && wasGone:
			// Deleted before (a key never written is "deleted" with 200,
			// as the tests of the other faults expect).
			http.NotFound(w, r)
		default:
			w.WriteHeader(http.StatusOK)
		}
	default:
		w.WriteHeader(http.StatusMethodNotAllowed)
	}
}

func (s *flakyServer) serveBlob(w http.ResponseWriter, r *http.Request, key string) {
	s.mu.Lock()
	b, ok := s.vals[key]
	f := s.blobs[key]
	s.mu.Unlock()
	if !ok || f == fault404 {
		http.NotFound(w, r)
		return
	}
	w.Header().Set("Content-Length", fmt.Sprint(len(b)))
	switch f {
	case faultCut:
		w.Write(b[:len(b)/2])
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // the connection is closed mid-body
	case faultFlip:
		b = bytes.Clone(b)
		b[len(b)/3] ^= 1
	}
	w.Write(b)
}

// firstOnly fails the first request of method on each key with f.
func firstOnly(method string, f fault) func(string, int) fault {
	return func(m string, nth int) fault {
		if m == method && nth == 1 {
			return f
		}
		return faultNone
	}
}

// TestRetries: with Retries, a GET or HEAD that fails once in a way worth
// retrying succeeds on the next attempt and is counted as retried; with
// none, it is an error as before; a retry starts at the server again.
func TestRetries(t *testing.T) {
	tests := []struct {
		name    string
		op      string // get or head: the op that fails first time
		fault   fault
		wantErr string // in FirstErr without retries, FirstRetryErr with
	}{
		{"503", "get", fault503, "status 503: try later"},
		{"body cut", "get", faultCut, "after "},
		{"404 on a written key", "get", fault404, "status 404"},
		{"connection refused", "get", faultRefused, "redirected to http://127.0.0.1:"},
		{"head 503", "head", fault503, "status 503"},
	}
	for _, tt := range tests {
		for _, retries := range []int{0, 2} {
			t.Run(fmt.Sprintf("%s/retries=%d", tt.name, retries), func(t *testing.T) {
				method := strings.ToUpper(tt.op)
				s, srv := newFlakyServer(firstOnly(method, tt.fault))
				defer srv.Close()
				res, err := Run(context.Background(), Config{
					URL: srv.URL, Size: SizeRange{4 << 10, 64 << 10}, Count: 30, Concurrency: 3,
					Ops: mustMix(t, "put,"+tt.op+",delete"), Prefix: "r/", Verify: true, Retries: retries,
				})
				if err != nil {
					t.Fatal(err)
				}
				var table bytes.Buffer
				if err := res.WriteTable(&table); err != nil {
					t.Fatal(err)
				}
				t.Logf("\n%s", table.String())
				const keys = 10
				g := row(t, res, tt.op)
				if g.Count != keys {
					t.Errorf("%s: count %d, want %d", tt.op, g.Count, keys)
				}
				if retries == 0 {
					if g.Errors != keys || g.Retried != 0 || g.FirstRetryErr != "" {
						t.Errorf("%s: %d errors, %d retried (%q); want %d, 0", tt.op, g.Errors, g.Retried, g.FirstRetryErr, keys)
					}
					if !strings.Contains(g.FirstErr, tt.wantErr) || !strings.HasPrefix(g.FirstErr, method+" r/") {
						t.Errorf("first error %q, want %q", g.FirstErr, tt.wantErr)
					}
					if n := s.requests(method); n != keys {
						t.Errorf("server saw %d %ss, want %d", n, method, keys)
					}
					return
				}
				if g.Errors != 0 || g.Retried != keys {
					t.Errorf("%s: %d errors (%s), %d retried; want 0, %d", tt.op, g.Errors, g.FirstErr, g.Retried, keys)
				}
				if !strings.Contains(g.FirstRetryErr, tt.wantErr) || !strings.HasPrefix(g.FirstRetryErr, method+" r/") {
					t.Errorf("first retry error %q, want %q", g.FirstRetryErr, tt.wantErr)
				}
				// Each retry went back to the server for a new redirect.
				if n := s.requests(method); n != 2*keys {
					t.Errorf("server saw %d %ss, want %d", n, method, 2*keys)
				}
				if tt.op == "get" && g.Bytes < keys*(4<<10) {
					t.Errorf("get moved %d bytes", g.Bytes)
				}
				// The retried op's latency includes the 100 ms wait.
				if g.P50 < retryFirst {
					t.Errorf("p50 %v, below the first retry wait", g.P50)
				}
				if !strings.Contains(table.String(), "retried") || !strings.Contains(table.String(), "retry: "+method) {
					t.Errorf("table lacks the retried column or the retry error:\n%s", table.String())
				}
				for _, r := range res.Ops {
					if r.Op != tt.op && (r.Errors != 0 || r.Retried != 0) {
						t.Errorf("%s: %d errors (%s), %d retried", r.Op, r.Errors, r.FirstErr, r.Retried)
					}
				}
			})
		}
	}
}

// TestRetriesNotHiding: what a retry must not turn into a success.
func TestRetriesNotHiding(t *testing.T) {
	always := func(method string, f fault) func(string, int) fault {
		return func(m string, _ int) fault {
			if m == method {
				return f
			}
			return faultNone
		}
	}
	tests := []struct {
		name string
		fail func(string, int) fault
		// want: per row, errors; and per method, requests the server saw.
		errors   map[string]int64
		requests map[string]int
		firstErr map[string]string
	}{
		{
			name:     "a failing GET gives up after the budget",
			fail:     always(http.MethodGet, fault503),
			errors:   map[string]int64{"put": 0, "get": 10, "delete": 0},
			requests: map[string]int{"PUT": 10, "GET": 30, "DELETE": 10},
			firstErr: map[string]string{"get": "after 2 retries: status 503"},
		},
		{
			name:     "a PUT answered 500 is not retried",
			fail:     firstOnly(http.MethodPut, fault500),
			errors:   map[string]int64{"put": 10, "get": 10, "delete": 0},
			requests: map[string]int{"PUT": 10, "GET": 10, "DELETE": 10},
			// The key was never written: its 404 is final.
			firstErr: map[string]string{"put": "PUT r/", "get": "status 404"},
		},
		{
			name:     "a DELETE answered 500 is not retried",
			fail:     always(http.MethodDelete, fault500),
			errors:   map[string]int64{"put": 0, "get": 0, "delete": 10, rowCleanup: 10},
			requests: map[string]int{"PUT": 10, "GET": 10, "DELETE": 20},
			firstErr: map[string]string{"delete": "DELETE r/"},
		},
		{
			name:     "a PUT answered 503 gives up after the budget",
			fail:     always(http.MethodPut, fault503),
			errors:   map[string]int64{"put": 10, "get": 10, "delete": 0},
			requests: map[string]int{"PUT": 30, "GET": 10, "DELETE": 10},
			firstErr: map[string]string{"put": "after 2 retries: status 503"},
		},
		{
			name:     "a verify mismatch is not retried",
			fail:     firstOnly(http.MethodGet, faultFlip),
			errors:   map[string]int64{"put": 0, "get": 10, "delete": 0},
			requests: map[string]int{"PUT": 10, "GET": 10, "DELETE": 10},
			firstErr: map[string]string{"get": "differs"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, srv := newFlakyServer(tt.fail)
			defer srv.Close()
			res, err := Run(context.Background(), Config{
				URL: srv.URL, Size: SizeRange{4 << 10, 16 << 10}, Count: 30, Concurrency: 3,
				Ops: mustMix(t, "put,get,delete"), Prefix: "r/", Verify: true, Retries: 2,
			})
			if err != nil {
				t.Fatal(err)
			}
			for name, want := range tt.errors {
				r := row(t, res, name)
				if r.Errors != want || r.Retried != 0 {
					t.Errorf("%s: %d errors, %d retried; want %d, 0 (first %q)", name, r.Errors, r.Retried, want, r.FirstErr)
				}
				if w := tt.firstErr[name]; !strings.Contains(r.FirstErr, w) {
					t.Errorf("%s: first error %q, want %q", name, r.FirstErr, w)
				}
			}
			for method, want := range tt.requests {
				if got := s.requests(method); got != want {
					t.Errorf("server saw %d %ss, want %d", got, method, want)
				}
			}
		})
	}
}

func TestRetryWait(t *testing.T) {
	want := []time.Duration{100 * time.Millisecond, 300 * time.Millisecond, 900 * time.Millisecond, 2 * time.Second, 2 * time.Second}
	for i, w := range want {
		if got := retryWait(i); got != w {
			t.Errorf("retryWait(%d) = %v, want %v", i, got, w)
		}
	}
	if got := retryWait(1000); got != retryMax {
		t.Errorf("retryWait(1000) = %v", got)
	}
}

// TestRetriesVolumeKilled kills a volume in the middle of a verified mixed 8 s
// run against a real cluster (replicas 2): transfers from it are cut and
// redirects to it refused until the master notices, and retries, each
// with a new redirect, ride that out. No GET may fail or return a wrong
// byte. (PUTs in flight at the kill may fail; they are not retried.)
func TestRetriesVolumeKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("kills a volume in a 4 s run")
	}
	url, vols := startClusterVolumes(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	var res Result
	var err error
	go func() {
		defer close(done)
		res, err = Run(ctx, Config{
			URL: url, Size: SizeRange{4 << 10, 1 << 20}, Duration: 8 * time.Second, Concurrency: 4,
			Ops: mustMix(t, "mixed:70get/20put/10delete"), Prefix: "kill/", Verify: true, Retries: 3,
		})
	}()
	select {
	case <-time.After(2500 * time.Millisecond):
	case <-done:
		t.Fatal("run ended before the kill")
	}
	vols[1].Kill()
	<-done
	if err != nil {
		t.Fatal(err)
	}
	var table bytes.Buffer
	if err := res.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", table.String())
	g := row(t, res, "get")
	if g.Errors != 0 {
		t.Errorf("get: %d of %d failed after retries; first: %s", g.Errors, g.Count, g.FirstErr)
	}
	if g.Count < 20 {
		t.Errorf("get: only %d in 8 s", g.Count)
	}
	// The kill was felt: some GET met the dead volume and was retried.
	if g.Retried == 0 {
		t.Errorf("get: no retry, so the kill went unnoticed")
	}
}

// TestRetriesWrites: with Retries, a PUT or DELETE that failed as a master
// failing over makes it fail (503, before or after the write was applied)
// is sent again and counted as retried; without, it is an error.
func TestRetriesWrites(t *testing.T) {
	for _, tt := range []struct {
		name, method, op string
		fault            fault
	}{
		{"put 503", http.MethodPut, "put", fault503},
		{"put applied then 503", http.MethodPut, "put", faultLost},
		{"delete 503", http.MethodDelete, "delete", fault503},
		// The retry finds the key gone: the worker's own key, so the
		// first attempt deleted it.
		{"delete applied then 503", http.MethodDelete, "delete", faultLost},
	} {
		for _, retries := range []int{0, 2} {
			t.Run(fmt.Sprintf("%s/retries=%d", tt.name, retries), func(t *testing.T) {
				s, srv := newFlakyServer(firstOnly(tt.method, tt.fault))
				defer srv.Close()
				res, err := Run(context.Background(), Config{
					URL: srv.URL, Size: SizeRange{4 << 10, 16 << 10}, Count: 30, Concurrency: 3,
					Ops: mustMix(t, "put,get,delete"), Prefix: "w/", Verify: true, Retries: retries,
				})
				if err != nil {
					t.Fatal(err)
				}
				r := row(t, res, tt.op)
				if retries == 0 {
					if r.Errors != 10 || r.Retried != 0 || !strings.Contains(r.FirstErr, "status 503") {
						t.Errorf("%s: %d errors (%q), %d retried; want 10, 0", tt.op, r.Errors, r.FirstErr, r.Retried)
					}
					return
				}
				if r.Errors != 0 || r.Retried != 10 || !strings.Contains(r.FirstRetryErr, "status 503") {
					t.Errorf("%s: %d errors (%q), %d retried (%q); want 0, 10", tt.op, r.Errors, r.FirstErr, r.Retried, r.FirstRetryErr)
				}
				if got := s.requests(tt.method); got != 20 {
					t.Errorf("server saw %d %ss, want 20", got, tt.method)
				}
				for _, o := range res.Ops {
					if o.Op != tt.op && (o.Errors != 0 || o.Retried != 0) {
						t.Errorf("%s: %d errors (%s), %d retried", o.Op, o.Errors, o.FirstErr, o.Retried)
					}
				}
			})
		}
	}
}
