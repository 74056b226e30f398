package node

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node/client"
)

// FuzzMetaArg: a redirect's m= argument never makes the volume panic or
// send a header line break, and what the master encodes decodes to the
// same headers.
func FuzzMetaArg(f *testing.F) {
	f.Add([]byte("eyJjb250ZW50X3R5cGUiOiJ0ZXh0L2h0bWwifQ"), "image/png", "owner", "ana")
	f.Add([]byte("not base64!"), "a\r\nb", "bad name", "x\ny")
	f.Fuzz(func(t *testing.T, arg []byte, ctype, name, value string) {
		check := func(meta *client.ObjectMeta) {
			var h fasthttp.ResponseHeader
			setMetaHeaders(&h, meta)
			for k, v := range h.All() {
				if bytes.ContainsAny(k, "\r\n:") || bytes.ContainsAny(v, "\r\n") {
					t.Fatalf("header %q: %q", k, v)
				}
			}
		}
		if meta := decodeMetaArg(arg); meta != nil {
			check(meta)
		}
		meta := &client.ObjectMeta{MD5: "x", ContentType: ctype, User: map[string]string{name: value}}
		enc := encodeMetaArg(meta)
		if enc == nil {
			return
		}
		back := decodeMetaArg(enc)
		if back == nil {
			t.Fatalf("%q does not decode", enc)
		}
		check(back)
		if !utf8.ValidString(ctype) || !utf8.ValidString(name) || !utf8.ValidString(value) {
			return // JSON carries invalid UTF-8 as U+FFFD
		}
		if back.ContentType != ctype || back.MD5 != "" || back.User[name] != value {
			t.Fatalf("round trip of %q: %+v", enc, back)
		}
	})
}

// TestNativeReadS3Meta: S3 metadata recorded for a value comes back on the
// native API too: HEAD from the master, GET from the volume the master
// redirects to (the headers ride in the redirect, under its signature in a
// cluster with a secret: a changed m= is refused). A value written again
// natively has none, and its redirect carries none.
func TestNativeReadS3Meta(t *testing.T) {
	c := newTestClusterWith(t, 2, 2, withSecret)
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/pics", nil); st != 201 {
		t.Fatalf("create bucket: %d %s", st, body)
	}
	const key = "pics/cat.png"
	st, hdr, body := c.do("PUT", key, strings.NewReader("not really a png"))
	if st != 201 {
		t.Fatalf("PUT: %d %s", st, body)
	}
	meta := client.ObjectMeta{
		MD5:                "0123456789abcdef0123456789abcdef",
		ContentType:        "image/png",
		ContentDisposition: `attachment; filename="cat.png"`,
		CacheControl:       "max-age=60",
		ContentLanguage:    "en",
		User:               map[string]string{"owner": "ana", "bad header": "dropped"},
	}
	b, _ := json.Marshal(meta)
	if st, _, body := c.do("PUT", "_kvdb/s3/object/"+key, strings.NewReader(string(b)), "If-Match", hdr.Get("ETag")); st != 200 {
		t.Fatalf("record metadata: %d %s", st, body)
	}
	want := map[string]string{
		"Content-Type":        "image/png",
		"Content-Disposition": `attachment; filename="cat.png"`,
		"Cache-Control":       "max-age=60",
		"Content-Language":    "en",
		"X-Amz-Meta-Owner":    "ana",
	}
	check := func(what string, h http.Header) {
		t.Helper()
		for k, v := range want {
			if got := h.Get(k); got != v {
				t.Errorf("%s: %s = %q, want %q", what, k, got, v)
			}
		}
		for k := range h {
			if strings.Contains(strings.ToLower(k), "bad") {
				t.Errorf("%s: header %q from a metadata name that is no token", what, k)
			}
		}
	}
	st, h, _ := c.do("HEAD", key, nil)
	if st != 200 {
		t.Fatalf("HEAD: %d", st)
	}
	check("HEAD", h)
	st, h, body = c.do("GET", key, nil)
	if st != 200 || body != "not really a png" {
		t.Fatalf("GET: %d %q", st, body)
	}
	check("GET", h)

	// The redirect's m= is signed: a changed one is refused.
	noFollow := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noFollow.Get(c.url(key))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := url.Parse(resp.Header.Get("Location"))
	if err != nil || loc.Query().Get("m") == "" {
		t.Fatalf("redirect %q: want an m= argument", resp.Header.Get("Location"))
	}
	q := loc.Query()
	q.Set("m", "eyJjb250ZW50X3R5cGUiOiJ0ZXh0L2h0bWwifQ") // {"content_type":"text/html"}
	loc.RawQuery = q.Encode()
	resp, err = http.Get(loc.String())
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("GET with a changed m=: %d, want 403", resp.StatusCode)
	}

	// Written again natively: no S3 metadata for the new version.
	if st, _, body := c.do("PUT", key, strings.NewReader("plain")); st != 200 {
		t.Fatalf("PUT again: %d %s", st, body)
	}
	st, h, body = c.do("GET", key, nil)
	if st != 200 || body != "plain" || h.Get("Content-Type") != "application/octet-stream" || h.Get("X-Amz-Meta-Owner") != "" {
		t.Fatalf("GET of the new version: %d %q, Content-Type %q, owner %q; want plain bytes without metadata", st, body, h.Get("Content-Type"), h.Get("X-Amz-Meta-Owner"))
	}
	resp, err = noFollow.Get(c.url(key))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if loc, _ := url.Parse(resp.Header.Get("Location")); loc == nil || loc.Query().Has("m") {
		t.Errorf("redirect of a value without metadata: %q, want no m=", resp.Header.Get("Location"))
	}
}
