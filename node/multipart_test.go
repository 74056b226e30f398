package node

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/kvdb/kvdb/node/client"
)

func mpData(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed+1))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// mpUpload uploads parts to key ("BUCKET/KEY", the bucket existing)
// through the master's multipart endpoints, as the S3 gateway does, and
// completes the upload. It returns the upload ID.
func (c *testCluster) mpUpload(key string, parts ...[]byte) string {
	c.t.Helper()
	st, _, body := c.do("POST", "_kvdb/s3/mp/"+key, strings.NewReader(`{"content_type":"text/x-parts"}`))
	var up client.Upload
	if st != 200 || json.Unmarshal([]byte(body), &up) != nil || !validUploadID(up.ID) {
		c.t.Fatalf("create upload: %d %s", st, body)
	}
	var list []client.CompletePart
	for i, p := range parts {
		q := fmt.Sprintf("_kvdb/s3/mp/%s?id=%s&part=%d", key, up.ID, i+1)
		st, h, body := c.do("PUT", q, bytes.NewReader(p))
		if st != 201 {
			c.t.Fatalf("part %d: %d %s", i+1, st, body)
		}
		sum := md5.Sum(p)
		if st, _, body := c.do("POST", q+"&md5="+hex.EncodeToString(sum[:]), nil, "If-Match", h.Get("ETag")); st != 200 {
			c.t.Fatalf("part %d md5: %d %s", i+1, st, body)
		}
		list = append(list, client.CompletePart{Number: i + 1, ETag: hex.EncodeToString(sum[:])})
	}
	b, _ := json.Marshal(list)
	if st, _, body := c.do("POST", "_kvdb/s3/mp/"+key+"?id="+up.ID+"&complete", bytes.NewReader(b)); st != 200 {
		c.t.Fatalf("complete: %d %s", st, body)
	}
	return up.ID
}

// partCount is how many part records the catalog holds (of any upload).
func (c *testCluster) partCount() int {
	n := 0
	if err := c.master.cat.parts("", func([]byte, *Record) bool { n++; return true }); err != nil {
		c.t.Fatal(err)
	}
	return n
}

func (c *testCluster) volumeKeys() int {
	n := 0
	for _, v := range c.vols {
		if v != nil {
			n += v.Keys()
		}
	}
	return n
}

// TestMultipartNative: a multipart value through the native API (GET
// whole and by Range across parts, HEAD, conditional GET), hidden from
// listings and the client API; replaced and deleted natively, its parts
// are removed from the catalog and the volumes.
func TestMultipartNative(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	p1, p2, p3 := mpData(minPartSize, 1), mpData(minPartSize+3, 2), mpData(777, 3)
	whole := append(append(append([]byte(nil), p1...), p2...), p3...)
	id := c.mpUpload("bkt/obj", p1, p2, p3)

	rec, found, err := c.master.lookup([]byte("bkt/obj"))
	if err != nil || !found || rec.Parts != 3 || rec.Size != int64(len(whole)) || len(rec.Replicas) != 0 {
		t.Fatalf("record = %+v, %v, %v", rec, found, err)
	}
	if st, body := c.get("bkt/obj"); st != 200 || !bytes.Equal([]byte(body), whole) {
		t.Fatalf("GET: %d, %d bytes", st, len(body))
	}
	st, h, _ := c.do("HEAD", "bkt/obj", nil)
	tag := h.Get("ETag")
	if st != 200 || h.Get("Content-Length") != fmt.Sprint(len(whole)) || !strings.HasSuffix(tag, `-3"`) || len(tag) != 20 {
		t.Fatalf("HEAD: %d %v", st, h)
	}
	// The Go client (kvdb get) reads it too.
	cl, err := client.NewClient(client.ClientConfig{URL: "http://" + c.master.Addr(), IdleTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	vr, err := cl.Get(context.Background(), "bkt/obj")
	if err != nil {
		t.Fatalf("client Get: %v", err)
	}
	got, err := io.ReadAll(vr)
	vr.Close()
	if err != nil || !bytes.Equal(got, whole) {
		t.Fatalf("client Get: %d bytes, %v", len(got), err)
	}
	if st, _, _ := c.do("GET", "bkt/obj", nil, "If-None-Match", tag); st != 304 {
		t.Fatalf("GET If-None-Match: %d, want 304", st)
	}
	for _, r := range [][2]int{{minPartSize - 1, minPartSize}, {10, len(whole) - 1}, {2*minPartSize + 2, 2*minPartSize + 5}} {
		st, h, body := c.do("GET", "bkt/obj", nil, "Range", fmt.Sprintf("bytes=%d-%d", r[0], r[1]))
		if st != 206 || body != string(whole[r[0]:r[1]+1]) || h.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", r[0], r[1], len(whole)) {
			t.Fatalf("Range %v: %d %q, %d bytes", r, st, h.Get("Content-Range"), len(body))
		}
	}
	if st, _, _ := c.do("GET", "bkt/obj", nil, "Range", fmt.Sprintf("bytes=%d-", len(whole))); st != 416 {
		t.Fatalf("Range past the end: %d, want 416", st)
	}
	// The parts are keys the client can neither see nor touch.
	if _, _, body := c.do("GET", "?list", nil); body != `{"keys":["bkt/obj"],"next":""}`+"\n" {
		t.Fatalf("list: %s", body)
	}
	pk := string(partKey(id, 1))
	for _, path := range []string{pk, "%5F" + pk[1:]} {
		for _, m := range []string{"GET", "PUT", "DELETE"} {
			if st, _, _ := c.do(m, path, strings.NewReader("x")); st != 400 {
				t.Errorf("%s /%s: %d, want 400", m, path, st)
			}
		}
	}
	if n := c.partCount(); n != 3 {
		t.Fatalf("%d parts in the catalog, want 3", n)
	}
	// verify (deep: every copy re-hashed) finds the parts where the
	// catalog says, and the value itself needs no replica.
	// Keys: the value, its 3 parts and its manifest blob.
	rep := c.verify(false, true)
	if rep.Counts != (client.VerifyCounts{}) || rep.UnderReplicated != 0 || rep.Keys != 5 {
		t.Fatalf("verify: %+v", rep)
	}

	// Replaced by a plain value: the parts go, after the move grace.
	c.put("bkt/obj", "plain")
	if st, body := c.get("bkt/obj"); st != 200 || body != "plain" {
		t.Fatalf("after overwrite: %d %q", st, body)
	}
	waitFor(t, 15*time.Second, "the replaced value's parts to go", func() bool { return c.partCount() == 0 })
	waitFor(t, 15*time.Second, "their blobs to leave the volumes", func() bool { return c.volumeKeys() == 2 })

	// Another multipart value, deleted: the same.
	c.mpUpload("bkt/obj2", p1, p3)
	if st, _, body := c.do("DELETE", "bkt/obj2", nil); st != 200 {
		t.Fatalf("DELETE: %d %s", st, body)
	}
	if st, _ := c.get("bkt/obj2"); st != 404 {
		t.Fatalf("GET after DELETE: %d", st)
	}
	waitFor(t, 15*time.Second, "the deleted value's parts to go", func() bool { return c.partCount() == 0 && c.volumeKeys() == 2 })
	if _, found, _ := c.master.cat.getManifest([]byte("bkt/obj2"), 0); found {
		t.Fatal("manifest left behind")
	}
}

// TestMultipartRepair: the parts of a multipart value are ordinary keys
// to placement: when a volume dies, its copies are made again elsewhere,
// and the value reads back whole.
func TestMultipartRepair(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	p1, p2 := mpData(minPartSize, 4), mpData(1000, 5)
	id := c.mpUpload("bkt/obj", p1, p2)
	c.killVolume(0)
	c.waitVolumes(2)
	waitFor(t, 20*time.Second, "every part back to 2 live replicas", func() bool {
		view := c.master.view.Load()
		for n := 1; n <= 2; n++ {
			rec, found, err := c.master.lookup(partKey(id, n))
			if err != nil || !found || liveCount(view, rec.Replicas) < 2 {
				return false
			}
		}
		return true
	})
	if st, body := c.get("bkt/obj"); st != 200 || body != string(p1)+string(p2) {
		t.Fatalf("GET after repair: %d, %d bytes", st, len(body))
	}
}

// TestMultipartUnownedParts: the sweep's full pass removes a part that no
// upload owns (one that landed after its upload was aborted), and leaves
// the parts of uploads under way and of completed values alone.
func TestMultipartUnownedParts(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	c.mpUpload("bkt/done", mpData(100, 6))
	st, _, body := c.do("POST", "_kvdb/s3/mp/bkt/open", nil)
	var open client.Upload
	if st != 200 || json.Unmarshal([]byte(body), &open) != nil {
		t.Fatalf("create: %d %s", st, body)
	}
	if st, _, body := c.do("PUT", "_kvdb/s3/mp/bkt/open?id="+open.ID+"&part=1", strings.NewReader("kept")); st != 201 {
		t.Fatalf("part: %d %s", st, body)
	}
	st, _, body = c.do("POST", "_kvdb/s3/mp/bkt/gone", nil)
	var gone client.Upload
	if st != 200 || json.Unmarshal([]byte(body), &gone) != nil {
		t.Fatalf("create: %d %s", st, body)
	}
	if st, _, body := c.do("PUT", "_kvdb/s3/mp/bkt/gone?id="+gone.ID+"&part=7", strings.NewReader("late")); st != 201 {
		t.Fatalf("part: %d %s", st, body)
	}
	// The upload ends as an abort racing the part would leave it: no
	// upload, the part still there.
	if err := c.master.cat.endUpload([]byte("bkt/gone"), gone.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.master.cat.doneRelease(gone.ID); err != nil {
		t.Fatal(err)
	}
	if n := c.partCount(); n != 3 {
		t.Fatalf("%d parts, want 3", n)
	}
	// A pass "two minutes later" (uploads begun in the last minute are
	// left alone).
	c.master.collectUnownedParts(time.Now().Add(2 * time.Minute))
	if n := c.partCount(); n != 2 {
		t.Fatalf("%d parts after the pass, want 2", n)
	}
	if _, found, _ := c.master.lookup(partKey(gone.ID, 7)); found {
		t.Fatal("the unowned part is still there")
	}
	if _, found, _ := c.master.lookup(partKey(open.ID, 1)); !found {
		t.Fatal("the open upload's part was removed")
	}
	if st, body := c.get("bkt/done"); st != 200 || len(body) != 100 {
		t.Fatalf("completed value: %d, %d bytes", st, len(body))
	}
}

func TestRecordParts(t *testing.T) {
	r := Record{Version: 9, Size: 12 << 20, Checksum: 0xabc, ModTime: time.Unix(3, 0).UTC(), Parts: 3}
	var got Record
	if err := decodeRecord(appendRecord(nil, &r), &got); err != nil || got.Parts != 3 || got.Size != r.Size || len(got.Replicas) != 0 {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	if tag := r.ETag(); tag != `"0000000000000abc-3"` {
		t.Fatalf("ETag = %s", tag)
	}
	// A record without parts decoded into one with parts loses them.
	plain := Record{Version: 1, Size: 1, Replicas: []string{"v"}}
	if err := decodeRecord(appendRecord(nil, &plain), &got); err != nil || got.Parts != 0 {
		t.Fatalf("plain after parts: %+v, %v", got, err)
	}
	if b := appendRecord(nil, &plain); b[0] != recordFormat {
		t.Fatalf("a record without parts is written in format %d", b[0])
	}
}

func FuzzParsePartKey(f *testing.F) {
	f.Add([]byte("_kvdb/mp/0123456789abcdef01234567/00001"))
	f.Add([]byte("_kvdb/mp//1"))
	f.Add([]byte("_kvdb/mp/x/99999"))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, n, ok := parsePartKey(b)
		if !ok {
			return
		}
		if n < 1 || n > maxParts || id == "" {
			t.Fatalf("parsePartKey(%q) = %q, %d", b, id, n)
		}
		if again, m, ok := parsePartKey(partKey(id, n)); !ok || again != id || m != n {
			t.Fatalf("partKey(%q, %d) does not parse back", id, n)
		}
	})
}

// TestPartsStreamFailover: a volume that dies while one of its parts
// streams (here a server that sends part of the bytes and hangs up) is
// replaced mid-part by another replica, from the same byte on.
func TestPartsStreamFailover(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	p1, p2 := mpData(minPartSize+12345, 8), mpData(4321, 9)
	id := c.mpUpload("bkt/obj", p1, p2)
	rec, _, _ := c.master.lookup([]byte("bkt/obj"))
	prec, _, _ := c.master.lookup(partKey(id, 1))
	var streamer *Volume
	var holder string
	for _, v := range c.vols {
		if contains(prec.Replicas, v.Name()) {
			holder = v.httpAddr
		} else {
			streamer = v
		}
	}
	plan, _, err := streamer.fetchPlan([]byte("bkt/obj"), rec.Version)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				br := bufio.NewReader(conn)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				fmt.Fprintf(conn, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", len(p1))
				conn.Write(p1[:1<<20]) // and it dies
			}()
		}
	}()
	plan.Parts[0].Vols = []string{ln.Addr().String(), holder}
	ps := &partsStream{v: streamer, parts: plan.Parts, left: plan.Size}
	var out bytes.Buffer
	bw := bufio.NewWriter(&out)
	n, err := ps.WriteTo(bw)
	bw.Flush()
	ps.Close()
	if err != nil || n != plan.Size || !bytes.Equal(out.Bytes(), append(append([]byte(nil), p1...), p2...)) {
		t.Fatalf("WriteTo: %d of %d bytes, %v; the bytes match: %v", n, plan.Size, err, bytes.Equal(out.Bytes(), append(append([]byte(nil), p1...), p2...)))
	}
}

// TestMultipartSecret: with a cluster secret, the redirect to the volume
// that streams the parts, its request for the manifest and its reads of
// other volumes' parts are all signed.
func TestMultipartSecret(t *testing.T) {
	c := newTestClusterWith(t, 3, 2, func(c *testCluster) { c.mcfg.Secret = []byte("multipart-secret-0123456789") })
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	p1, p2, p3 := mpData(minPartSize, 10), mpData(minPartSize, 11), mpData(10, 12)
	c.mpUpload("bkt/obj", p1, p2, p3)
	whole := string(p1) + string(p2) + string(p3)
	for i := 0; i < 3; i++ { // the master spreads the reads over the volumes
		if st, body := c.get("bkt/obj"); st != 200 || body != whole {
			t.Fatalf("GET: %d, %d bytes", st, len(body))
		}
	}
	st, h, _ := c.do("HEAD", "bkt/obj", nil)
	if st != 200 {
		t.Fatalf("HEAD: %d", st)
	}
	// Unsigned, the volume refuses.
	req, _ := http.NewRequest("GET", "http://"+c.master.Addr()+"/bkt/obj", nil)
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 302 || resp.Header.Get("ETag") != h.Get("ETag") || !strings.Contains(loc, "/_kvdb/parts/bkt/obj?v=") || !strings.Contains(loc, "&s=") {
		t.Fatalf("redirect: %d %q", resp.StatusCode, loc)
	}
	unsigned, _, _ := strings.Cut(loc, "&e=")
	if r, err := http.Get(unsigned); err != nil || r.StatusCode != 403 {
		t.Fatalf("unsigned read of the parts: %v %v", r.StatusCode, err)
	}
}

// TestListUploadsMarkers: ListMultipartUploads' key and upload-ID markers.
func TestListUploadsMarkers(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	var ids []string
	for _, k := range []string{"a", "a", "b", "dir/x", "dir/y"} {
		_, _, body := c.do("POST", "_kvdb/s3/mp/bkt/"+k, nil)
		var up client.Upload
		if err := json.Unmarshal([]byte(body), &up); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, k+" "+up.ID)
	}
	list := func(q string) string {
		_, _, body := c.do("GET", "_kvdb/s3/uploads/bkt?"+q, nil)
		var l client.UploadList
		if err := json.Unmarshal([]byte(body), &l); err != nil {
			t.Fatalf("%s: %s", q, body)
		}
		var s []string
		for _, u := range l.Uploads {
			s = append(s, u.Key+" "+u.ID)
		}
		for _, p := range l.Prefixes {
			s = append(s, p)
		}
		return strings.Join(s, ",") + fmt.Sprintf(" truncated=%v next=%s/%s", l.Truncated, l.NextKey, l.NextID)
	}
	aID, a2ID := strings.Fields(ids[0])[1], strings.Fields(ids[1])[1]
	for _, tc := range []struct{ q, want string }{
		{"", strings.Join(ids, ",") + " truncated=false next=/"},
		{"limit=2", ids[0] + "," + ids[1] + " truncated=true next=a/" + a2ID},
		{"key=a", ids[2] + "," + ids[3] + "," + ids[4] + " truncated=false next=/"},
		{"key=a&id=" + aID, ids[1] + "," + ids[2] + "," + ids[3] + "," + ids[4] + " truncated=false next=/"},
		{"delimiter=/", ids[0] + "," + ids[1] + "," + ids[2] + ",dir/ truncated=false next=/"},
		{"delimiter=/&limit=3", ids[0] + "," + ids[1] + "," + ids[2] + " truncated=true next=b/" + strings.Fields(ids[2])[1]},
		{"prefix=dir/&delimiter=/", ids[3] + "," + ids[4] + " truncated=false next=/"},
	} {
		if got := list(tc.q); got != tc.want {
			t.Errorf("?%s:\n got %s\nwant %s", tc.q, got, tc.want)
		}
	}
}

// TestMultipartDrain: an operator drain moves the parts off a volume like
// any value; the multipart value reads back whole.
func TestMultipartDrain(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	p1, p2 := mpData(minPartSize, 13), mpData(333, 14)
	c.mpUpload("bkt/obj", p1, p2)
	name := c.vols[0].Name()
	resp, err := http.Post("http://"+c.master.Addr()+"/_kvdb/drain/"+name, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	waitFor(t, 30*time.Second, name+" to be drained", func() bool { return c.master.drainStatus(name).Done })
	waitFor(t, 10*time.Second, name+" to hold nothing", func() bool { return c.vols[0].Keys() == 0 })
	if st, body := c.get("bkt/obj"); st != 200 || body != string(p1)+string(p2) {
		t.Fatalf("GET after the drain: %d, %d bytes", st, len(body))
	}
}

// TestMultipartMasterRestart: an upload under way survives a master crash
// (its entry and parts are in the catalog): parts go on after the restart,
// and the upload completes.
func TestMultipartMasterRestart(t *testing.T) {
	c := newTestCluster(t, 2, 2)
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	st, _, body := c.do("POST", "_kvdb/s3/mp/bkt/obj", nil)
	var up client.Upload
	if st != 200 || json.Unmarshal([]byte(body), &up) != nil {
		t.Fatalf("create: %d %s", st, body)
	}
	p1, p2 := mpData(minPartSize, 15), mpData(99, 16)
	var list []client.CompletePart
	putPart := func(n int, p []byte) {
		q := fmt.Sprintf("_kvdb/s3/mp/bkt/obj?id=%s&part=%d", up.ID, n)
		st, h, body := c.do("PUT", q, bytes.NewReader(p))
		if st != 201 {
			t.Fatalf("part %d: %d %s", n, st, body)
		}
		sum := md5.Sum(p)
		if st, _, body := c.do("POST", q+"&md5="+hex.EncodeToString(sum[:]), nil, "If-Match", h.Get("ETag")); st != 200 {
			t.Fatalf("part %d md5: %d %s", n, st, body)
		}
		list = append(list, client.CompletePart{Number: n, ETag: hex.EncodeToString(sum[:])})
	}
	putPart(1, p1)
	c.master.Kill()
	c.startMaster()
	c.waitVolumes(2)
	putPart(2, p2)
	b, _ := json.Marshal(list)
	if st, _, body := c.do("POST", "_kvdb/s3/mp/bkt/obj?id="+up.ID+"&complete", bytes.NewReader(b)); st != 200 {
		t.Fatalf("complete: %d %s", st, body)
	}
	if st, body := c.get("bkt/obj"); st != 200 || body != string(p1)+string(p2) {
		t.Fatalf("GET: %d, %d bytes", st, len(body))
	}
}

// TestRedirectedPart: the write of a part with Expect: 100-continue is
// admitted from its headers (its upload open) and answered 307 to a volume
// with a ticket for the part's key; the volume stores the part and commits.
// An upload aborted or completed between the 307 and the commit refuses
// the part there (404), and what the volume wrote is deleted.
func TestRedirectedPart(t *testing.T) {
	c := newTestClusterWith(t, 3, 2, withSecret)
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	create := func(key string) string {
		t.Helper()
		st, _, body := c.do("POST", "_kvdb/s3/mp/"+key, nil)
		var up client.Upload
		if st != 200 || json.Unmarshal([]byte(body), &up) != nil {
			t.Fatalf("create upload of %s: %d %s", key, st, body)
		}
		return up.ID
	}
	partPath := func(key, id string, n int) string { return fmt.Sprintf("_kvdb/s3/mp/%s?id=%s&part=%d", key, id, n) }
	// record records a part's MD5, as the gateway does once it is stored.
	record := func(key, id string, n int, p []byte, etag string) string {
		t.Helper()
		sum := md5.Sum(p)
		if st, _, body := c.do("POST", partPath(key, id, n)+"&md5="+hex.EncodeToString(sum[:]), nil, "If-Match", etag); st != 200 {
			t.Fatalf("part %d md5: %d %s", n, st, body)
		}
		return hex.EncodeToString(sum[:])
	}
	complete := func(key, id string, list []client.CompletePart) {
		t.Helper()
		b, _ := json.Marshal(list)
		if st, _, body := c.do("POST", "_kvdb/s3/mp/"+key+"?id="+id+"&complete", bytes.NewReader(b)); st != 200 {
			t.Fatalf("complete %s: %d %s", key, st, body)
		}
	}
	noBlobsLeft := func(what string) {
		t.Helper()
		waitFor(t, 15*time.Second, what, func() bool {
			for i := range c.vols {
				if c.staleCopies(i) != 0 {
					return false
				}
			}
			return true
		})
	}

	// Refused before the body.
	id := create("bkt/a")
	for _, tc := range []struct {
		name, path string
		size       int64
		want       int
	}{
		{"unknown upload", partPath("bkt/a", "000000000000000000000000", 1), 10, 404},
		{"malformed upload ID", partPath("bkt/a", "nonsense", 1), 10, 404},
		{"part number 0", partPath("bkt/a", id, 0), 10, 400},
		{"over the maximum size", partPath("bkt/a", id, 1), c.master.cfg.MaxValueSize + 1, 413},
	} {
		if st, loc, body := c.expectWrite(t, "PUT", tc.path, tc.size); st != tc.want || loc != "" {
			t.Errorf("%s: got %d %q (%s), want %d before the body", tc.name, st, loc, strings.TrimSpace(body), tc.want)
		}
	}

	// Admitted: the bytes go to a volume, under the part's key.
	p1 := mpData(100<<10, 1)
	loc := c.ticketURL(t, "PUT", partPath("bkt/a", id, 1), int64(len(p1)))
	if !strings.Contains(loc, "/_kvdb/write/") || !strings.Contains(loc, "mp/"+id+"/00001?") {
		t.Fatalf("Location %q is not a volume's write endpoint for the part's key", loc)
	}
	st, h, body := send(t, "PUT", loc, string(p1))
	if st != 201 {
		t.Fatalf("part to its ticket: %d %s, want 201", st, body)
	}
	rec := c.record(string(partKey(id, 1)))
	if h.Get("ETag") != rec.ETag() || len(rec.Replicas) != 2 || rec.Size != int64(len(p1)) {
		t.Fatalf("part record %+v, ETag %s", rec, h.Get("ETag"))
	}
	complete("bkt/a", id, []client.CompletePart{{Number: 1, ETag: record("bkt/a", id, 1, p1, h.Get("ETag"))}})
	if st, got := c.get("bkt/a"); st != 200 || got != string(p1) {
		t.Fatalf("GET bkt/a: %d, %d bytes", st, len(got))
	}

	// Aborted after the 307: the commit refuses the part.
	id = create("bkt/b")
	loc = c.ticketURL(t, "PUT", partPath("bkt/b", id, 1), int64(len(p1)))
	if st, _, body := c.do("DELETE", "_kvdb/s3/mp/bkt/b?id="+id, nil); st != 200 {
		t.Fatalf("abort: %d %s", st, body)
	}
	if st, _, body := send(t, "PUT", loc, string(p1)); st != 404 {
		t.Fatalf("part of an upload aborted after its 307: %d %s, want 404", st, body)
	}
	n := 0
	_ = c.master.cat.parts(id, func([]byte, *Record) bool { n++; return true })
	if n != 0 {
		t.Fatalf("the aborted upload has %d parts in the catalog, want 0", n)
	}
	noBlobsLeft("the refused part's blobs to be deleted")

	// Completed after the 307 (without that part): refused as well.
	id = create("bkt/c")
	p2 := mpData(300<<10, 2)
	st, h, body = c.do("PUT", partPath("bkt/c", id, 1), bytes.NewReader(p1))
	if st != 201 {
		t.Fatalf("part 1 through the master: %d %s", st, body)
	}
	tag := record("bkt/c", id, 1, p1, h.Get("ETag"))
	loc = c.ticketURL(t, "PUT", partPath("bkt/c", id, 2), int64(len(p2)))
	complete("bkt/c", id, []client.CompletePart{{Number: 1, ETag: tag}})
	if st, _, body := send(t, "PUT", loc, string(p2)); st != 404 {
		t.Fatalf("part of an upload completed after its 307: %d %s, want 404", st, body)
	}
	var prec Record
	if found, _ := c.master.cat.get(partKey(id, 2), &prec); found {
		t.Fatalf("part 2 of the completed upload was recorded: %+v", prec)
	}
	if st, got := c.get("bkt/c"); st != 200 || got != string(p1) {
		t.Fatalf("GET bkt/c: %d, %d bytes", st, len(got))
	}
	noBlobsLeft("the refused part's blobs to be deleted")
}

// blobCopies is how many versions of key the live volumes hold.
func (c *testCluster) blobCopies(key []byte) int {
	c.t.Helper()
	n := 0
	for _, v := range c.vols {
		if v == nil {
			continue
		}
		ms, err := v.store.Versions(key)
		if err != nil {
			c.t.Fatal(err)
		}
		n += len(ms)
	}
	return n
}

// s3Info reads the master's S3 view of key ("BUCKET/KEY").
func (c *testCluster) s3Info(key string) client.ObjectInfo {
	c.t.Helper()
	st, _, body := c.do("GET", "_kvdb/s3/object/"+key, nil)
	var info client.ObjectInfo
	if st != 200 || json.Unmarshal([]byte(body), &info) != nil {
		c.t.Fatalf("object info of %s: %d %s", key, st, body)
	}
	return info
}

// loseMaster kills the master and deletes its directory (--rebuild alone
// would replay the Raft log, which holds the catalog), starts it again and
// waits until it has merged every volume's index and is ready. Buckets
// live in the catalog only: bucket "bkt" is created again.
func (c *testCluster) loseMaster() {
	c.t.Helper()
	c.master.Kill()
	if err := os.RemoveAll(c.mcfg.Dir); err != nil {
		c.t.Fatal(err)
	}
	c.startMaster()
	c.waitVolumes(len(c.vols))
	waitFor(c.t, 15*time.Second, "rebuild of every volume", func() bool {
		settled, _ := c.master.mergesSettled()
		return settled
	})
	waitFor(c.t, 15*time.Second, "master ready", func() bool {
		resp, err := http.Get("http://" + c.master.Addr() + "/_kvdb/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		c.t.Fatalf("bucket after the rebuild: %d %s", st, body)
	}
}

// TestMultipartRebuildSecret: with a cluster secret, the merge's read of a
// manifest blob is signed, and the value comes back.
func TestMultipartRebuildSecret(t *testing.T) {
	c := newTestClusterWith(t, 2, 2, func(c *testCluster) { c.mcfg.Secret = []byte("multipart-secret-0123456789") })
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	p1, p2 := mpData(minPartSize, 31), mpData(17, 32)
	c.mpUpload("bkt/obj", p1, p2)
	c.loseMaster()
	if st, body := c.get("bkt/obj"); st != 200 || body != string(p1)+string(p2) {
		t.Fatalf("GET after the rebuild: %d, %d bytes", st, len(body))
	}
}

// TestMultipartRebuild: a multipart value survives a catalog rebuilt from
// the volumes (--rebuild): its manifest blob brings back its record, its
// manifest and its S3 metadata, and the unowned-parts pass leaves its
// parts alone (and does nothing while a volume is still to be merged).
// Replaced or deleted, the value leaves no manifest blob on any volume.
func TestMultipartRebuild(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	if st, _, body := c.do("PUT", "_kvdb/s3/bucket/bkt", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	p1, p2 := mpData(minPartSize, 21), mpData(4321, 22)
	whole := string(p1) + string(p2)
	id := c.mpUpload("bkt/obj", p1, p2)
	c.put("plain", "v")
	st, h, _ := c.do("HEAD", "bkt/obj", nil)
	tag := h.Get("ETag")
	if st != 200 || tag == "" {
		t.Fatalf("HEAD: %d %v", st, h)
	}
	before := c.s3Info("bkt/obj")
	if before.Meta == nil || before.Meta.ContentType != "text/x-parts" || !strings.HasSuffix(before.Meta.ETag, "-2") {
		t.Fatalf("S3 metadata before: %+v", before.Meta)
	}
	bk, _ := manifestBlobKey([]byte("bkt/obj"))
	if brec, found, err := c.master.lookup(bk); err != nil || !found || len(brec.Replicas) != 2 {
		t.Fatalf("manifest blob record: %+v %v %v", brec, found, err)
	}
	if n := c.blobCopies(bk); n != 2 {
		t.Fatalf("%d copies of the manifest blob, want 2", n)
	}

	c.loseMaster()
	check := func(when string) {
		t.Helper()
		if st, body := c.get("bkt/obj"); st != 200 || body != whole {
			t.Fatalf("GET %s: %d, %d bytes, want %d", when, st, len(body), len(whole))
		}
		st, h, _ := c.do("HEAD", "bkt/obj", nil)
		if st != 200 || h.Get("ETag") != tag || h.Get("Content-Length") != fmt.Sprint(len(whole)) {
			t.Fatalf("HEAD %s: %d ETag %q length %s, want ETag %q length %d", when, st, h.Get("ETag"), h.Get("Content-Length"), tag, len(whole))
		}
		after := c.s3Info("bkt/obj")
		if after.ETag != before.ETag || after.Size != before.Size || after.Meta == nil || !reflect.DeepEqual(after.Meta, before.Meta) {
			t.Fatalf("S3 view %s: %+v meta %+v, want %+v meta %+v", when, after, after.Meta, before, before.Meta)
		}
		if n := c.partCount(); n != 2 {
			t.Fatalf("%s: %d parts in the catalog, want 2", when, n)
		}
	}
	check("after the rebuild")

	// While a volume's index is still being merged, the pass does nothing.
	c.master.mergeMu.Lock()
	c.master.merging["late"] = true
	c.master.mergeMu.Unlock()
	if c.master.collectUnownedParts(time.Now().Add(2 * time.Minute)) {
		t.Fatal("the unowned-parts pass ran during a merge")
	}
	c.master.mergeMu.Lock()
	delete(c.master.merging, "late")
	c.master.mergeMu.Unlock()
	// Once merged, it finds the parts owned ("two minutes later": parts of
	// uploads begun in the last minute are left alone anyway).
	if !c.master.collectUnownedParts(time.Now().Add(2 * time.Minute)) {
		t.Fatal("the unowned-parts pass did not run")
	}
	check("after the unowned-parts pass")
	for n := 1; n <= 2; n++ {
		// (A third copy may be there a moment: placement moving it.)
		if copies := c.blobCopies(partKey(id, n)); copies < 2 {
			t.Fatalf("part %d: %d copies on the volumes, want 2 or more", n, copies)
		}
	}

	// Replaced, the value's blob goes; deleted, another one's too.
	c.put("bkt/obj", "plain now")
	c.mpUpload("bkt/obj2", p2)
	bk2, _ := manifestBlobKey([]byte("bkt/obj2"))
	if n := c.blobCopies(bk2); n < 2 {
		t.Fatalf("%d copies of the second manifest blob, want 2 or more", n)
	}
	if st, _, body := c.do("DELETE", "bkt/obj2", nil); st != 200 {
		t.Fatalf("DELETE: %d %s", st, body)
	}
	waitFor(t, 15*time.Second, "the manifest blobs and the parts to leave the volumes", func() bool {
		return c.blobCopies(bk) == 0 && c.blobCopies(bk2) == 0 && c.partCount() == 0
	})
	for _, k := range [][]byte{bk, bk2} {
		if _, found, _ := c.master.lookup(k); found {
			t.Fatalf("record of %s left behind", k)
		}
	}
	if st, body := c.get("bkt/obj"); st != 200 || body != "plain now" {
		t.Fatalf("GET after the overwrite: %d %q", st, body)
	}
}
