package node

import (
	"net/http"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

func TestConditionsCheck(t *testing.T) {
	tag := []byte(`"00000000000000aa"`)
	mtime := time.Date(2026, 12, 1, 10, 0, 0, 500, time.UTC)
	before, after := mtime.Add(-time.Hour), mtime.Add(time.Hour)
	tests := []struct {
		name  string
		cond  conditions
		read  bool
		found bool
		want  int
	}{
		{"none", conditions{}, false, true, 0},
		{"if-match same", conditions{ifMatch: tag}, false, true, 0},
		{"if-match in list", conditions{ifMatch: []byte(`"x", ` + string(tag))}, false, true, 0},
		{"if-match other", conditions{ifMatch: []byte(`"x"`)}, false, true, 412},
		{"if-match weak never matches", conditions{ifMatch: []byte("W/" + string(tag))}, false, true, 412},
		{"if-match star present", conditions{ifMatch: []byte("*")}, false, true, 0},
		{"if-match star absent", conditions{ifMatch: []byte("*")}, false, false, 412},
		{"if-match absent", conditions{ifMatch: tag}, false, false, 412},
		{"if-match failing on a read", conditions{ifMatch: []byte(`"x"`)}, true, true, 412},
		{"if-unmodified-since later", conditions{ifUnmodifiedSince: after}, false, true, 0},
		{"if-unmodified-since same second", conditions{ifUnmodifiedSince: mtime.Truncate(time.Second)}, false, true, 0},
		{"if-unmodified-since earlier", conditions{ifUnmodifiedSince: before}, false, true, 412},
		{"if-unmodified-since ignored with if-match", conditions{ifMatch: tag, ifUnmodifiedSince: before}, false, true, 0},
		{"if-unmodified-since absent key", conditions{ifUnmodifiedSince: before}, false, false, 0},
		{"if-none-match star write present", conditions{ifNoneMatch: []byte("*")}, false, true, 412},
		{"if-none-match star write absent", conditions{ifNoneMatch: []byte("*")}, false, false, 0},
		{"if-none-match tag write", conditions{ifNoneMatch: tag}, false, true, 412},
		{"if-none-match other write", conditions{ifNoneMatch: []byte(`"x"`)}, false, true, 0},
		{"if-none-match tag read", conditions{ifNoneMatch: tag}, true, true, 304},
		{"if-none-match weak read", conditions{ifNoneMatch: []byte("W/" + string(tag))}, true, true, 304},
		{"if-modified-since later read", conditions{ifModifiedSince: after}, true, true, 304},
		{"if-modified-since earlier read", conditions{ifModifiedSince: before}, true, true, 0},
		{"if-modified-since ignored with if-none-match", conditions{ifNoneMatch: []byte(`"x"`), ifModifiedSince: after}, true, true, 0},
		{"if-modified-since ignored on writes", conditions{ifModifiedSince: after}, false, true, 0},
		{"if-match before if-none-match", conditions{ifMatch: []byte(`"x"`), ifNoneMatch: tag}, true, true, 412},
	}
	for _, tt := range tests {
		got := tt.cond.check(tt.read, tt.found, tag, mtime)
		if got != tt.want {
			t.Errorf("%s: got %d, want %d", tt.name, got, tt.want)
		}
	}
}

// TestConditionalRequests: If-Match, If-None-Match and If-Unmodified-Since
// on PUT, POST, DELETE, GET and HEAD, on the master and on a volume. A
// refused request changes nothing (before the fix, If-Match was ignored:
// a conditional update replaced or deleted anyway).
func TestConditionalRequests(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	u := c.url("cond/k")
	st, hdr, _ := send(t, "PUT", u, "one")
	if st != 201 {
		t.Fatalf("PUT: got %d", st)
	}
	tag1 := hdr.Get("ETag")
	past := time.Now().Add(-time.Hour).UTC().Format(http.TimeFormat)
	future := time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)
	steps := []struct {
		method, key, body string
		hdr               []string
		want              int
	}{
		{"PUT", "cond/k", "two", []string{"If-Match", `"0000000000000000"`}, 412},
		{"PUT", "cond/k", "two", []string{"If-Match", "W/" + tag1}, 412},
		{"PUT", "cond/k", "two", []string{"If-Unmodified-Since", past}, 412},
		{"PUT", "cond/k", "two", []string{"If-None-Match", tag1}, 412},
		{"PUT", "cond/k", "two", []string{"If-None-Match", "*"}, 412},
		{"POST", "cond/k", "two", nil, 409},
		{"DELETE", "cond/k", "", []string{"If-Match", `"0000000000000000"`}, 412},
		{"DELETE", "cond/k", "", []string{"If-Unmodified-Since", past}, 412},
		{"GET", "cond/k", "", []string{"If-Match", `"0000000000000000"`}, 412},
		{"GET", "cond/k", "", []string{"If-None-Match", tag1}, 304},
		{"HEAD", "cond/k", "", []string{"If-None-Match", tag1}, 304},
		{"HEAD", "cond/k", "", []string{"If-Modified-Since", future}, 304},
		{"GET", "cond/k", "", []string{"If-Match", tag1}, 302},
		{"PUT", "cond/new", "x", []string{"If-Match", "*"}, 412},
		{"GET", "cond/new", "", nil, 404},
		{"POST", "cond/new", "x", []string{"If-Match", "*"}, 412},
		{"GET", "cond/new", "", nil, 404},
		{"PUT", "cond/k", "two", []string{"If-Match", tag1, "If-Unmodified-Since", past}, 200},
	}
	for _, s := range steps {
		got, _, body := send(t, s.method, c.url(s.key), s.body, s.hdr...)
		if got != s.want {
			t.Errorf("%s %s %v: got %d (%s), want %d", s.method, s.key, s.hdr, got, body, s.want)
		}
	}
	if st, got := c.get("cond/k"); st != 200 || got != "two" {
		t.Fatalf("GET: got %d %q, want \"two\": only the request whose conditions held changed it", st, got)
	}
	_, hdr, _ = send(t, "HEAD", u, "")
	tag2 := hdr.Get("ETag")
	// The volume evaluates them too, on the copy it serves.
	loc := c.redirectOf("cond/k")
	for _, s := range []struct {
		hdr  []string
		want int
	}{
		{[]string{"If-Match", tag1}, 412},
		{[]string{"If-Match", tag2}, 200},
		{[]string{"If-Unmodified-Since", past}, 412},
		{[]string{"If-None-Match", tag2}, 304},
	} {
		if got, _, body := send(t, "GET", loc, "", s.hdr...); got != s.want {
			t.Errorf("volume GET %v: got %d (%s), want %d", s.hdr, got, body, s.want)
		}
	}
	if st, _, body := send(t, "DELETE", u, "", "If-Match", tag2); st != 200 {
		t.Fatalf("DELETE If-Match current: got %d (%s), want 200", st, body)
	}
	if st, _, _ := send(t, "GET", u, ""); st != fasthttp.StatusNotFound {
		t.Fatalf("GET after DELETE: got %d, want 404", st)
	}
}

// TestWriteWithQueryRefused: a write or delete with a query string the API
// does not define is refused with 400 and changes nothing (before the fix,
// "DELETE /dir/?list" deleted the key "dir/" and "PUT /k?foo=bar" stored
// "k").
func TestWriteWithQueryRefused(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	c.put("dir/", "a directory marker")
	for _, r := range []struct{ method, path, body string }{
		{"DELETE", "dir/?list", ""},
		{"PUT", "q/k?foo=bar", "v"},
		{"POST", "q/k?foo=bar", "v"},
		{"PUT", "dir/?list", "v"},
	} {
		if st, _, body := send(t, r.method, c.url(r.path), r.body); st != 400 {
			t.Errorf("%s /%s: got %d (%s), want 400", r.method, r.path, st, body)
		}
	}
	if st, got := c.get("dir/"); st != 200 || got != "a directory marker" {
		t.Errorf("dir/: got %d %q, want it untouched", st, got)
	}
	if st, _ := c.get("q/k"); st != 404 {
		t.Errorf("q/k: got %d, want 404 (nothing stored)", st)
	}
}
