package client

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestLeaderOf(t *testing.T) {
	for _, tt := range []struct {
		target, suffix, loc string
		leader              string // "": not a follower's redirect
	}{
		{"http://f:1/k", "/k", "http://l:2/k", "http://l:2"},
		{"http://f:1/a%20b", "/a%20b", "http://l:2/a%20b", "http://l:2"},
		{"http://f:1/p?list&limit=2", "/p?list&limit=2", "http://l:2/p?list&limit=2", "http://l:2"},
		{"http://f:1/pre/k", "/k", "http://l:2/pre/k", "http://l:2/pre"},
		// The same key escaped another way.
		{"http://f:1/a%2Bb", "/a%2Bb", "http://l:2/a+b", "http://l:2"},
		// A master's redirects to a volume.
		{"http://m:1/k", "/k", "http://v:2/k?v=7", ""},
		{"http://m:1/k", "/k", "http://v:2/_kvdb/write/k?t=x&s=y", ""},
		{"http://m:1/k", "/k", "http://v:2/x/k", ""},
		{"http://m:1/k", "/k", "http://m:1/k", ""},
	} {
		got, ok := leaderOf(tt.target, tt.suffix, tt.loc)
		if got != tt.leader || ok != (tt.leader != "") {
			t.Errorf("leaderOf(%q, %q, %q) = %q, %v; want %q", tt.target, tt.suffix, tt.loc, got, ok, tt.leader)
		}
	}
}

func TestParseURLs(t *testing.T) {
	got := strings.Join(parseURLs("a:1, http://b:2/ ,https://c/p/,a:1"), " ")
	if want := "http://a:1 http://b:2 https://c/p"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	for _, tt := range []struct {
		url string
		ok  bool
	}{
		{"http://a:1,http://b:2", true},
		{"a:1,b:2,c:3", true},
		{"http://a:1,", false},
		{",http://a:1", false},
		{"http://a:1,,http://b:2", false},
		{"http://a:1,ftp://b", false},
		{"http://a:1,http://b/?x", false},
	} {
		if err := (ClientConfig{URL: tt.url}).Validate(); (err == nil) != tt.ok {
			t.Errorf("Validate(%q): got %v, want ok %v", tt.url, err, tt.ok)
		}
	}
	cl, err := NewClient(ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	if cl.URL() != DefaultURL || len(cl.Masters()) != 1 {
		t.Errorf("the zero config: URL %q, masters %q; want %q alone", cl.URL(), cl.Masters(), DefaultURL)
	}
}

func TestBackoff(t *testing.T) {
	for round, want := range []time.Duration{50, 100, 200, 400, 800, 1000, 1000} {
		want *= time.Millisecond
		for range 20 {
			if got := backoff(round); got < want/2 || got > want {
				t.Fatalf("backoff(%d) = %v, want %v to %v", round, got, want/2, want)
			}
		}
	}
}

// A body is sent again from where the reader was when Put began, not from
// its start.
func TestPutRewindsToItsStart(t *testing.T) {
	unavailable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		http.Error(w, "no leader", http.StatusServiceUnavailable)
	}))
	defer unavailable.Close()
	var mu sync.Mutex
	var got []string
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		got = append(got, string(b))
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	}))
	defer leader.Close()
	for _, threshold := range []int64{-1, 1} { // without and with Expect
		got = nil
		cl, err := NewClient(ClientConfig{URL: unavailable.URL + "," + leader.URL, ExpectThreshold: threshold})
		if err != nil {
			t.Fatal(err)
		}
		r := strings.NewReader("skip:the value")
		_, _ = r.Seek(5, io.SeekStart)
		res, err := cl.Put(context.Background(), "k", r, 9, PutOptions{})
		if err != nil || res.Size != 9 || len(got) != 1 || got[0] != "the value" {
			t.Errorf("Expect from %d: got %+v, %v, the leader got %q; want 9 bytes, %q", threshold, res, err, got, "the value")
		}
		cl.Close()
	}
}
