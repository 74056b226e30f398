package node

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/kvdb/kvdb/node/client"
)

func TestValidateBucketName(t *testing.T) {
	for name, want := range map[string]bool{
		"abc": true, "my-bucket.v2": true, "a1b": true,
		"ab": false, "ABC": false, "-abc": false, "abc-": false, "a..b": false,
		"192.168.1.1": false, "a_b": false, "_kvdb": false, strings.Repeat("a", 64): false,
	} {
		if got := ValidateBucketName(name) == nil; got != want {
			t.Errorf("ValidateBucketName(%q) ok = %v, want %v", name, got, want)
		}
	}
}

func TestS3Buckets(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	steps := []struct {
		method, path string
		want         int
		code         string
	}{
		{"GET", "_kvdb/s3/bucket/photos", 404, "NoSuchBucket"},
		{"PUT", "_kvdb/s3/bucket/photos", 201, ""},
		{"PUT", "_kvdb/s3/bucket/photos", 409, "BucketAlreadyOwnedByYou"},
		{"PUT", "_kvdb/s3/bucket/Bad_Name", 400, "InvalidBucketName"},
		{"GET", "_kvdb/s3/bucket/photos", 200, ""},
		{"PUT", "photos/cat.jpg", 201, ""},
		{"DELETE", "_kvdb/s3/bucket/photos", 409, "BucketNotEmpty"},
		{"DELETE", "photos/cat.jpg", 200, ""},
		{"DELETE", "_kvdb/s3/bucket/photos", 200, ""},
		{"DELETE", "_kvdb/s3/bucket/photos", 404, "NoSuchBucket"},
	}
	for _, s := range steps {
		st, _, body := c.do(s.method, s.path, strings.NewReader("x"))
		if st != s.want {
			t.Fatalf("%s %s: got %d (%s), want %d", s.method, s.path, st, body, s.want)
		}
		if s.code != "" {
			var e client.S3Error
			if err := json.Unmarshal([]byte(body), &e); err != nil || e.Code != s.code {
				t.Fatalf("%s %s: body %q, want code %s", s.method, s.path, body, s.code)
			}
		}
	}
	for _, b := range []string{"zeta", "alpha"} {
		if st, _, body := c.do("PUT", "_kvdb/s3/bucket/"+b, nil); st != 201 {
			t.Fatalf("create %s: %d %s", b, st, body)
		}
	}
	_, _, body := c.do("GET", "_kvdb/s3/buckets", nil)
	var list client.BucketList
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list.Buckets) != 2 || list.Buckets[0].Name != "alpha" || list.Buckets[1].Name != "zeta" {
		t.Fatalf("bucket list: %s", body)
	}
}

func TestS3ObjectMeta(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	c.do("PUT", "_kvdb/s3/bucket/bk1", nil)
	if st, _, body := c.do("GET", "_kvdb/s3/object/bk1/k", nil); st != 404 || !strings.Contains(body, "NoSuchKey") {
		t.Fatalf("absent object: %d %s", st, body)
	}
	if st, _, body := c.do("GET", "_kvdb/s3/object/nob/k", nil); st != 404 || !strings.Contains(body, "NoSuchBucket") {
		t.Fatalf("absent bucket: %d %s", st, body)
	}
	st, hdr, _ := c.do("PUT", "bk1/k", strings.NewReader("hello"))
	if st != 201 {
		t.Fatalf("PUT: %d", st)
	}
	tag := hdr.Get("ETag")
	meta := `{"md5":"5d41402abc4b2a76b9719d911017c592","content_type":"text/plain","user":{"a":"b"}}`
	if st, _, body := c.do("PUT", "_kvdb/s3/object/bk1/k", strings.NewReader(meta)); st != 428 {
		t.Fatalf("meta without If-Match: %d %s", st, body)
	}
	if st, _, body := c.do("PUT", "_kvdb/s3/object/bk1/k", strings.NewReader(meta), "If-Match", `"0000000000000000"`); st != 412 {
		t.Fatalf("meta with a wrong If-Match: %d %s", st, body)
	}
	if st, _, body := c.do("PUT", "_kvdb/s3/object/bk1/k", strings.NewReader(meta), "If-Match", tag); st != 200 {
		t.Fatalf("meta: %d %s", st, body)
	}
	info := getInfo(t, c, "bk1/k", "")
	if info.Meta == nil || info.Meta.ContentType != "text/plain" || info.S3ETag() != `"5d41402abc4b2a76b9719d911017c592"` || info.Size != 5 || info.ETag != tag {
		t.Fatalf("info: %+v", info)
	}
	if info := getInfo(t, c, "bk1/k", "?locate"); !strings.HasPrefix(info.Location, "http://") {
		t.Fatalf("no location: %+v", info)
	}
	// A native overwrite leaves the metadata behind: the S3 ETag falls back.
	c.put("bk1/k", "world")
	if info := getInfo(t, c, "bk1/k", ""); info.Meta != nil || info.S3ETag() != info.ETag {
		t.Fatalf("metadata of an older version shown: %+v", info)
	}
	if st, _, body := c.do("DELETE", "_kvdb/s3/object/bk1/k", nil); st != 200 {
		t.Fatalf("delete: %d %s", st, body)
	}
	if st, _ := c.get("bk1/k"); st != 404 {
		t.Fatalf("value left after delete: %d", st)
	}
}

func getInfo(t *testing.T, c *testCluster, key, query string) client.ObjectInfo {
	t.Helper()
	st, _, body := c.do("GET", "_kvdb/s3/object/"+key+query, nil)
	var info client.ObjectInfo
	if st != 200 || json.Unmarshal([]byte(body), &info) != nil {
		t.Fatalf("object %s: %d %s", key, st, body)
	}
	return info
}

func TestS3ListObjects(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	c.do("PUT", "_kvdb/s3/bucket/lbk", nil)
	keys := []string{"a", "b/1", "b/2", "b/3", "c", "d/x/1", "d/y", "e"}
	for _, k := range keys {
		c.put("lbk/"+k, "v")
	}
	c.put("lbkx/other", "v") // another bucket's prefix shares bytes
	list := func(q string) client.ObjectListing {
		st, _, body := c.do("GET", "_kvdb/s3/list/lbk?"+q, nil)
		var l client.ObjectListing
		if st != 200 || json.Unmarshal([]byte(body), &l) != nil {
			t.Fatalf("list %s: %d %s", q, st, body)
		}
		return l
	}
	names := func(l client.ObjectListing) string {
		var s []string
		for _, o := range l.Objects {
			s = append(s, o.Key)
		}
		return fmt.Sprintf("%v %v %v %s", s, l.Prefixes, l.Truncated, l.Next)
	}
	for _, tc := range []struct{ q, want string }{
		{"", "[a b/1 b/2 b/3 c d/x/1 d/y e] [] false "},
		{"delimiter=/", "[a c e] [b/ d/] false "},
		{"delimiter=/&limit=2", "[a] [b/] true b/"},
		{"delimiter=/&limit=2&after=b/", "[c] [d/] true d/"},
		{"delimiter=/&limit=2&after=d/", "[e] [] false "},
		{"prefix=d/&delimiter=/", "[d/y] [d/x/] false "},
		{"prefix=b/&limit=2", "[b/1 b/2] [] true b/2"},
		{"prefix=b/&after=b/2", "[b/3] [] false "},
		{"limit=0", "[] [] false "},
		{"prefix=zz", "[] [] false "},
	} {
		if got := names(list(tc.q)); got != tc.want {
			t.Errorf("list %q: got %s, want %s", tc.q, got, tc.want)
		}
	}
	l := list("prefix=a")
	if !reflect.DeepEqual(len(l.Objects), 1) || l.Objects[0].Size != 1 || l.Objects[0].ETag == "" || l.Objects[0].Modified.IsZero() {
		t.Fatalf("entry: %+v", l.Objects)
	}
}

func TestParseS3Keys(t *testing.T) {
	keys, err := ParseAPIKeys(strings.NewReader("# keys\ns3 AKIDEXAMPLE wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY rw\ns3 RO-KEY secret-secret-secret ro # reader\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].S3 == nil || keys[0].S3.AccessKeyID != "AKIDEXAMPLE" || keys[0].ReadOnly ||
		keys[1].S3 == nil || !keys[1].ReadOnly || keys[0].Token != S3Token("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") {
		t.Fatalf("keys: %+v", keys)
	}
	for _, bad := range []string{
		"s3 AKID secret-secret-secret",                                     // no access
		"s3 AKID short rw",                                                 // secret too short
		"s3 A/B secret-secret-secret rw",                                   // bad access key id
		"s3 AKID secret-secret-secret admin",                               // bad access
		"s3 AKID secret-secret-secret rw extra",                            // too many fields
		"s3 AKID secret-secret-secret\x01xx rw",                            // control character
		"s3 AKID secret-secret-secret rw\ns3 AKID secret-secret-secret ro", // twice
	} {
		if _, err := ParseAPIKeys(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseAPIKeys(%q) accepted", bad)
		}
	}
}

func TestS3TokenOnMaster(t *testing.T) {
	keys, err := ParseAPIKeys(strings.NewReader("s3 AKIDEXAMPLE secret-secret-secret ro\n"))
	if err != nil {
		t.Fatal(err)
	}
	c := newTestClusterWith(t, 2, 2, func(c *testCluster) { c.mcfg.APIKeys = keys })
	if st, _, _ := c.do("GET", "_kvdb/s3/buckets", nil); st != 401 {
		t.Fatalf("no token: got %d, want 401", st)
	}
	c.token = S3Token("AKIDEXAMPLE", "secret-secret-secret")
	if st, _, body := c.do("GET", "_kvdb/s3/buckets", nil); st != 200 {
		t.Fatalf("derived token: got %d (%s), want 200", st, body)
	}
	if st, _, _ := c.do("PUT", "_kvdb/s3/bucket/abc", nil); st != 403 {
		t.Fatalf("read-only S3 key writes: got %d, want 403", st)
	}
}
