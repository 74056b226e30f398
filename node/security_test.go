package node

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/store"
)

var (
	testSecret  = []byte("correct horse battery staple, 2026")
	otherSecret = []byte("another cluster's secret, 32 bytes")
)

// withSecret is a newTestClusterWith option: every node gets testSecret.
func withSecret(c *testCluster) { c.mcfg.Secret = testSecret }

// noRedirects is a client that returns 302s instead of following them.
var noRedirects = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// send makes one request with noRedirects and returns status, headers and
// body; hdr is name, value pairs.
func send(t testing.TB, method, url string, body string, hdr ...string) (int, http.Header, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, resp.Header, string(b)
}

// startStranger starts a volume that tries to join c with the given secret
// (nil: none); the cluster's cleanup stops it.
func startStranger(c *testCluster, name string, secret []byte) *Volume {
	c.t.Helper()
	i := len(c.vcfgs)
	c.vcfgs = append(c.vcfgs, VolumeConfig{
		Name: name, Addr: "127.0.0.1:0", Dir: filepath.Join(filepath.Dir(c.mcfg.Dir), name),
		MetaInterval: 200 * time.Millisecond, Logger: testLogger(), Secret: secret,
		Gossip: GossipConfig{
			Bind: "127.0.0.1:0", Cluster: c.label, Profile: ProfileTest,
			Join: []string{c.mcfg.Gossip.Bind},
		},
	})
	c.vols = append(c.vols, nil)
	c.startVolume(i)
	return c.vols[i]
}

// TestSecretStrangerCannotJoin: volumes with a different secret, or none,
// never make it into the master's ring or member list, while a volume with
// the right secret started after them does.
func TestSecretStrangerCannotJoin(t *testing.T) {
	c := newTestClusterWith(t, 2, 2, withSecret)
	wrong := startStranger(c, "wrong-secret", otherSecret)
	none := startStranger(c, "no-secret", nil)
	// Joining is synchronous in NewVolume: had a stranger been let in, the
	// master would know it before the good volume below even starts.
	c.addVolume()
	c.waitVolumes(3)
	view := c.master.view.Load()
	for _, name := range []string{"wrong-secret", "no-secret"} {
		if _, ok := view.vols[name]; ok {
			t.Errorf("%s is in the master's ring", name)
		}
		for _, m := range c.master.gossip.snapshot() {
			if m.Name == name {
				t.Errorf("%s is in the master's member list", name)
			}
		}
	}
	for _, v := range []*Volume{wrong, none} {
		if n := v.gossip.ml.NumMembers(); n != 1 {
			t.Errorf("%s sees %d gossip members, want only itself", v.Name(), n)
		}
	}
}

// TestSecretValidate: short secrets and a secret next to a raw gossip key
// are refused.
func TestSecretValidate(t *testing.T) {
	for _, tc := range []struct {
		secret, gossip []byte
		ok             bool
	}{
		{nil, nil, true},
		{testSecret, nil, true},
		{[]byte("0123456789abcde"), nil, false},
		{[]byte("0123456789abcdef"), nil, true},
		{testSecret, bytes.Repeat([]byte("k"), 32), false},
		{nil, bytes.Repeat([]byte("k"), 32), true},
	} {
		mc := MasterConfig{Dir: "x", Secret: tc.secret, Gossip: GossipConfig{Secret: tc.gossip}}
		vc := VolumeConfig{Dir: "x", Secret: tc.secret, Gossip: GossipConfig{Secret: tc.gossip}}
		if err := mc.Validate(); (err == nil) != tc.ok {
			t.Errorf("master secret %d bytes, gossip %d: got %v, want ok=%v", len(tc.secret), len(tc.gossip), err, tc.ok)
		}
		if err := vc.Validate(); (err == nil) != tc.ok {
			t.Errorf("volume secret %d bytes, gossip %d: got %v, want ok=%v", len(tc.secret), len(tc.gossip), err, tc.ok)
		}
	}
	if bytes.Equal(gossipKey(testSecret), newSigner(testSecret).key) {
		t.Fatal("gossip and signing keys are the same")
	}
}

// TestSecretVolumeRefusesUnsigned: a volume's internal API takes only
// requests the master signed, for this volume, not expired, not altered.
func TestSecretVolumeRefusesUnsigned(t *testing.T) {
	c := newTestClusterWith(t, 2, 2, withSecret)
	c.put("kept", "precious")
	rec, found, err := c.master.lookup([]byte("kept"))
	if err != nil || !found {
		t.Fatalf("lookup: %v %v", found, err)
	}
	vol, other := c.vols[0], c.vols[1]
	addr := vol.Addr()
	good := c.master.sec
	stranger := newSigner(otherSecret)
	// A fresh version: a signed write of a version older than a signature
	// lives is refused as a replay.
	fresh := uint64(time.Now().UnixNano())
	put := internalURL(addr, "blob/", []byte("planted"), fresh)
	past := time.Now().Add(-2 * clockSkew).Unix()
	forOther := good.signURL("PUT", internalURL(other.Addr(), "blob/", []byte("planted"), 1))
	forOther = "http://" + addr + forOther[len("http://"+other.Addr()):]
	signedPut := good.signURL("PUT", put)
	tamperedV := strings.Replace(signedPut, "?v="+formatVersion(fresh)+"&", "?v="+formatVersion(fresh+1)+"&", 1)

	keptList := string(appendDeleteList(nil, []*deleteItem{{key: []byte("kept"), version: rec.Version}}))
	for _, tc := range []struct {
		name, method, url, body string
	}{
		{"unsigned put", "PUT", put, "evil"},
		{"put signed by a stranger", "PUT", stranger.signURL("PUT", put), "evil"},
		{"expired put", "PUT", good.signURLExpiring("PUT", put, past), "evil"},
		{"put signed for another volume", "PUT", forOther, "evil"},
		{"put with the version changed", "PUT", tamperedV, "evil"},
		{"put signed as a delete", "PUT", good.signURL("DELETE", put), "evil"},
		{"put with the signature cut", "PUT", signedPut[:len(signedPut)-sigLen-len("&s=")], "evil"},
		{"unsigned delete", "DELETE", internalURL(addr, "blob/", []byte("kept"), rec.Version), ""},
		{"unsigned pull", "POST", internalURL(addr, "pull/", []byte("planted"), 1) + "&from=" + other.Addr(), ""},
		{"unsigned index", "GET", "http://" + addr + "/_kvdb/index", ""},
		{"unsigned delete list", "POST", deleteListURL(addr, keptList), keptList},
		{"unsigned sync", "POST", "http://" + addr + "/_kvdb/sync", ""},
		{"unknown internal endpoint", "GET", "http://" + addr + "/_kvdb/nothing", ""},
	} {
		st, _, body := send(t, tc.method, tc.url, tc.body)
		if st != fasthttp.StatusForbidden {
			t.Errorf("%s: got %d %q, want 403", tc.name, st, body)
		}
		if strings.Count(body, "\n") != 1 || !strings.HasPrefix(body, "forbidden: ") {
			t.Errorf("%s: body %q, want one line of reason", tc.name, body)
		}
	}
	if _, err := vol.store.Latest([]byte("planted")); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after refused writes: Latest(planted) = %v, want not found", err)
	}
	// A signed delete list sent with another body than the one signed.
	if st, _, body := send(t, "POST", good.signURL("POST", deleteListURL(addr, "1 /other\n")), keptList); st != 400 {
		t.Errorf("delete list with a swapped body: got %d %q, want 400", st, body)
	}
	if _, err := vol.store.Latest([]byte("kept")); err != nil {
		t.Fatalf("after a refused delete: Latest(kept) = %v", err)
	}
	if st, body := c.get("kept"); st != 200 || body != "precious" {
		t.Fatalf("GET kept: got %d %q", st, body)
	}

	// The same requests, signed by the master, go through.
	if st, _, body := send(t, "PUT", good.signURL("PUT", put), "fine"); st != 201 {
		t.Fatalf("signed put: got %d %q, want 201", st, body)
	}
	if st, _, body := send(t, "GET", good.signURL("GET", "http://"+addr+"/_kvdb/index?limit=10"), ""); st != 200 || !strings.Contains(body, "planted") {
		t.Fatalf("signed index: got %d %q", st, body)
	}
	if st, _, body := send(t, "DELETE", good.signURL("DELETE", put), ""); st != 200 {
		t.Fatalf("signed delete: got %d %q", st, body)
	}
	// Probes and monitoring stay open.
	for _, p := range []string{"live", "metrics", "cluster"} {
		if st, _, body := send(t, "GET", "http://"+addr+"/_kvdb/"+p, ""); st != 200 {
			t.Errorf("GET /_kvdb/%s: got %d %q, want 200", p, st, body)
		}
	}
}

// TestSecretSignedRedirect: the master's redirect carries a signature; the
// URL works as given and fails with 403 once stripped, altered or expired.
func TestSecretSignedRedirect(t *testing.T) {
	c := newTestClusterWith(t, 2, 2, withSecret)
	const key, value = "photos/cat 1.jpg", "a value of some bytes"
	c.put("photos/cat%201.jpg", value)
	st, hdr, body := send(t, "GET", c.url("photos/cat%201.jpg"), "")
	if st != 302 {
		t.Fatalf("GET: got %d %q, want 302", st, body)
	}
	loc := hdr.Get("Location")
	if !strings.Contains(loc, "&e=") || !strings.Contains(loc, "&s=") {
		t.Fatalf("Location %q is not signed", loc)
	}
	if st, _, body := send(t, "GET", loc, ""); st != 200 || body != value {
		t.Fatalf("GET Location: got %d %q, want 200 %q", st, body, value)
	}
	if st, h, _ := send(t, "HEAD", loc, ""); st != 200 || h.Get("Content-Length") != strconv.Itoa(len(value)) {
		t.Fatalf("HEAD Location: got %d, length %s", st, h.Get("Content-Length"))
	}
	if st, _, body := send(t, "GET", loc, "", "Range", "bytes=2-6"); st != 206 || body != value[2:7] {
		t.Fatalf("ranged GET Location: got %d %q", st, body)
	}
	// Following the redirect, as curl -L does.
	if st, body := c.get("photos/cat%201.jpg"); st != 200 || body != value {
		t.Fatalf("GET following the redirect: got %d %q", st, body)
	}

	rec, _, _ := c.master.lookup([]byte(key))
	i := strings.Index(loc, "&e=")
	unsigned := loc[:i]
	sig := loc[strings.Index(loc, "&s=")+3:]
	e := loc[i+3 : strings.Index(loc, "&s=")]
	exp, _ := strconv.ParseInt(e, 10, 64)
	flip := func(s string, at int) string {
		b := []byte(s)
		if b[at] == 'A' {
			b[at] = 'B'
		} else {
			b[at] = 'A'
		}
		return string(b)
	}
	host := loc[len("http://"):]
	host = host[:strings.IndexByte(host, '/')]
	signed := func(k string, ver uint64, expiry int64) string {
		return string(c.master.sec.appendReadSig(appendBlobURL(nil, host, []byte(k), ver), []byte(k), ver, expiry))
	}
	for _, tc := range []struct{ name, url string }{
		{"signature stripped", unsigned},
		{"s= removed", loc[:strings.Index(loc, "&s=")]},
		{"e= removed", unsigned + "&s=" + sig},
		{"signature altered", unsigned + "&e=" + e + "&s=" + flip(sig, 5)},
		{"signature truncated", unsigned + "&e=" + e + "&s=" + sig[:20]},
		{"expiry extended", unsigned + "&e=" + strconv.FormatInt(exp+3600, 10) + "&s=" + sig},
		{"another version", strings.Replace(loc, "?v="+formatVersion(rec.Version), "?v="+formatVersion(rec.Version+1), 1)},
		{"another key", strings.Replace(loc, "cat%201", "cat%202", 1)},
		{"no version", "http://" + host + "/photos/cat%201.jpg?e=" + e + "&s=" + sig},
		{"expired", signed(key, rec.Version, time.Now().Add(-clockSkew-time.Minute).Unix())},
		{"signed by a stranger", string(newSigner(otherSecret).appendReadSig(appendBlobURL(nil, host, []byte(key), rec.Version), []byte(key), rec.Version, exp))},
	} {
		for _, method := range []string{"GET", "HEAD"} {
			st, _, body := send(t, method, tc.url, "")
			if st != 403 {
				t.Errorf("%s %s: got %d %q, want 403", method, tc.name, st, body)
			}
		}
	}
	// A URL a little past its expiry still works: clocks may differ.
	if st, _, body := send(t, "GET", signed(key, rec.Version, time.Now().Add(-clockSkew/2).Unix()), ""); st != 200 || body != value {
		t.Fatalf("GET within the clock skew: got %d %q", st, body)
	}
}

// TestSecretEndToEnd: with a secret and API keys, the client API works as
// without them: writes, reads, listings, deletes, repair after a crash,
// and a rebuild of the index from the volumes.
func TestSecretEndToEnd(t *testing.T) {
	c := newTestClusterWith(t, 3, 2, func(c *testCluster) {
		c.mcfg.Secret = testSecret
		c.mcfg.APIKeys = []APIKey{{Token: rwToken}, {Token: roToken, ReadOnly: true}}
		c.token = rwToken
	})
	for i := 0; i < 20; i++ {
		c.put(fmt.Sprintf("e2e/%02d", i), fmt.Sprintf("value %d", i))
	}
	c.put("e2e/05", "replaced")
	if st, body := c.get("e2e/05"); st != 200 || body != "replaced" {
		t.Fatalf("GET e2e/05: got %d %q", st, body)
	}
	if st, _, body := c.do("GET", "e2e/?list&limit=100", nil); st != 200 || strings.Count(body, "e2e/") != 20 {
		t.Fatalf("list: got %d %q", st, body)
	}
	if st, _, body := c.do("DELETE", "e2e/07", nil); st != 200 {
		t.Fatalf("DELETE: got %d %q", st, body)
	}
	if st, _ := c.get("e2e/07"); st != 404 {
		t.Fatalf("GET after DELETE: got %d, want 404", st)
	}

	// Repair: kill a volume holding a key; the master has a surviving
	// replica copy it (a signed pull, and a signed volume-to-volume read).
	rec, _, _ := c.master.lookup([]byte("e2e/03"))
	dead := -1
	for i, v := range c.vols {
		if v.Name() == rec.Replicas[0] {
			dead = i
		}
	}
	c.killVolume(dead)
	c.waitVolumes(2)
	waitFor(t, 20*time.Second, "e2e/03 to be repaired onto live volumes", func() bool {
		rec, _, err := c.master.lookup([]byte("e2e/03"))
		if err != nil || len(rec.Replicas) < 2 {
			return false
		}
		view := c.master.view.Load()
		for _, name := range rec.Replicas {
			if _, ok := view.vols[name]; !ok {
				return false
			}
		}
		return true
	})
	rec, _, _ = c.master.lookup([]byte("e2e/03"))
	view := c.master.view.Load()
	for _, name := range rec.Replicas {
		u := signedReadURL(c.master.sec, view.vols[name].HTTP, "e2e/03", rec.Version)
		if st, _, body := send(t, "GET", u, ""); st != 200 || body != "value 3" {
			t.Fatalf("replica %s after repair: got %d %q", name, st, body)
		}
	}

	// Rebuild: a master that lost its index reads every volume's (signed).
	c.master.Kill()
	c.mcfg.Rebuild = true
	c.startMaster()
	waitFor(t, 20*time.Second, "the rebuilt index to serve e2e/10", func() bool {
		st, body := c.get("e2e/10")
		return st == 200 && body == "value 10"
	})
}

func signedReadURL(s *signer, addr, key string, version uint64) string {
	return string(s.appendReadSig(appendBlobURL(nil, addr, []byte(key), version), []byte(key), version, time.Now().Add(time.Minute).Unix()))
}

// TestRedirectAllocsSecure: signing the redirect and checking the API key
// keep the redirect free of allocations.
func TestRedirectAllocsSecure(t *testing.T) {
	if testing.CoverMode() != "" {
		t.Skip("coverage instrumentation allocates")
	}
	c := newTestClusterWith(t, 2, 2, func(c *testCluster) {
		c.mcfg.Secret = testSecret
		c.mcfg.APIKeys = []APIKey{{Token: rwToken}, {Token: roToken, ReadOnly: true}}
		c.token = rwToken
	})
	c.put("photos/2026/cat.jpg", "meow")
	var ctx fasthttp.RequestCtx
	ctx.Request.Header.SetMethod("GET")
	ctx.Request.SetRequestURI("/photos/2026/cat.jpg")
	ctx.Request.Header.Set("Authorization", "Bearer "+roToken)
	c.master.handle(&ctx) // warm the cache, the HMAC pool and fasthttp's buffers
	allocs := testing.AllocsPerRun(1000, func() {
		ctx.Response.Reset()
		c.master.handle(&ctx)
	})
	if ctx.Response.StatusCode() != fasthttp.StatusFound {
		t.Fatalf("got status %d, want 302", ctx.Response.StatusCode())
	}
	if loc := ctx.Response.Header.Peek("Location"); !bytes.Contains(loc, []byte("&s=")) {
		t.Fatalf("Location %q is not signed", loc)
	}
	switch {
	case raceEnabled:
		// The race detector empties sync.Pool at random, so the HMAC pool
		// allocates now and then.
		t.Logf("%.1f allocations per signed redirect (not checked under -race)", allocs)
	case allocs != 0:
		t.Fatalf("got %.1f allocations per signed redirect, want 0", allocs)
	}
}

// TestSignedQueryParse pins the parser of "…e=EXPIRY&s=SIG".
func TestSignedQueryParse(t *testing.T) {
	sig := strings.Repeat("A", sigLen)
	for _, tc := range []struct {
		q      string
		signed string
		err    error
	}{
		{"v=1&e=10&s=" + sig, "v=1&e=10", nil},
		{"e=10&s=" + sig, "e=10", nil},
		{"s=" + sig, "", errUnsigned},
		{"v=1&e=10", "", errUnsigned},
		{"", "", errUnsigned},
		{"v=1&s=" + sig, "", errSigFormat},
		{"v=1&e=10&x=1&s=" + sig, "", errSigFormat},
		{"v=1&e=-5&s=" + sig, "v=1&e=-5", errSigFormat},
		{"v=1&e=99999999999999999999&s=" + sig, "v=1&e=99999999999999999999", errSigFormat},
		{"v=1&e=10&s=" + sig[1:], "v=1&e=10", errSigFormat},
		{"v=1&e=10&s=" + sig + "&x=1", "v=1&e=10&s=" + sig, errSigFormat},
	} {
		signed, e, s, err := splitSignedQuery([]byte(tc.q))
		if err == nil {
			_, _, err = parseSigArgs(e, s)
		}
		if !errors.Is(err, tc.err) {
			t.Errorf("%q: got error %v, want %v", tc.q, err, tc.err)
		}
		if tc.err == nil && string(signed) != tc.signed {
			t.Errorf("%q: got signed part %q, want %q", tc.q, signed, tc.signed)
		}
	}
}

// FuzzSignedQuery: the signature parsers never panic, and what they accept
// is well formed.
func FuzzSignedQuery(f *testing.F) {
	s := newSigner(testSecret)
	u := s.signURLExpiring("PUT", "http://127.0.0.1:1/_kvdb/blob/a%20b?v=1f", 1700000000)
	f.Add(u[strings.IndexByte(u, '?')+1:])
	f.Add("v=1&e=10&s=" + strings.Repeat("_", sigLen))
	f.Add("e=&s=")
	f.Add("&s=&e=&s=")
	f.Fuzz(func(t *testing.T, q string) {
		signed, e, sv, err := splitSignedQuery([]byte(q))
		if err != nil {
			return
		}
		if string(signed)+"&s="+string(sv) != q {
			t.Fatalf("split %q into %q and %q", q, signed, sv)
		}
		if !bytes.HasSuffix(signed, append([]byte("e="), e...)) {
			t.Fatalf("%q: e=%q is not the last signed argument", q, e)
		}
		exp, _, err := parseSigArgs(e, sv)
		if err != nil {
			return
		}
		if exp < 0 || len(sv) != sigLen || strings.ContainsAny(string(sv), "&=") {
			t.Fatalf("%q: accepted expiry %d, signature %q", q, exp, sv)
		}
	})
}

// FuzzReadSignature: a signed read verifies for exactly its key, version
// and expiry.
func FuzzReadSignature(f *testing.F) {
	s := newSigner(testSecret)
	f.Add([]byte("photos/cat.jpg"), uint64(0x18a1b2c3d4e5f607), int64(1700000000), byte(0))
	f.Add([]byte("a"), uint64(1), int64(0), byte(7))
	f.Fuzz(func(t *testing.T, key []byte, version uint64, expiry int64, flip byte) {
		expiry &= 1<<40 - 1 // far beyond any real expiry, within time.Time's range
		u := s.appendReadSig(nil, key, version, expiry)
		q := u[1:] // drop the leading '&'
		_, e, sv, err := splitSignedQuery(append([]byte("v=1&"), q...))
		if err != nil {
			t.Fatalf("own signature %q: %v", u, err)
		}
		now := time.Unix(expiry, 0)
		if err := s.verifyRead(key, version, e, sv, now); err != nil {
			t.Fatalf("own signature %q: %v", u, err)
		}
		if err := s.verifyRead(key, version+1, e, sv, now); !errors.Is(err, errBadSignature) {
			t.Fatalf("another version: got %v", err)
		}
		if len(key) > 0 {
			k := append([]byte(nil), key...)
			k[int(flip)%len(k)] ^= 1 + flip>>1
			if err := s.verifyRead(k, version, e, sv, now); !errors.Is(err, errBadSignature) {
				t.Fatalf("altered key %q: got %v", k, err)
			}
		}
		if err := s.verifyRead(key, version, e, sv, now.Add(clockSkew+time.Second)); !errors.Is(err, errExpired) {
			t.Fatalf("after expiry: got %v", err)
		}
		// With response headers (m=): valid for exactly those.
		meta := append([]byte("eyJjb250ZW50X3R5cGUiOiJ0ZXh0In0"), key...)
		um := s.appendReadSigMeta(nil, key, version, expiry, meta)
		_, e, sv, err = splitSignedQuery(append([]byte("v=1&"), um[1:]...))
		if err != nil {
			t.Fatalf("own signature %q: %v", um, err)
		}
		if err := s.verifyReadMeta(key, version, e, sv, meta, now); err != nil {
			t.Fatalf("own signature with m=: %v", err)
		}
		if err := s.verifyRead(key, version, e, sv, now); !errors.Is(err, errBadSignature) {
			t.Fatalf("m= dropped: got %v", err)
		}
		other := append([]byte(nil), meta...)
		other[int(flip)%len(other)] ^= 1 + flip>>1
		if err := s.verifyReadMeta(key, version, e, sv, other, now); !errors.Is(err, errBadSignature) {
			t.Fatalf("altered m=: got %v", err)
		}
	})
}

// TestInternalSignature: what signURL signs verifies on the volume it was
// signed for, as the volume sees the request, and nowhere else.
func TestInternalSignature(t *testing.T) {
	s := newSigner(testSecret)
	s.setSelf("10.0.0.2:3001")
	now := time.Now()
	for _, uri := range []string{
		"http://10.0.0.2:3001/_kvdb/blob/a%2Fb%20c?v=18a",
		"http://10.0.0.2:3001/_kvdb/pull/k?v=1&from=10.0.0.3:3001",
		"http://10.0.0.2:3001/_kvdb/index",
		"http://10.0.0.2:3001",
	} {
		signed := s.signURL("PUT", uri)
		target := signed[len("http://10.0.0.2:3001"):]
		path, query, _ := strings.Cut(target, "?")
		if err := s.verifyInternal([]byte("PUT"), []byte(path), []byte(query), now); err != nil {
			t.Errorf("%s signed as %s: %v", uri, signed, err)
		}
		if err := s.verifyInternal([]byte("DELETE"), []byte(path), []byte(query), now); !errors.Is(err, errBadSignature) {
			t.Errorf("%s as a DELETE: got %v, want a bad signature", uri, err)
		}
		if err := s.verifyInternal([]byte("PUT"), []byte(path+"x"), []byte(query), now); !errors.Is(err, errBadSignature) {
			t.Errorf("%s on another path: got %v, want a bad signature", uri, err)
		}
		if err := s.verifyInternal([]byte("PUT"), []byte(path), []byte(query), now.Add(internalTTL+clockSkew+time.Second)); !errors.Is(err, errExpired) {
			t.Errorf("%s after its expiry: got %v, want expired", uri, err)
		}
	}
	other := newSigner(testSecret)
	other.setSelf("10.0.0.3:3001")
	signed := s.signURL("PUT", "http://10.0.0.2:3001/_kvdb/blob/k?v=1")
	path, query, _ := strings.Cut(signed[len("http://10.0.0.2:3001"):], "?")
	if err := other.verifyInternal([]byte("PUT"), []byte(path), []byte(query), now); !errors.Is(err, errBadSignature) {
		t.Errorf("on another volume: got %v, want a bad signature", err)
	}
	if err := newSigner(testSecret).verifyInternal([]byte("PUT"), []byte(path), []byte(query), now); err == nil {
		t.Error("a volume that does not know its address yet took a request")
	}
}

// deleteListURL is the URL of a delete list (POST /_kvdb/delete) with its
// body's checksum, unsigned.
func deleteListURL(addr, body string) string {
	sum := sha256.Sum256([]byte(body))
	return "http://" + addr + "/_kvdb/delete?b=" + base64.RawURLEncoding.EncodeToString(sum[:])
}
