package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/kvdb/kvdb/node"
	"github.com/kvdb/kvdb/node/client"
)

// masterMetric reads one series of a master's metrics (0 when absent).
func masterMetric(t *testing.T, addr, token, series string) int64 {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+"/_kvdb/metrics", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("metrics of %s: %v", addr, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("metrics of %s: %d %s", addr, resp.StatusCode, b)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			n, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metrics of %s: %q", addr, line)
			}
			return int64(n)
		}
	}
	return 0
}

const (
	seriesRedirected = `kvdb_redirected_writes_total{role="master"}`
	// The master's request body bytes: what it received itself. A write it
	// redirects sends it no body.
	seriesReqBytes = `kvdb_request_bytes_total{role="master"}`
)

// throughMaster counts what the master of e took: redirected writes and
// request body bytes.
func (e *testEnv) throughMaster(t *testing.T) (redirected, bytes int64) {
	t.Helper()
	tok := ""
	if e.keys != nil {
		tok = node.S3Token(testID, testSecret)
	}
	return masterMetric(t, e.master.Addr(), tok, seriesRedirected), masterMetric(t, e.master.Addr(), tok, seriesReqBytes)
}

// TestMultipartRedirected: the parts of 1 MiB or more of a multipart
// upload (UploadPart and UploadPartCopy) go to the volumes by the
// redirected write path, never through the master, whose request bytes
// grow by the small last part alone; the object reads back whole through
// S3 and the native API. A part that fails its Content-MD5 is refused
// (BadDigest) and leaves no part behind.
func TestMultipartRedirected(t *testing.T) {
	e := newEnv(t, true)
	e.mkBucket(t, "redir")
	c := minio.Core{Client: e.minio(false)}
	ctx := context.Background()
	sizes := []int{5 * mib, 5*mib + 3, 6 * mib, 300 << 10}
	total := 0
	for _, n := range sizes {
		total += n
	}
	data := randBytes(total, 21)
	red0, bytes0 := e.throughMaster(t)
	id, parts := uploadParts(t, c, "redir", "obj", data, sizes, minio.PutObjectOptions{})
	if _, err := c.CompleteMultipartUpload(ctx, "redir", "obj", id, parts, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("complete: %v", err)
	}
	red1, bytes1 := e.throughMaster(t)
	t.Logf("redirected writes: %d; request bytes the master took: %d (parts: %v)", red1-red0, bytes1-bytes0, sizes)
	if red1-red0 != 3 {
		t.Errorf("%d writes redirected, want the 3 parts of 1 MiB or more", red1-red0)
	}
	// The small part (through the master) and the small JSON requests
	// (create, MD5s, complete): nothing of the large parts.
	if got, small := bytes1-bytes0, int64(sizes[3]); got < small || got > small+64<<10 {
		t.Errorf("the master took %d request bytes, want the small part's %d and a few KiB more", got, small)
	}
	obj, err := e.minio(false).GetObject(ctx, "redir", "obj", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || md5hex(got) != md5hex(data) {
		t.Fatalf("GetObject: %d bytes (want %d), %v", len(got), total, err)
	}
	if code, _, body := e.native("GET", "redir/obj", nil); code != 200 || md5hex([]byte(body)) != md5hex(data) {
		t.Fatalf("native GET: %d, %d bytes", code, len(body))
	}

	// UploadPartCopy of 2 MiB: redirected as well.
	id2, err := c.NewMultipartUpload(ctx, "redir", "copied", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	red0, bytes0 = e.throughMaster(t)
	p, err := c.CopyObjectPart(ctx, "redir", "obj", "redir", "copied", id2, 1, 4*mib, 2*mib, nil)
	if err != nil || strings.Trim(p.ETag, `"`) != md5hex(data[4*mib:6*mib]) {
		t.Fatalf("CopyObjectPart = %+v, %v", p, err)
	}
	red1, bytes1 = e.throughMaster(t)
	if red1-red0 != 1 || bytes1-bytes0 > 64<<10 {
		t.Errorf("UploadPartCopy of 2 MiB: %d writes redirected, %d request bytes through the master; want 1 and none of the part", red1-red0, bytes1-bytes0)
	}
	if _, err := c.CompleteMultipartUpload(ctx, "redir", "copied", id2, []minio.CompletePart{p}, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if code, _, body := e.native("GET", "redir/copied", nil); code != 200 || body != string(data[4*mib:6*mib]) {
		t.Fatalf("copied object: %d, %d bytes", code, len(body))
	}

	// A 2 MiB part whose Content-MD5 is of other bytes: the gateway holds
	// its last byte back, the volume never gets it whole, nothing commits.
	id3, err := c.NewMultipartUpload(ctx, "redir", "bad", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	part := data[:2*mib]
	other := md5.Sum(append(bytes.Clone(part[1:]), 0))
	_, err = c.PutObjectPart(ctx, "redir", "bad", id3, 1, bytes.NewReader(part), int64(len(part)), minio.PutObjectPartOptions{Md5Base64: base64.StdEncoding.EncodeToString(other[:])})
	if errCode(err) != "BadDigest" {
		t.Fatalf("part with a wrong Content-MD5: got %v, want BadDigest", err)
	}
	lp, err := c.ListObjectParts(ctx, "redir", "bad", id3, 0, 100)
	if err != nil || len(lp.ObjectParts) != 0 {
		t.Fatalf("ListObjectParts after the refused part: %+v, %v", lp.ObjectParts, err)
	}
	if err := c.AbortMultipartUpload(ctx, "redir", "bad", id3); err != nil {
		t.Fatal(err)
	}
	// obj's 4 parts and copied's 1, and their 2 manifest blobs, on both
	// volumes; no blob of the refused part.
	waitFor(t, 15*time.Second, "the volumes to hold only the objects' parts and manifest blobs", func() bool { return e.volumeKeys() == 2*7 })
}

// TestMultipartRedirectOff: with the master's redirects turned off, parts
// of any size stream through the master (it answers 100 Continue), and
// the upload completes as before.
func TestMultipartRedirectOff(t *testing.T) {
	e := newEnvWith(t, true, 2, func(c *node.MasterConfig) { c.DisableWriteRedirect = true })
	e.mkBucket(t, "off")
	c := minio.Core{Client: e.minio(false)}
	ctx := context.Background()
	sizes := []int{5 * mib, 2 * mib}
	data := randBytes(7*mib, 22)
	red0, bytes0 := e.throughMaster(t)
	id, parts := uploadParts(t, c, "off", "obj", data, sizes, minio.PutObjectOptions{})
	if _, err := c.CompleteMultipartUpload(ctx, "off", "obj", id, parts, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("complete: %v", err)
	}
	red1, bytes1 := e.throughMaster(t)
	if red1 != red0 || bytes1-bytes0 < int64(len(data)) {
		t.Errorf("%d writes redirected and %d request bytes through the master, want none and every part's", red1-red0, bytes1-bytes0)
	}
	if code, _, body := e.native("GET", "off/obj", nil); code != 200 || md5hex([]byte(body)) != md5hex(data) {
		t.Fatalf("native GET: %d, %d bytes", code, len(body))
	}
}

// TestStoreRedirectedFollower: a gateway that asks a master that follows
// gets its 307 to the leader before the body, asks the leader the same
// way, and sends the body to a volume: neither master takes a byte of the
// value or the part.
func TestStoreRedirectedFollower(t *testing.T) {
	dir := t.TempDir()
	label := fmt.Sprintf("s3masters-%d", envSeq.Add(1))
	var masters []*node.Master
	var seeds []string
	for i := 0; i < 3; i++ {
		m, err := node.NewMaster(node.MasterConfig{
			Name: fmt.Sprintf("master%d", i+1), Addr: "127.0.0.1:0", Raft: "127.0.0.1:0",
			Dir: filepath.Join(dir, fmt.Sprintf("master%d", i+1)), Replicas: 2, BootstrapExpect: 3,
			GCInterval: 200 * time.Millisecond, Logger: testLogger(),
			Gossip: node.GossipConfig{Bind: "127.0.0.1:0", Cluster: label, Profile: node.ProfileTest, Join: append([]string(nil), seeds...)},
		})
		if err != nil {
			t.Fatalf("start master %d: %v", i+1, err)
		}
		t.Cleanup(m.Kill)
		masters = append(masters, m)
		seeds = append(seeds, m.GossipAddr())
	}
	for i := 1; i <= 2; i++ {
		v, err := node.NewVolume(node.VolumeConfig{
			Name: fmt.Sprintf("vol%d", i), Addr: "127.0.0.1:0", Dir: filepath.Join(dir, fmt.Sprintf("vol%d", i)),
			Logger: testLogger(),
			Gossip: node.GossipConfig{Bind: "127.0.0.1:0", Cluster: label, Profile: node.ProfileTest, Join: seeds},
		})
		if err != nil {
			t.Fatalf("start volume %d: %v", i, err)
		}
		t.Cleanup(v.Kill)
	}
	var leader, follower *node.Master
	waitFor(t, 30*time.Second, "a leader that sees both volumes, and a follower that knows it", func() bool {
		leader, follower = nil, nil
		for _, m := range masters {
			if m.Leads() {
				leader = m
			}
		}
		for _, m := range masters {
			if m != leader && leader != nil && m.LeaderAddr() == leader.Addr() {
				follower = m
			}
		}
		return leader != nil && follower != nil && leader.LiveVolumes() == 2
	})
	gw, err := New(Config{Addr: "127.0.0.1:0", Master: func() (string, error) { return follower.Addr(), nil }, Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	e := &testEnv{t: t, master: leader, gw: gw, endpoint: gw.Addr()}

	// The bucket and the upload are made on the leader here; the S3 flow
	// through the follower is at the end.
	if st, _, body := e.native("PUT", "_kvdb/s3/bucket/fol", nil); st != 201 {
		t.Fatalf("bucket: %d %s", st, body)
	}
	var up client.Upload
	if st, _, body := e.native("POST", "_kvdb/s3/mp/fol/obj", nil); st != 200 || json.Unmarshal([]byte(body), &up) != nil {
		t.Fatalf("create upload: %d %s", st, body)
	}
	data := randBytes(3*mib, 23)
	counts := func() (red, b int64) {
		for _, m := range masters {
			red += masterMetric(t, m.Addr(), "", seriesRedirected)
			b += masterMetric(t, m.Addr(), "", seriesReqBytes)
		}
		return red, b
	}
	red0, bytes0 := counts()
	var id identity
	noFailure := func() *apiError { return nil }
	if _, aerr := gw.storeRedirected(&id, escapedKey("fol/value"), "fol/value", bytes.NewReader(data), int64(len(data)), noFailure); aerr != nil {
		t.Fatalf("value through a follower: %v", aerr)
	}
	tag, aerr := gw.storeRedirected(&id, uploadPath("fol/obj", up.ID, "part=1"), "fol/obj", bytes.NewReader(data), int64(len(data)), noFailure)
	if aerr != nil || tag == "" {
		t.Fatalf("part through a follower: %q %v", tag, aerr)
	}
	red1, bytes1 := counts()
	if red1-red0 != 2 || bytes1-bytes0 > 64<<10 {
		t.Errorf("%d writes redirected, %d request bytes taken by the masters; want 2 and none of the values", red1-red0, bytes1-bytes0)
	}
	if code, _, body := e.native("GET", "fol/value", nil); code != 200 || body != string(data) {
		t.Fatalf("native GET of the value: %d, %d bytes", code, len(body))
	}

	// A whole S3 flow through the follower: the gateway's requests to the
	// master (bucket, metadata, listing, upload, complete) follow its
	// redirects to the leader.
	c := e.minio(false)
	ctx := context.Background()
	if err := c.MakeBucket(ctx, "fol2", minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("CreateBucket through a follower: %v", err)
	}
	big := randBytes(11*mib, 29)
	if _, err := c.PutObject(ctx, "fol2", "multi", bytes.NewReader(big), int64(len(big)), minio.PutObjectOptions{PartSize: 5 * mib, ContentType: "application/x-test"}); err != nil {
		t.Fatalf("multipart upload through a follower: %v", err)
	}
	if _, err := c.PutObject(ctx, "fol2", "one", bytes.NewReader(data), int64(len(data)), minio.PutObjectOptions{ContentType: "text/x-one"}); err != nil {
		t.Fatalf("PutObject through a follower: %v", err)
	}
	if oi, err := c.StatObject(ctx, "fol2", "one", minio.StatObjectOptions{}); err != nil || oi.ContentType != "text/x-one" || oi.Size != int64(len(data)) {
		t.Fatalf("HeadObject through a follower: %+v, %v", oi, err)
	}
	n := 0
	for oi := range c.ListObjects(ctx, "fol2", minio.ListObjectsOptions{}) {
		if oi.Err != nil {
			t.Fatalf("ListObjects through a follower: %v", oi.Err)
		}
		n++
	}
	if n != 2 {
		t.Fatalf("ListObjects through a follower: %d objects, want 2", n)
	}
	obj, err := c.GetObject(ctx, "fol2", "multi", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("GetObject through a follower: %d bytes, %v", len(got), err)
	}
}
