package node

import (
	"encoding/base64"
	"strings"
	"testing"
)

const (
	rwToken = "rw-token-0123456789abcdef"
	roToken = "ro-token-0123456789abcdef"
)

// TestAPIKeys: who may do what with no, an unknown, a read-only and a
// read-write key.
func TestAPIKeys(t *testing.T) {
	c := newTestClusterWith(t, 2, 2, func(c *testCluster) {
		c.mcfg.APIKeys = []APIKey{{Token: rwToken}, {Token: roToken, ReadOnly: true}}
	})
	base := "http://" + c.master.Addr() + "/"
	bearer := func(tok string) []string { return []string{"Authorization", "Bearer " + tok} }
	basic := func(tok string) []string {
		return []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("anyone:"+tok))}
	}
	if st, _, body := send(t, "PUT", base+"k", "v0", bearer(rwToken)...); st != 201 {
		t.Fatalf("PUT with the rw key: got %d %q", st, body)
	}
	none := []string(nil)
	for _, tc := range []struct {
		name   string
		method string
		path   string
		hdr    []string
		want   int
	}{
		{"no key GET", "GET", "k", none, 401},
		{"no key HEAD", "HEAD", "k", none, 401},
		{"no key list", "GET", "?list", none, 401},
		{"no key PUT", "PUT", "k", none, 401},
		{"no key POST", "POST", "new", none, 401},
		{"no key DELETE", "DELETE", "k", none, 401},
		{"no key metrics", "GET", "_kvdb/metrics", none, 401},
		{"no key cluster", "GET", "_kvdb/cluster", none, 401},
		{"no key status", "GET", "_kvdb/status", none, 401},
		{"no key live", "GET", "_kvdb/live", none, 200},
		{"no key ready", "GET", "_kvdb/ready", none, 200},
		{"no key PUT to live", "PUT", "_kvdb/live", none, 401},
		{"unknown key GET", "GET", "k", bearer("not-a-key-0123456789"), 401},
		{"unknown key status", "GET", "_kvdb/status", basic("not-a-key-0123456789"), 401},
		{"other scheme", "GET", "k", []string{"Authorization", "Token " + rwToken}, 401},
		{"empty bearer", "GET", "k", []string{"Authorization", "Bearer "}, 401},
		{"ro GET", "GET", "k", bearer(roToken), 302},
		{"ro HEAD", "HEAD", "k", bearer(roToken), 200},
		{"ro list", "GET", "?list", bearer(roToken), 200},
		{"ro metrics", "GET", "_kvdb/metrics", bearer(roToken), 200},
		{"ro cluster", "GET", "_kvdb/cluster", bearer(roToken), 200},
		{"ro status", "GET", "_kvdb/status", bearer(roToken), 200},
		{"ro status, basic", "GET", "_kvdb/status", basic(roToken), 200},
		{"ro PUT", "PUT", "k", bearer(roToken), 403},
		{"ro POST", "POST", "new", bearer(roToken), 403},
		{"ro DELETE", "DELETE", "k", bearer(roToken), 403},
		{"rw GET, lower-case scheme", "GET", "k", []string{"Authorization", "bearer " + rwToken}, 302},
		{"rw PUT", "PUT", "k", bearer(rwToken), 200},
		{"rw POST", "POST", "new", bearer(rwToken), 201},
		{"rw DELETE", "DELETE", "new", bearer(rwToken), 200},
	} {
		body := ""
		if tc.method == "PUT" || tc.method == "POST" {
			body = "v1"
		}
		st, h, reply := send(t, tc.method, base+tc.path, body, tc.hdr...)
		if st != tc.want {
			t.Errorf("%s: got %d %q, want %d", tc.name, st, reply, tc.want)
			continue
		}
		switch st {
		case 401:
			if !strings.HasPrefix(h.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s: WWW-Authenticate %q, want a Bearer challenge", tc.name, h.Values("WWW-Authenticate"))
			}
			if tc.method != "HEAD" && strings.Count(reply, "\n") != 1 {
				t.Errorf("%s: body %q, want one line of reason", tc.name, reply)
			}
		case 403:
			if !strings.Contains(reply, "read-only") {
				t.Errorf("%s: body %q, want the reason", tc.name, reply)
			}
		}
	}
	// The read-only key's writes changed nothing; the status page offers
	// browsers a Basic prompt.
	if st, body := c.getWith("k", rwToken); st != 200 || body != "v1" {
		t.Fatalf("GET k: got %d %q, want the rw key's write", st, body)
	}
	_, h, _ := send(t, "GET", base+"_kvdb/status", "")
	if got := strings.Join(h.Values("WWW-Authenticate"), "; "); !strings.Contains(got, "Basic") {
		t.Fatalf("status page challenge %q, want Basic too", got)
	}
}

// getWith follows a GET's redirect with token.
func (c *testCluster) getWith(key, token string) (int, string) {
	c.t.Helper()
	st, _, body := c.do("GET", key, nil, "Authorization", "Bearer "+token)
	return st, body
}

func TestParseAPIKeys(t *testing.T) {
	for _, tc := range []struct {
		name string
		file string
		want []APIKey // nil: an error
	}{
		{"keys and comments", "# ops\n" + rwToken + " rw\n\n  " + roToken + "\tro   # dashboards\n",
			[]APIKey{{Token: rwToken}, {Token: roToken, ReadOnly: true}}},
		{"the README's example", "# TOKEN                          access\n3f9c2b7e8d1a4c6f9e0b2d5a7c8e1f3a rw    # the ingest service\nb81e0f4c2d9a7e3b5c6d8f1a2e4b7c9d ro    # dashboards\n",
			[]APIKey{{Token: "3f9c2b7e8d1a4c6f9e0b2d5a7c8e1f3a"}, {Token: "b81e0f4c2d9a7e3b5c6d8f1a2e4b7c9d", ReadOnly: true}}},
		{"empty", "# nothing\n\n", nil},
		{"short token", "short rw\n", nil},
		{"unknown access", rwToken + " admin\n", nil},
		{"no access", rwToken + "\n", nil},
		{"three fields", rwToken + " rw extra\n", nil},
		{"duplicate", rwToken + " rw\n" + rwToken + " ro\n", nil},
		{"bad character", "token,0123456789abcdef rw\n", nil},
	} {
		got, err := ParseAPIKeys(strings.NewReader(tc.file))
		if tc.want == nil {
			if err == nil {
				t.Errorf("%s: got %v, want an error", tc.name, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if len(got) != len(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: key %d: got %v, want %v", tc.name, i, got[i], tc.want[i])
			}
		}
	}
}
