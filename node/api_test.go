package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

func TestSeedUsage(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	// curl -L -X POST -d examplevalue localhost:3000/examplekey
	if st, _, body := c.do("POST", "examplekey", strings.NewReader("examplevalue")); st != 201 {
		t.Fatalf("POST: got %d (%s), want 201", st, body)
	}
	if st, body := c.get("examplekey"); st != 200 || body != "examplevalue" {
		t.Fatalf("GET: got %d %q, want 200 examplevalue", st, body)
	}
	if st, _, body := c.do("DELETE", "examplekey", nil); st != 200 {
		t.Fatalf("DELETE: got %d (%s), want 200", st, body)
	}
	if st, _ := c.get("examplekey"); st != 404 {
		t.Fatalf("GET after DELETE: got %d, want 404", st)
	}
	if st, _, _ := c.do("DELETE", "examplekey", nil); st != 404 {
		t.Fatalf("second DELETE: got %d, want 404", st)
	}
}

func TestWriteSemantics(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	steps := []struct {
		method, key, body string
		hdr               []string
		want              int
	}{
		{"POST", "a", "one", nil, 201},
		{"POST", "a", "two", nil, 409},
		{"PUT", "a", "three", nil, 200},
		{"PUT", "b", "new", nil, 201},
		{"PUT", "b", "again", []string{"If-None-Match", "*"}, 412},
		{"PUT", "c", "created", []string{"If-None-Match", "*"}, 201},
		{"PUT", "empty", "", nil, 201},
	}
	for _, s := range steps {
		st, hdr, body := c.do(s.method, s.key, strings.NewReader(s.body), s.hdr...)
		if st != s.want {
			t.Fatalf("%s %s: got %d (%s), want %d", s.method, s.key, st, body, s.want)
		}
		if st < 300 && hdr.Get("ETag") == "" {
			t.Errorf("%s %s: no ETag", s.method, s.key)
		}
	}
	for key, want := range map[string]string{"a": "three", "b": "new", "c": "created", "empty": ""} {
		if st, got := c.get(key); st != 200 || got != want {
			t.Errorf("GET %s: got %d %q, want 200 %q", key, st, got, want)
		}
	}
}

func TestReadHeaders(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	value := strings.Repeat("0123456789", 1000)
	c.put("dir/file.bin", value)

	// HEAD is answered by the master from its index.
	st, hdr, _ := c.do("HEAD", "dir/file.bin", nil)
	if st != 200 || hdr.Get("Content-Length") != "10000" || hdr.Get("ETag") == "" {
		t.Fatalf("HEAD: got %d len=%q etag=%q, want 200 len=10000 and an ETag", st, hdr.Get("Content-Length"), hdr.Get("ETag"))
	}
	etag := hdr.Get("ETag")
	if st, _, _ := c.do("HEAD", "absent", nil); st != 404 {
		t.Fatalf("HEAD absent: got %d, want 404", st)
	}

	// The redirect itself.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(c.url("dir/file.bin"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 302 || !strings.Contains(resp.Header.Get("Location"), "/dir/file.bin?v=") {
		t.Fatalf("GET: got %d Location %q, want 302 to a volume", resp.StatusCode, resp.Header.Get("Location"))
	}

	tests := []struct {
		name      string
		hdr       []string
		want      int
		body      string
		wantRange string
	}{
		{"full", nil, 200, value, ""},
		{"range", []string{"Range", "bytes=10-19"}, 206, value[10:20], "bytes 10-19/10000"},
		{"open range", []string{"Range", "bytes=9990-"}, 206, value[9990:], "bytes 9990-9999/10000"},
		{"suffix", []string{"Range", "bytes=-5"}, 206, value[9995:], "bytes 9995-9999/10000"},
		{"past end", []string{"Range", "bytes=20000-"}, 416, "", "bytes */10000"},
		{"multi ignored", []string{"Range", "bytes=0-1,5-6"}, 200, value, ""},
		{"if-none-match", []string{"If-None-Match", etag}, 304, "", ""},
		{"if-none-match other", []string{"If-None-Match", `"0000"`}, 200, value, ""},
		{"if-range stale", []string{"Range", "bytes=0-3", "If-Range", `"0000"`}, 200, value, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, hdr, body := c.do("GET", "dir/file.bin", nil, tt.hdr...)
			if st != tt.want {
				t.Fatalf("got status %d, want %d", st, tt.want)
			}
			if tt.want != 416 && body != tt.body {
				t.Errorf("got body of %d bytes, want %d", len(body), len(tt.body))
			}
			if got := hdr.Get("Content-Range"); got != tt.wantRange {
				t.Errorf("got Content-Range %q, want %q", got, tt.wantRange)
			}
			if st == 200 || st == 206 {
				if hdr.Get("ETag") != etag || hdr.Get("Last-Modified") == "" {
					t.Errorf("got ETag %q Last-Modified %q, want %q and a date", hdr.Get("ETag"), hdr.Get("Last-Modified"), etag)
				}
			}
		})
	}
}

func TestList(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	for i := 0; i < 25; i++ {
		c.put(fmt.Sprintf("photos/%02d", i), "x")
	}
	c.put("other", "y")
	var got []string
	start := ""
	pages := 0
	for {
		st, _, body := c.do("GET", "photos/?list&limit=10&start="+start, nil)
		if st != 200 {
			t.Fatalf("list: got %d (%s)", st, body)
		}
		var page struct {
			Keys []string `json:"keys"`
			Next string   `json:"next"`
		}
		if err := json.Unmarshal([]byte(body), &page); err != nil {
			t.Fatal(err)
		}
		got = append(got, page.Keys...)
		pages++
		if page.Next == "" {
			break
		}
		start = page.Next
	}
	if len(got) != 25 || pages != 3 || got[0] != "photos/00" || got[24] != "photos/24" {
		t.Fatalf("got %d keys in %d pages (%v), want photos/00..24 in 3 pages", len(got), pages, got)
	}
	st, _, body := c.do("GET", "?list", nil)
	if st != 200 || !strings.Contains(body, `"other"`) {
		t.Fatalf("list all: got %d %s", st, body)
	}
	if st, _, _ := c.do("GET", "x?list&limit=0", nil); st != 400 {
		t.Fatalf("limit=0: got %d, want 400", st)
	}
}

func TestBadInput(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	c.mcfg.MaxValueSize = 0
	long := strings.Repeat("k", 1025)
	tests := []struct {
		name, method, rawPath string
		body                  string
		want                  int
	}{
		{"empty key", "PUT", "/", "v", 400},
		{"empty key GET", "GET", "/", "", 400},
		{"long key", "PUT", "/" + long, "v", 400},
		{"max key", "PUT", "/" + long[:1024], "v", 201},
		{"bad escape", "PUT", "/a%zz", "v", 400},
		{"truncated escape", "PUT", "/a%4", "v", 400},
		{"NUL", "PUT", "/a%00b", "v", 400},
		{"bad UTF-8", "PUT", "/a%ff", "v", 400},
		{"reserved", "PUT", "/_kvdb/x", "v", 400},
		{"reserved escaped", "PUT", "/%5Fkvdb/x", "v", 400},
		{"dot segment", "PUT", "/a/%2E%2E/b", "v", 400},
		{"method", "PATCH", "/a", "v", 405},
		{"absent", "GET", "/nope", "", 404},
		{"slashes ok", "PUT", "/a//b/c", "v", 201},
		{"unicode ok", "PUT", "/%E2%9C%93", "v", 201},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, "http://"+c.master.Addr()+"/", strings.NewReader(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			req.URL.Opaque = tt.rawPath
			resp, err := c.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("got %d (%s), want %d", resp.StatusCode, b, tt.want)
			}
			if tt.want >= 400 && tt.method != "HEAD" && len(bytes.TrimSpace(b)) == 0 {
				t.Errorf("got no reason in the body")
			}
		})
	}
}

func TestTooLarge(t *testing.T) {
	dir := t.TempDir()
	_ = dir
	c := newTestCluster(t, 3, 2)
	c.master.cfg.MaxValueSize = 1000
	st, _, body := c.do("PUT", "big", bytes.NewReader(make([]byte, 1001)))
	if st != 413 {
		t.Fatalf("declared 1001 bytes: got %d (%s), want 413", st, body)
	}
	// Chunked: the size is only known while streaming.
	st, _, body = c.do("PUT", "big", io.MultiReader(bytes.NewReader(make([]byte, 600)), bytes.NewReader(make([]byte, 600))))
	if st != 413 {
		t.Fatalf("chunked 1200 bytes: got %d (%s), want 413", st, body)
	}
	if st, _ := c.get("big"); st != 404 {
		t.Fatalf("GET after refused writes: got %d, want 404", st)
	}
	st, _, body = c.do("PUT", "fits", io.MultiReader(strings.NewReader("abc"), strings.NewReader("def")))
	if st != 201 {
		t.Fatalf("chunked small: got %d (%s), want 201", st, body)
	}
	if st, got := c.get("fits"); st != 200 || got != "abcdef" {
		t.Fatalf("GET fits: got %d %q", st, got)
	}
}

func TestNotEnoughVolumes(t *testing.T) {
	c := newTestCluster(t, 1, 2)
	st, _, body := c.do("PUT", "k", strings.NewReader("v"))
	if st != 503 {
		t.Fatalf("1 volume, 2 replicas: got %d (%s), want 503", st, body)
	}
}

func TestConcurrentWritesOneKey(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const n = 16
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i], _, _ = c.do("POST", "race", strings.NewReader(fmt.Sprintf("value-%d", i)))
		}()
	}
	wg.Wait()
	created := 0
	for _, st := range statuses {
		switch st {
		case 201:
			created++
		case 409:
		default:
			t.Errorf("POST: got %d, want 201 or 409", st)
		}
	}
	if created != 1 {
		t.Fatalf("got %d POSTs created, want exactly 1 (%v)", created, statuses)
	}

	values := map[string]bool{}
	for i := 0; i < n; i++ {
		wg.Add(1)
		v := fmt.Sprintf("put-%d-%s", i, strings.Repeat("x", i*1000))
		values[v] = true
		go func() {
			defer wg.Done()
			// 409: overtaken by a write that started later and committed
			// first (refused, changed nothing).
			if st, _, body := c.do("PUT", "race", strings.NewReader(v)); st != 200 && st != 409 {
				t.Errorf("PUT: got %d (%s), want 200 or 409", st, body)
			}
		}()
	}
	wg.Wait()
	st, got := c.get("race")
	if st != 200 || !values[got] {
		t.Fatalf("after concurrent PUTs: got %d and a value of %d bytes that is none of those written", st, len(got))
	}
	// Every replica holds the committed version, whole.
	var rec Record
	if found, err := c.master.cat.get([]byte("race"), &rec); err != nil || !found || len(rec.Replicas) != 2 {
		t.Fatalf("index: found=%v err=%v replicas=%v", found, err, rec.Replicas)
	}
	for _, name := range rec.Replicas {
		vol := c.master.view.Load().vols[name]
		resp, err := http.Get(blobURL(vol.HTTP, []byte("race"), rec.Version))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != got || resp.Header.Get("ETag") != rec.ETag() {
			t.Errorf("replica %s: got %d bytes etag %s, want the committed value etag %s", name, len(b), resp.Header.Get("ETag"), rec.ETag())
		}
	}
}

func TestPprofOnlyWhenEnabled(t *testing.T) {
	c := newTestCluster(t, 0, 1)
	if st, _, _ := c.do("GET", "_kvdb/debug/pprof/", nil); st != 400 {
		t.Fatalf("pprof off: got %d, want 400 (reserved prefix)", st)
	}
	c.master.Kill()
	c.mcfg.Pprof = true
	c.startMaster()
	st, _, body := c.do("GET", "_kvdb/debug/pprof/", nil)
	if st != 200 || !strings.Contains(body, "goroutine") {
		t.Fatalf("pprof on: got %d, want 200 and the profile index", st)
	}
	if st, _, body := c.do("GET", "_kvdb/debug/pprof/heap?debug=1", nil); st != 200 || !strings.Contains(body, "heap profile") {
		t.Fatalf("heap profile: got %d %.80q", st, body)
	}
}
