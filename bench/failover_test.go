package bench

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

func TestLeaderOf(t *testing.T) {
	for _, tt := range []struct {
		target, suffix, loc string
		leader              string // "": not a leader redirect
	}{
		{"http://f:1/k", "/k", "http://l:2/k", "http://l:2"},
		{"http://f:1/k?list&limit=2", "/k?list&limit=2", "http://l:2/k?list&limit=2", "http://l:2"},
		{"http://f:1/p/k", "/k", "http://l:2/p/k", "http://l:2/p"},
		// To a volume: another path or query.
		{"http://m:1/k", "/k", "http://v:2/k?v=7", ""},
		{"http://m:1/k", "/k", "http://v:2/_blob/k", ""},
		{"http://m:1/k", "/k", "http://v:2/_kvdb/write/k?t=x", ""},
		{"http://m:1/k", "/k", "http://m:1/k", ""},
	} {
		got, ok := leaderOf(tt.target, tt.suffix, tt.loc)
		if got != tt.leader || ok != (tt.leader != "") {
			t.Errorf("leaderOf(%q, %q, %q) = %q, %v; want %q", tt.target, tt.suffix, tt.loc, got, ok, tt.leader)
		}
	}
}

func TestConfigURLs(t *testing.T) {
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"http://a:1", true},
		{"http://a:1,http://b:2", true},
		{"http://a:1, http://b:2/", true},
		{"http://a:1,", false},
		{"http://a:1,ftp://b", false},
		{",http://a:1", false},
	} {
		if err := (Config{URL: tt.url}).Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate(%q): got %v, want ok %v", tt.url, err, tt.ok)
		}
	}
}

// closedURL is the URL of a port where nothing listens.
func closedURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return "http://" + ln.Addr().String()
}

// TestSeveralMasters runs bench against a real master behind what a
// cluster of several masters shows a client: one that is down, a
// follower's redirect to the leader, a master without a leader (503).
func TestSeveralMasters(t *testing.T) {
	master := startCluster(t)
	var followerHits, noLeaderHits atomic.Int64
	follower := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		followerHits.Add(1)
		code := http.StatusTemporaryRedirect
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			code = http.StatusFound
		}
		w.Header().Set("Location", master+r.URL.RequestURI())
		w.WriteHeader(code)
	}))
	defer follower.Close()
	noLeader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		noLeaderHits.Add(1)
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Retry-After", "1")
		http.Error(w, "no leader", http.StatusServiceUnavailable)
	}))
	defer noLeader.Close()

	for _, tt := range []struct {
		name    string
		url     string
		retries int
		// hits counts the requests of the stand-in, at most maxHits.
		hits    *atomic.Int64
		maxHits int64
	}{
		{"first down", closedURL(t) + "," + master, 2, nil, 0},
		{"follower alone", follower.URL, 0, &followerHits, 3},
		{"follower first", follower.URL + "," + master, 0, &followerHits, 3},
		{"no leader first", noLeader.URL + "," + master, 2, &noLeaderHits, 3},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.hits != nil {
				tt.hits.Store(0)
			}
			res, err := Run(context.Background(), Config{
				URL: tt.url, Size: SizeRange{4 << 10, 2 << 20}, Count: 60, Concurrency: 3,
				Ops: mustMix(t, "put,get,head,delete"), Verify: true, Retries: tt.retries,
			})
			if err != nil {
				t.Fatal(err)
			}
			var retried int64
			for _, r := range res.Ops {
				retried += r.Retried
				if r.Errors != 0 || r.Count == 0 {
					t.Errorf("%s: %d of %d failed, first: %s", r.Op, r.Errors, r.Count, r.FirstErr)
				}
			}
			if tt.retries > 0 && retried == 0 {
				t.Errorf("no op retried: the first master was not met")
			}
			// The workers stay with the master that answered: the stand-in
			// sees the first request of each worker at most.
			if tt.hits != nil && (tt.hits.Load() == 0 || tt.hits.Load() > tt.maxHits) {
				t.Errorf("the stand-in got %d requests, want 1 to %d", tt.hits.Load(), tt.maxHits)
			}
		})
	}
}
