package node

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawRequest sends one request with target exactly as given (no client
// cleans or re-encodes it) and returns the status and body.
func rawRequest(t *testing.T, addr, method, target, body string, hdr ...string) (int, string) {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	host := addr
	var extra strings.Builder
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			host = hdr[i+1]
			continue
		}
		fmt.Fprintf(&extra, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\n%sContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		method, target, host, extra.String(), len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), &http.Request{Method: method})
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPathSafety: no key, path, version or header makes a node read or
// write outside its data directory. The data directories sit four levels
// below the test's own directory, so that any traversal of up to four
// levels would land somewhere the walk at the end looks.
func TestPathSafety(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run(fmt.Sprintf("secret=%v", secure), func(t *testing.T) { testPathSafety(t, secure) })
	}
}

func testPathSafety(t *testing.T, secure bool) {
	root := t.TempDir()
	c := newTestClusterWith(t, 2, 2, func(c *testCluster) {
		c.mcfg.Dir = filepath.Join(root, "a", "b", "c", "master")
		if secure {
			c.mcfg.Secret = testSecret
		}
	})
	outside := filepath.Join(root, "outside")
	if err := os.WriteFile(outside, []byte("a file outside every data directory\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	absName := fmt.Sprintf("kvdb-pathsafety-%d", os.Getpid())
	long := strings.Repeat("x", MaxKeyLen)

	// Through the master: a key is either refused (400) or stored under a
	// name of the store's own making; reads give back only what was put.
	for i, tc := range []struct {
		target string
		valid  bool // a legal key: 201, and GET returns the value
	}{
		{"/../../etc/passwd", false},
		{"/a/../../b", false},
		{"/../../../../outside", false},
		{"/%2e%2e%2fx", false},
		{"/%2E%2E/%2E%2E/outside", false},
		{"/..%2f..%2fx", false},
		{"/..%2F..%2F..%2F..%2Foutside", false},
		{"/a/%2e/b", false},
		{"/_kvdb/../x", false},
		{"/%00", false},
		{"/a%00/../x", false},
		{"/%zz", false},
		{"/" + long + "y", false},
		{"/" + strings.Repeat("../", 400), false},
		{"//" + absName, true},
		{"/%2f" + absName + "-2", true},
		{"/..\\..\\..\\..\\outside", true},
		{"/%5c..%5c..%5coutside", true},
		{"/C:%5cWindows%5cwin.ini", true},
		{"/...", true},
		{"/.../...", true},
		{"/..a/b..", true},
		{"/" + long, true},
		{"/~root/.ssh/authorized_keys", true},
	} {
		value := fmt.Sprintf("value %d", i)
		st, body := rawRequest(t, c.master.Addr(), "PUT", tc.target, value)
		switch {
		case tc.valid && st != 201:
			t.Errorf("PUT %.60s: got %d %q, want 201", tc.target, st, body)
			continue
		case !tc.valid && st != 400:
			t.Errorf("PUT %.60s: got %d %q, want 400", tc.target, st, body)
		}
		st, body = rawRequest(t, c.master.Addr(), "GET", tc.target, "")
		switch {
		case tc.valid && st == 302:
			// Follow the redirect the way a client would.
			resp, err := noRedirects.Get(c.url(strings.TrimPrefix(tc.target, "/")))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 302 {
				t.Errorf("GET %.60s through net/http: got %d", tc.target, resp.StatusCode)
				continue
			}
			st, _, body := send(t, "GET", resp.Header.Get("Location"), "")
			if st != 200 || body != value {
				t.Errorf("GET %.60s: got %d %q, want %q", tc.target, st, body, value)
			}
		case tc.valid:
			t.Errorf("GET %.60s: got %d %q, want 302", tc.target, st, body)
		case st != 400 && st != 404:
			t.Errorf("GET %.60s: got %d %q, want 400 or 404", tc.target, st, body)
		}
	}

	// Straight at the volumes' internal API. With a secret, every one is
	// refused for want of a signature, so the same requests are also sent
	// signed by the master, as if the master itself were fooled.
	for _, v := range c.vols {
		addr := v.Addr()
		for _, tc := range []struct {
			method, target string
			hdr            []string
		}{
			{"PUT", "/_kvdb/blob/..%2f..%2f..%2f..%2foutside?v=1", nil},
			{"PUT", "/_kvdb/blob/../../../../outside?v=1", nil},
			{"PUT", "/_kvdb/blob/%2e%2e?v=1", nil},
			{"PUT", "/_kvdb/blob/..?v=1", nil},
			{"PUT", "/_kvdb/blob/x?v=../../../../outside", nil},
			{"PUT", "/_kvdb/blob/x?v=..%2f..%2foutside", nil},
			{"PUT", "/_kvdb/blob/x?v=-1", nil},
			{"PUT", "/_kvdb/blob/x?v=1ffffffffffffffff", nil},
			{"PUT", "/_kvdb/blob/x?v=", nil},
			{"PUT", "/_kvdb/blob/" + absName + "?v=1", []string{"Host", "../../../../outside"}},
			{"PUT", "/_kvdb/blob/%2f" + absName + "-3?v=1", []string{"X-Forwarded-Path", "/../../outside"}},
			{"PUT", "/_kvdb/blob/..%5c..%5coutside?v=1", nil},
			{"DELETE", "/_kvdb/blob/..%2f..%2f..%2f..%2foutside?v=1", nil},
			{"DELETE", "/_kvdb/blob/../../../../outside?v=1", nil},
			{"POST", "/_kvdb/pull/..%2f..%2foutside?v=1&from=127.0.0.1:1", nil},
			{"GET", "/_kvdb/index?start=../../../../outside", nil},
			{"GET", "/_kvdb/../../../../outside", nil},
			{"GET", "/_kvdb/blob/..%2f..%2foutside?v=1", nil},
			{"GET", "/../../../../outside", nil},
			{"GET", "/..%2f..%2f..%2f..%2foutside", nil},
			{"GET", "/%2e%2e/%2e%2e/%2e%2e/%2e%2e/outside", nil},
			{"GET", "//etc/passwd", nil},
			{"GET", "/%2fetc%2fpasswd", nil},
			{"GET", "/outside?v=../../../../outside", nil},
			{"GET", "/x?v=1", []string{"Host", "../../../../outside"}},
		} {
			targets := []string{tc.target}
			if secure {
				targets = append(targets, c.master.sec.signURL(tc.method, "http://"+addr+tc.target)[len("http://"+addr):])
			}
			for n, target := range targets {
				body := ""
				if tc.method == "PUT" {
					body = "planted"
				}
				st, reply := rawRequest(t, addr, tc.method, target, body, tc.hdr...)
				if strings.Contains(reply, "outside every data directory") || strings.Contains(reply, "root:") {
					t.Errorf("%s %s on %s: served a file from outside: %q", tc.method, target, v.Name(), reply)
				}
				if secure && n == 0 && !strings.HasPrefix(tc.target, "/_kvdb/") && st != 400 && st != 403 && st != 404 {
					t.Errorf("%s %s unsigned, with a secret: got %d %q, want 400, 403 or 404", tc.method, target, st, reply)
				}
				if secure && n == 0 && strings.HasPrefix(tc.target, "/_kvdb/blob/") && st != 403 && st != 400 {
					t.Errorf("%s %s unsigned, with a secret: got %d %q, want 403 or 400", tc.method, target, st, reply)
				}
			}
		}
	}

	// Nothing was created outside the data directories.
	dataDirs := []string{c.mcfg.Dir}
	for _, vc := range c.vcfgs {
		dataDirs = append(dataDirs, vc.Dir)
	}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		for _, dir := range dataDirs {
			if path == dir {
				return filepath.SkipDir
			}
		}
		if d.IsDir() {
			switch rel, _ := filepath.Rel(root, path); rel {
			case ".", "a", filepath.Join("a", "b"), filepath.Join("a", "b", "c"):
				return nil
			}
		} else if path == outside {
			return nil
		}
		t.Errorf("%s was created outside the data directories", path)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "a file outside every data directory\n" {
		t.Errorf("%s was changed: %q %v", outside, b, err)
	}
	for _, p := range []string{"/" + absName, "/" + absName + "-2", "/" + absName + "-3"} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s exists (%v): a key was taken as an absolute path", p, err)
			_ = os.Remove(p)
		}
	}
}
