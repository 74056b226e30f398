package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cespare/xxhash/v2"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/kvdb/kvdb/node"
	"github.com/kvdb/kvdb/node/client"
)

const mib = 1 << 20

// multipartETag is the ETag S3 gives an object made of parts.
func multipartETag(parts ...[]byte) string {
	var sums []byte
	for _, p := range parts {
		s := md5.Sum(p)
		sums = append(sums, s[:]...)
	}
	s := md5.Sum(sums)
	return hex.EncodeToString(s[:]) + "-" + strconv.Itoa(len(parts))
}

// uploadParts uploads data in parts of the given sizes to a new upload
// and returns the upload ID and the parts to complete with.
func uploadParts(t *testing.T, c minio.Core, bucket, key string, data []byte, sizes []int, opts minio.PutObjectOptions) (string, []minio.CompletePart) {
	t.Helper()
	ctx := context.Background()
	id, err := c.NewMultipartUpload(ctx, bucket, key, opts)
	if err != nil {
		t.Fatalf("NewMultipartUpload: %v", err)
	}
	var parts []minio.CompletePart
	off := 0
	for i, n := range sizes {
		p, err := c.PutObjectPart(ctx, bucket, key, id, i+1, bytes.NewReader(data[off:off+n]), int64(n), minio.PutObjectPartOptions{})
		if err != nil {
			t.Fatalf("PutObjectPart %d: %v", i+1, err)
		}
		if want := md5hex(data[off : off+n]); strings.Trim(p.ETag, `"`) != want {
			t.Fatalf("part %d ETag %s, want %s", i+1, p.ETag, want)
		}
		parts = append(parts, minio.CompletePart{PartNumber: i + 1, ETag: p.ETag})
		off += n
	}
	return id, parts
}

// TestMinioMultipart: a multipart upload with minio-go (3 parts of 5 MiB
// and a tail), read back whole, by part and by range, through S3 and the
// native API; ListParts and ListMultipartUploads along the way.
func TestMinioMultipart(t *testing.T) {
	e := newEnv(t, true)
	e.mkBucket(t, "mpb")
	c := minio.Core{Client: e.minio(false)}
	ctx := context.Background()
	sizes := []int{5 * mib, 5 * mib, 5 * mib, 1234567}
	total := 0
	for _, n := range sizes {
		total += n
	}
	data := randBytes(total, 14)
	opts := minio.PutObjectOptions{ContentType: "application/x-test", UserMetadata: map[string]string{"Colour": "blue"}}
	id, parts := uploadParts(t, c, "mpb", "big/object.bin", data, sizes, opts)

	lp, err := c.ListObjectParts(ctx, "mpb", "big/object.bin", id, 0, 2)
	if err != nil || len(lp.ObjectParts) != 2 || !lp.IsTruncated || lp.ObjectParts[1].PartNumber != 2 || lp.ObjectParts[0].Size != 5*mib {
		t.Fatalf("ListObjectParts page 1 = %+v, %v", lp, err)
	}
	lp, err = c.ListObjectParts(ctx, "mpb", "big/object.bin", id, lp.NextPartNumberMarker, 10)
	if err != nil || len(lp.ObjectParts) != 2 || lp.IsTruncated || lp.ObjectParts[1].PartNumber != 4 || lp.ObjectParts[1].Size != 1234567 {
		t.Fatalf("ListObjectParts page 2 = %+v, %v", lp, err)
	}
	ups, err := c.ListMultipartUploads(ctx, "mpb", "big/", "", "", "", 100)
	if err != nil || len(ups.Uploads) != 1 || ups.Uploads[0].UploadID != id || ups.Uploads[0].Key != "big/object.bin" {
		t.Fatalf("ListMultipartUploads = %+v, %v", ups, err)
	}
	if ups, err := c.ListMultipartUploads(ctx, "mpb", "", "", "", "/", 100); err != nil || len(ups.CommonPrefixes) != 1 || ups.CommonPrefixes[0].Prefix != "big/" {
		t.Fatalf("ListMultipartUploads with a delimiter = %+v, %v", ups, err)
	}

	info, err := c.CompleteMultipartUpload(ctx, "mpb", "big/object.bin", id, parts, minio.PutObjectOptions{})
	want := multipartETag(data[:5*mib], data[5*mib:10*mib], data[10*mib:15*mib], data[15*mib:])
	if err != nil || strings.Trim(info.ETag, `"`) != want {
		t.Fatalf("CompleteMultipartUpload = %+v, %v; want ETag %s", info, err, want)
	}
	if ups, err := c.ListMultipartUploads(ctx, "mpb", "", "", "", "", 100); err != nil || len(ups.Uploads) != 0 {
		t.Fatalf("ListMultipartUploads after complete = %+v, %v", ups, err)
	}

	// Whole, checked by hash.
	obj, err := e.minio(false).GetObject(ctx, "mpb", "big/object.bin", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || md5hex(got) != md5hex(data) {
		t.Fatalf("GetObject: %d bytes (want %d), %v", len(got), len(data), err)
	}
	st, err := e.minio(false).StatObject(ctx, "mpb", "big/object.bin", minio.StatObjectOptions{})
	if err != nil || st.Size != int64(total) || strings.Trim(st.ETag, `"`) != want || st.ContentType != "application/x-test" || st.UserMetadata["Colour"] != "blue" {
		t.Fatalf("StatObject = %+v, %v", st, err)
	}
	// One part, with the part count.
	rc, _, hdr, err := c.GetObject(ctx, "mpb", "big/object.bin", minio.GetObjectOptions{PartNumber: 2})
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, data[5*mib:10*mib]) || hdr.Get("X-Amz-Mp-Parts-Count") != "4" {
		t.Fatalf("GetObject part 2: %d bytes, parts count %q", len(got), hdr.Get("X-Amz-Mp-Parts-Count"))
	}
	if st, err := e.minio(false).StatObject(ctx, "mpb", "big/object.bin", minio.StatObjectOptions{PartNumber: 4}); err != nil || st.Size != 1234567 {
		t.Fatalf("HeadObject part 4: %+v, %v", st, err)
	}
	if _, _, _, err := c.GetObject(ctx, "mpb", "big/object.bin", minio.GetObjectOptions{PartNumber: 5}); errCode(err) != "InvalidPartNumber" {
		t.Fatalf("GetObject part 5: got %v, want InvalidPartNumber", err)
	}
	// A range across the boundary of parts 1 and 2, and one over three parts.
	for _, r := range [][2]int{{5*mib - 100, 5*mib + 99}, {mib, 12 * mib}, {total - 10, total - 1}} {
		o := minio.GetObjectOptions{}
		_ = o.SetRange(int64(r[0]), int64(r[1]))
		rc, _, _, err := c.GetObject(ctx, "mpb", "big/object.bin", o)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Equal(got, data[r[0]:r[1]+1]) {
			t.Fatalf("range %v: got %d bytes, not the right ones", r, len(got))
		}
	}

	// The native API: GET follows the 302 to a volume that streams the
	// parts; HEAD has the size; Range spans a part boundary.
	code, h, body := e.native("GET", "mpb/big/object.bin", nil)
	if code != 200 || md5hex([]byte(body)) != md5hex(data) || h.Get("Etag") == "" {
		t.Fatalf("native GET: %d, %d bytes, ETag %q", code, len(body), h.Get("Etag"))
	}
	code, h, _ = e.native("HEAD", "mpb/big/object.bin", nil)
	if code != 200 || h.Get("Content-Length") != strconv.Itoa(total) || !strings.HasSuffix(h.Get("Etag"), `-4"`) {
		t.Fatalf("native HEAD: %d, %v", code, h)
	}
	req, _ := http.NewRequest("GET", "http://"+e.master.Addr()+"/mpb/big/object.bin", nil)
	req.Header.Set("Authorization", "Bearer "+node.S3Token(testID, testSecret))
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", 10*mib-3, 10*mib+2))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || !bytes.Equal(got, data[10*mib-3:10*mib+3]) ||
		resp.Header.Get("Content-Range") != fmt.Sprintf("bytes %d-%d/%d", 10*mib-3, 10*mib+2, total) {
		t.Fatalf("native Range: %d %q %x", resp.StatusCode, resp.Header.Get("Content-Range"), got)
	}
	// No listing shows the parts.
	code, _, body = e.native("GET", "?list", nil)
	if code != 200 || strings.Contains(body, "_kvdb") || !strings.Contains(body, "mpb/big/object.bin") {
		t.Fatalf("native list: %d %s", code, body)
	}
	res := e.minio(false).ListObjects(ctx, "mpb", minio.ListObjectsOptions{Recursive: true})
	var keys []string
	for o := range res {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key+" "+strconv.FormatInt(o.Size, 10)+" "+o.ETag)
	}
	if len(keys) != 1 || keys[0] != "big/object.bin "+strconv.Itoa(total)+" "+want {
		t.Fatalf("ListObjects = %q", keys)
	}

	// Its metadata replaced in place: no byte moves, the ETag stays. A copy
	// to another key is one value, whose ETag is its MD5.
	mc := e.minio(false)
	if _, err := mc.CopyObject(ctx, minio.CopyDestOptions{Bucket: "mpb", Object: "big/object.bin", ReplaceMetadata: true, UserMetadata: map[string]string{"Colour": "red"}},
		minio.CopySrcOptions{Bucket: "mpb", Object: "big/object.bin"}); err != nil {
		t.Fatal(err)
	}
	if st, err := mc.StatObject(ctx, "mpb", "big/object.bin", minio.StatObjectOptions{}); err != nil || strings.Trim(st.ETag, `"`) != want || st.UserMetadata["Colour"] != "red" {
		t.Fatalf("after a metadata copy: %+v, %v", st, err)
	}
	if _, err := mc.CopyObject(ctx, minio.CopyDestOptions{Bucket: "mpb", Object: "flat.bin"}, minio.CopySrcOptions{Bucket: "mpb", Object: "big/object.bin"}); err != nil {
		t.Fatal(err)
	}
	if st, err := mc.StatObject(ctx, "mpb", "flat.bin", minio.StatObjectOptions{}); err != nil || strings.Trim(st.ETag, `"`) != md5hex(data) || st.Size != int64(total) {
		t.Fatalf("copy of a multipart object: %+v, %v", st, err)
	}
	if err := mc.RemoveObject(ctx, "mpb", "flat.bin", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}

	// UploadPartCopy: a range of the object, then a whole small object.
	if _, err := e.minio(false).PutObject(ctx, "mpb", "small", strings.NewReader("tail"), 4, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	id2, err := c.NewMultipartUpload(ctx, "mpb", "copied", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p1, err := c.CopyObjectPart(ctx, "mpb", "big/object.bin", "mpb", "copied", id2, 1, 3*mib, 6*mib, nil)
	if err != nil || strings.Trim(p1.ETag, `"`) != md5hex(data[3*mib:9*mib]) {
		t.Fatalf("CopyObjectPart 1 = %+v, %v", p1, err)
	}
	p2, err := c.CopyObjectPart(ctx, "mpb", "small", "mpb", "copied", id2, 2, 0, -1, nil)
	if err != nil || strings.Trim(p2.ETag, `"`) != md5hex([]byte("tail")) {
		t.Fatalf("CopyObjectPart 2 = %+v, %v", p2, err)
	}
	if _, err := c.CompleteMultipartUpload(ctx, "mpb", "copied", id2, []minio.CompletePart{p1, p2}, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	code, _, body = e.native("GET", "mpb/copied", nil)
	if code != 200 || body != string(data[3*mib:9*mib])+"tail" {
		t.Fatalf("copied object: %d, %d bytes", code, len(body))
	}

	// Overwritten by a PutObject, then deleted: plain values again.
	if _, err := e.minio(false).PutObject(ctx, "mpb", "copied", strings.NewReader("plain"), 5, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if code, _, body := e.native("GET", "mpb/copied", nil); code != 200 || body != "plain" {
		t.Fatalf("after overwrite: %d %q", code, body)
	}
	if err := e.minio(false).RemoveObject(ctx, "mpb", "big/object.bin", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := e.native("GET", "mpb/big/object.bin", nil); code != 404 {
		t.Fatalf("after delete: %d", code)
	}
}

// TestMinioMultipartErrors: the errors S3 answers on multipart uploads,
// and an abort that leaves no part behind.
func TestMinioMultipartErrors(t *testing.T) {
	// Values (so parts) of at most 6 MiB: the 10 MiB object is larger.
	e := newEnvWith(t, true, 2, func(c *node.MasterConfig) { c.MaxValueSize = 6 * mib })
	e.mkBucket(t, "mperr")
	c := minio.Core{Client: e.minio(false)}
	ctx := context.Background()
	data := randBytes(11*mib, 7)
	id, parts := uploadParts(t, c, "mperr", "k", data, []int{mib, 5 * mib, 5 * mib}, minio.PutObjectOptions{})

	complete := func(ps []minio.CompletePart) error {
		_, err := c.CompleteMultipartUpload(ctx, "mperr", "k", id, ps, minio.PutObjectOptions{})
		return err
	}
	for _, tc := range []struct {
		name  string
		parts []minio.CompletePart
		want  string
	}{
		{"small part not last", parts, "EntityTooSmall"},
		{"wrong ETag", []minio.CompletePart{parts[1], {PartNumber: 3, ETag: `"00000000000000000000000000000000"`}}, "InvalidPart"},
		{"missing part", []minio.CompletePart{parts[1], {PartNumber: 9, ETag: parts[2].ETag}}, "InvalidPart"},
		{"out of order", []minio.CompletePart{parts[2], parts[1]}, "InvalidPartOrder"},
	} {
		if err := complete(tc.parts); errCode(err) != tc.want {
			t.Errorf("%s: got %v, want %s", tc.name, err, tc.want)
		}
	}
	if _, err := c.CompleteMultipartUpload(ctx, "mperr", "k", "000000000000000000000000", parts[1:], minio.PutObjectOptions{}); errCode(err) != "NoSuchUpload" {
		t.Errorf("complete of an unknown upload: got %v, want NoSuchUpload", err)
	}
	if _, err := c.PutObjectPart(ctx, "mperr", "k", "nonsense", 1, strings.NewReader("x"), 1, minio.PutObjectPartOptions{}); errCode(err) != "NoSuchUpload" {
		t.Errorf("part of an unknown upload: got %v, want NoSuchUpload", err)
	}
	if _, err := c.PutObjectPart(ctx, "mperr", "k", "000000000000000000000000", 1, bytes.NewReader(data), int64(len(data)), minio.PutObjectPartOptions{}); errCode(err) != "NoSuchUpload" {
		t.Errorf("11 MiB part of an unknown upload: got %v, want NoSuchUpload", err)
	}
	if _, err := c.PutObjectPart(ctx, "mperr", "k", id, 4, bytes.NewReader(data[:7*mib]), 7*mib, minio.PutObjectPartOptions{}); errCode(err) != "EntityTooLarge" {
		t.Errorf("a part over the master's --max-size: got %v, want EntityTooLarge", err)
	}
	// The failed completes left the upload open: parts 2 and 3 complete it
	// (unquoted ETags are fine), into an object over --max-size.
	ok := []minio.CompletePart{{PartNumber: 2, ETag: strings.Trim(parts[1].ETag, `"`)}, parts[2]}
	if err := complete(ok); err != nil {
		t.Fatalf("complete: %v", err)
	}
	if code, _, body := e.native("GET", "mperr/k", nil); code != 200 || md5hex([]byte(body)) != md5hex(data[mib:]) {
		t.Fatalf("completed object: %d, %d bytes", code, len(body))
	}
	if err := complete(ok); errCode(err) != "NoSuchUpload" {
		t.Errorf("second complete: got %v, want NoSuchUpload", err)
	}

	// Abort: the upload and its parts are gone.
	id2, _ := uploadParts(t, c, "mperr", "k2", data, []int{5 * mib, 5 * mib}, minio.PutObjectOptions{})
	if err := c.AbortMultipartUpload(ctx, "mperr", "k2", id2); err != nil {
		t.Fatal(err)
	}
	if _, err := c.ListObjectParts(ctx, "mperr", "k2", id2, 0, 100); errCode(err) != "NoSuchUpload" {
		t.Fatalf("ListObjectParts after abort: got %v, want NoSuchUpload", err)
	}
	if err := c.AbortMultipartUpload(ctx, "mperr", "k2", id2); errCode(err) != "NoSuchUpload" {
		t.Fatalf("second abort: got %v, want NoSuchUpload", err)
	}
	// The object k holds 2 parts (the unlisted part 1 was removed at the
	// complete) and its manifest blob; k2 none. Each is on both volumes.
	waitFor(t, 10*time.Second, "the volumes to hold only k's 2 parts and manifest blob", func() bool {
		return e.volumeKeys() == 2*3
	})
}

// volumeKeys is the number of blobs on every volume, summed.
func (e *testEnv) volumeKeys() int {
	n := 0
	for _, v := range e.vols {
		n += v.Keys()
	}
	return n
}

// TestMultipartVolumeKilled: a volume is killed (no goodbye) while a part
// of a multipart upload streams to it; the part is stored on the others
// (or retried, as S3 clients do), the upload goes on and completes, and the
// object reads back whole.
func TestMultipartVolumeKilled(t *testing.T) {
	e := newEnvWith(t, true, 3, nil)
	e.mkBucket(t, "kill")
	// The test retries a failed part itself, with a fresh reader:
	// minio-go's own retry seeks the reader of a part the gateway answered
	// before reading it whole, while net/http may still be reading it (a
	// race in the client that -race reports).
	mc, err := minio.New(e.endpoint, &minio.Options{Creds: credentials.NewStaticV4(testID, testSecret, ""), Region: "us-east-1", MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	c := minio.Core{Client: mc}
	ctx := context.Background()
	data := randBytes(16*mib, 3)
	sizes := []int{6 * mib, 6 * mib, 4 * mib}
	id, err := c.NewMultipartUpload(ctx, "kill", "obj", minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var parts []minio.CompletePart
	off := 0
	var once sync.Once
	for i, n := range sizes {
		var p minio.ObjectPart
		// A part in flight to the killed volume may fail; S3 clients retry
		// a part.
		for try := 0; try < 5; try++ {
			var r io.Reader = bytes.NewReader(data[off : off+n])
			if i == 1 {
				// The volume dies once 2 MiB of part 2 have been sent.
				r = &killingReader{r: r, after: 2 * mib, kill: func() { once.Do(e.vols[0].Kill) }}
			}
			if p, err = c.PutObjectPart(ctx, "kill", "obj", id, i+1, r, int64(n), minio.PutObjectPartOptions{}); err == nil {
				break
			}
			t.Logf("part %d, try %d: %v", i+1, try+1, err)
		}
		if err != nil {
			t.Fatalf("part %d: %v", i+1, err)
		}
		parts = append(parts, minio.CompletePart{PartNumber: i + 1, ETag: p.ETag})
		off += n
	}
	if _, err := c.CompleteMultipartUpload(ctx, "kill", "obj", id, parts, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("complete: %v", err)
	}
	obj, err := e.minio(false).GetObject(ctx, "kill", "obj", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	obj.Close()
	if err != nil || md5hex(got) != md5hex(data) {
		t.Fatalf("read back: %d bytes, %v", len(got), err)
	}
	if code, _, body := e.native("GET", "kill/obj", nil); code != 200 || md5hex([]byte(body)) != md5hex(data) {
		t.Fatalf("native read back: %d, %d bytes", code, len(body))
	}
}

// killingReader calls kill once after bytes have been read.
type killingReader struct {
	r     io.Reader
	after int
	n     int
	kill  func()
}

func (k *killingReader) Read(p []byte) (int, error) {
	if k.n >= k.after {
		k.kill()
	}
	n, err := k.r.Read(p)
	k.n += n
	return n, err
}

// TestMultipartAbandonedCleanup: an upload neither completed nor aborted
// is aborted once older than the master's UploadMaxAge, and its parts
// deleted from the volumes.
func TestMultipartAbandonedCleanup(t *testing.T) {
	e := newEnvWith(t, true, 2, func(c *node.MasterConfig) { c.UploadMaxAge = 2 * time.Second })
	e.mkBucket(t, "old")
	c := minio.Core{Client: e.minio(false)}
	ctx := context.Background()
	id, _ := uploadParts(t, c, "old", "forgotten", randBytes(2*mib, 5), []int{mib, mib}, minio.PutObjectOptions{})
	if n := e.volumeKeys(); n != 4 {
		t.Fatalf("volumes hold %d blobs, want 4 (2 parts, 2 replicas)", n)
	}
	waitFor(t, 20*time.Second, "the abandoned upload to go", func() bool {
		_, err := c.ListObjectParts(ctx, "old", "forgotten", id, 0, 10)
		return errCode(err) == "NoSuchUpload"
	})
	waitFor(t, 10*time.Second, "its parts to leave the volumes", func() bool { return e.volumeKeys() == 0 })
}

func TestParseComplete(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want string // parts as "N:ETAG,..." or the error code
	}{
		{`<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"a"</ETag></Part><Part><PartNumber> 2 </PartNumber><ETag>b</ETag></Part></CompleteMultipartUpload>`, `1:"a",2:b`},
		{`<CompleteMultipartUpload xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Part><ETag>x</ETag><PartNumber>3</PartNumber></Part></CompleteMultipartUpload>`, `3:x`},
		{`<CompleteMultipartUpload></CompleteMultipartUpload>`, "MalformedXML"},
		{`<CompleteMultipartUpload><Part><PartNumber>one</PartNumber></Part></CompleteMultipartUpload>`, "MalformedXML"},
		{`<CompleteMultipartUpload><Part><PartNumber>0</PartNumber></Part></CompleteMultipartUpload>`, "InvalidArgument"},
		{`<CompleteMultipartUpload><Part><PartNumber>10001</PartNumber></Part></CompleteMultipartUpload>`, "InvalidArgument"},
		{`<Other/>`, "MalformedXML"},
		{`not xml`, "MalformedXML"},
	} {
		parts, aerr := parseComplete([]byte(tc.doc))
		got := ""
		if aerr != nil {
			got = aerr.code
		} else {
			var s []string
			for _, p := range parts {
				s = append(s, fmt.Sprintf("%d:%s", p.Number, p.ETag))
			}
			got = strings.Join(s, ",")
		}
		if got != tc.want {
			t.Errorf("parseComplete(%s) = %s, want %s", tc.doc, got, tc.want)
		}
	}
}

func TestCopySourceRange(t *testing.T) {
	for _, tc := range []struct {
		v             string
		size          int64
		start, length int64
		code          string
	}{
		{"", 10, 0, 10, ""},
		{"bytes=0-9", 10, 0, 10, ""},
		{"bytes=3-3", 10, 3, 1, ""},
		{"bytes=3-10", 10, 0, 0, "InvalidRange"},
		{"bytes=5-4", 10, 0, 0, "InvalidArgument"},
		{"bytes=-4", 10, 0, 0, "InvalidArgument"},
		{"bytes=4-", 10, 0, 0, "InvalidArgument"},
		{"4-5", 10, 0, 0, "InvalidArgument"},
	} {
		start, length, aerr := copySourceRange([]byte(tc.v), tc.size)
		code := ""
		if aerr != nil {
			code = aerr.code
		}
		if code != tc.code || aerr == nil && (start != tc.start || length != tc.length) {
			t.Errorf("copySourceRange(%q, %d) = %d, %d, %s; want %d, %d, %s", tc.v, tc.size, start, length, code, tc.start, tc.length, tc.code)
		}
	}
}

func FuzzParseComplete(f *testing.F) {
	f.Add([]byte(`<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"a"</ETag></Part></CompleteMultipartUpload>`))
	f.Add([]byte(`<CompleteMultipartUpload><Part><PartNumber>2</PartNumber><ETag>b</ETag></Part><Part><PartNumber>1</PartNumber></Part></CompleteMultipartUpload>`))
	f.Add([]byte(`<CompleteMultipartUpload/>`))
	f.Fuzz(func(t *testing.T, doc []byte) {
		parts, aerr := parseComplete(doc)
		if aerr != nil {
			if parts != nil {
				t.Fatal("parts with an error")
			}
			return
		}
		if len(parts) == 0 || len(parts) > 10000 {
			t.Fatalf("%d parts", len(parts))
		}
		for _, p := range parts {
			if p.Number < 1 || p.Number > 10000 {
				t.Fatalf("part number %d", p.Number)
			}
		}
	})
}

func FuzzCopySourceRange(f *testing.F) {
	f.Add([]byte("bytes=0-9"), int64(10))
	f.Add([]byte("bytes=9223372036854775806-9223372036854775807"), int64(1<<62))
	f.Fuzz(func(t *testing.T, v []byte, size int64) {
		if size < 0 {
			return
		}
		start, length, aerr := copySourceRange(v, size)
		if aerr == nil && (start < 0 || length < 0 || start+length > size) {
			t.Fatalf("copySourceRange(%q, %d) = %d, %d", v, size, start, length)
		}
	})
}

// fileMD5 is the MD5 of a file, streamed.
func fileMD5(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := md5.New()
	if _, err := io.Copy(h, f); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// writeRandomFile writes size pseudo-random bytes to path, streamed.
func writeRandomFile(t *testing.T, path string, size int64, seed uint64) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(seed, seed))
	buf := make([]byte, 1<<20)
	for left := size; left > 0; left -= int64(len(buf)) {
		for i := 0; i < len(buf); i += 8 {
			binary.LittleEndian.PutUint64(buf[i:], r.Uint64())
		}
		if _, err := f.Write(buf[:min(int64(len(buf)), left)]); err != nil {
			t.Fatal(err)
		}
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// awsMultipart copies a file of size bytes up with aws s3 cp (multipart in
// parts of chunk), checks the ETag's part count, copies it down and
// compares hashes; the object also reads back with the native API.
func awsMultipart(t *testing.T, size int64, chunk string, wantParts int) {
	e := newEnv(t, true)
	if chunk != "" {
		e.awsConfig = "[default]\ns3 =\n    multipart_threshold = 8MB\n    multipart_chunksize = " + chunk + "\n"
	}
	e.mkBucket(t, "awsmp")
	dir := t.TempDir()
	src, dst := filepath.Join(dir, "up.bin"), filepath.Join(dir, "down.bin")
	writeRandomFile(t, src, size, uint64(size))
	want := fileMD5(t, src)
	start := time.Now()
	e.aws(t, "s3", "cp", src, "s3://awsmp/big.bin")
	up := time.Since(start)
	out := e.aws(t, "s3api", "head-object", "--bucket", "awsmp", "--key", "big.bin")
	if !strings.Contains(out, fmt.Sprintf(`-%d\"`, wantParts)) || !strings.Contains(out, strconv.FormatInt(size, 10)) {
		t.Fatalf("head-object: want %d parts and %d bytes:\n%s", wantParts, size, out)
	}
	start = time.Now()
	e.aws(t, "s3", "cp", "s3://awsmp/big.bin", dst)
	down := time.Since(start)
	if got := fileMD5(t, dst); got != want {
		t.Fatalf("downloaded MD5 %s, uploaded %s", got, want)
	}
	t.Logf("%d MiB in %d parts: up %v (%.0f MiB/s), down %v (%.0f MiB/s)", size>>20, wantParts,
		up.Round(time.Millisecond), float64(size>>20)/up.Seconds(), down.Round(time.Millisecond), float64(size>>20)/down.Seconds())
	if size <= 64<<20 {
		if code, _, body := e.native("GET", "awsmp/big.bin", nil); code != 200 || md5hex([]byte(body)) != want {
			t.Fatalf("native GET: %d, %d bytes", code, len(body))
		}
	}
	if _, err := exec.LookPath("curl"); err == nil && size <= 64<<20 {
		// curl -L, whole and a range across the first part boundary.
		u := "http://" + e.master.Addr() + "/awsmp/big.bin"
		auth := "Authorization: Bearer " + node.S3Token(testID, testSecret)
		e.run(t, "curl", "-sfL", "-H", auth, "-o", dst, u)
		if got := fileMD5(t, dst); got != want {
			t.Fatalf("curl -L: MD5 %s, want %s", got, want)
		}
		e.run(t, "curl", "-sfL", "-H", auth, "-r", fmt.Sprintf("%d-%d", 5<<20-8, 5<<20+7), "-o", dst, u)
		got, _ := os.ReadFile(dst)
		f, _ := os.Open(src)
		wantRange := make([]byte, 16)
		_, _ = f.ReadAt(wantRange, 5<<20-8)
		f.Close()
		if !bytes.Equal(got, wantRange) {
			t.Fatalf("curl -L -r: %x, want %x", got, wantRange)
		}
	}
}

// TestAWSMultipart: aws s3 cp of 40 MiB in 5 MB parts, up and down.
func TestAWSMultipart(t *testing.T) {
	need(t, "aws")
	awsMultipart(t, 40<<20, "5MB", 8)
}

// TestAWSMultipart1GiB: aws s3 cp of 1 GiB with the default 8 MB parts
// (128 of them), up and down, checked by hash. It takes a while and 2 GiB
// of temporary disk: it runs only with KVDB_TEST_1GIB=1.
func TestAWSMultipart1GiB(t *testing.T) {
	if os.Getenv("KVDB_TEST_1GIB") == "" {
		t.Skip("set KVDB_TEST_1GIB=1 to run the 1 GiB aws cli multipart test")
	}
	need(t, "aws")
	awsMultipart(t, 1<<30, "", 128)
}

func TestPartCheck(t *testing.T) {
	parts := [][]byte{randBytes(10, 1), randBytes(5, 2), randBytes(7, 3)}
	var sums []client.PartSum
	var whole []byte
	for _, p := range parts {
		sums = append(sums, client.PartSum{Size: int64(len(p)), Sum: xxhash.Sum64(p)})
		whole = append(whole, p...)
	}
	feed := func(c *partCheck, b []byte, chunk int) bool {
		for len(b) > 0 {
			k := min(chunk, len(b))
			if !c.see(b[:k]) {
				return false
			}
			b = b[k:]
		}
		return true
	}
	for chunk := 1; chunk <= len(whole); chunk++ {
		if !feed(newPartCheck(sums, 0), whole, chunk) {
			t.Fatalf("chunks of %d: the right bytes fail", chunk)
		}
		bad := bytes.Clone(whole)
		bad[12]++ // in part 2
		if feed(newPartCheck(sums, 0), bad, chunk) {
			t.Fatalf("chunks of %d: a changed byte passes", chunk)
		}
		// From offset 3: part 1 is partial, not checked; part 2 is.
		bad = bytes.Clone(whole[3:])
		bad[0]++
		if !feed(newPartCheck(sums, 3), bad, chunk) {
			t.Fatalf("chunks of %d: a partial part was checked", chunk)
		}
		bad[12-3]++
		if feed(newPartCheck(sums, 3), bad, chunk) {
			t.Fatalf("chunks of %d: a changed byte in a whole part passes from offset 3", chunk)
		}
	}
	if newPartCheck(nil, 0) != nil {
		t.Fatal("a check without sums")
	}
}

// TestRcloneMultipart: rclone uploads a file above its cutoff in parts
// (keeping the file's MD5 as X-Amz-Meta-Md5chksum at CreateMultipartUpload,
// since a multipart ETag is not an MD5), and rclone check compares it by
// that MD5.
func TestRcloneMultipart(t *testing.T) {
	rclone := need(t, "rclone")
	e := newEnv(t, true)
	e.mkBucket(t, "rclonemp")
	src := t.TempDir()
	writeRandomFile(t, filepath.Join(src, "big.bin"), 12<<20+77, 12)
	remote := fmt.Sprintf(":s3,provider=Other,access_key_id=%s,secret_access_key=%s,endpoint='http://%s',region=us-east-1,upload_cutoff=5Mi,chunk_size=5Mi:rclonemp/copy", testID, testSecret, e.endpoint)
	e.run(t, rclone, "copy", src, remote)
	st, err := e.minio(false).StatObject(context.Background(), "rclonemp", "copy/big.bin", minio.StatObjectOptions{})
	if err != nil || !strings.HasSuffix(st.ETag, "-3") {
		t.Fatalf("StatObject: %+v, %v (want a 3-part ETag)", st, err)
	}
	out := e.run(t, rclone, "check", src, remote)
	if !strings.Contains(out, "0 differences found") || !strings.Contains(out, "1 matching files") {
		t.Fatalf("rclone check:\n%s", out)
	}
	if md5s := e.run(t, rclone, "md5sum", remote); !strings.Contains(md5s, fileMD5(t, filepath.Join(src, "big.bin"))+"  big.bin") {
		t.Fatalf("rclone md5sum:\n%s", md5s)
	}
}

const boto3MultipartScript = `
import sys, boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
endpoint, bucket, src, dst = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                  config=Config(s3={"addressing_style": "path"}))
tc = TransferConfig(multipart_threshold=5*1024*1024, multipart_chunksize=5*1024*1024, max_concurrency=4)
s3.upload_file(src, bucket, "boto.bin", Config=tc, ExtraArgs={"ContentType": "application/x-boto", "Metadata": {"origin": "boto3"}})
head = s3.head_object(Bucket=bucket, Key="boto.bin")
s3.download_file(bucket, "boto.bin", dst, Config=tc)
print(head["ETag"], head["ContentLength"], head["ContentType"], head["Metadata"]["origin"])
`

// TestBoto3Multipart: boto3's transfer manager uploads in parts (4
// concurrently) and downloads with ranged GETs; metadata given at the
// upload is kept.
func TestBoto3Multipart(t *testing.T) {
	py := python(t)
	e := newEnv(t, true)
	e.mkBucket(t, "botomp")
	dir := t.TempDir()
	src, dst, script := filepath.Join(dir, "up.bin"), filepath.Join(dir, "down.bin"), filepath.Join(dir, "mp.py")
	writeRandomFile(t, src, 17<<20+5, 17)
	if err := os.WriteFile(script, []byte(boto3MultipartScript), 0o644); err != nil {
		t.Fatal(err)
	}
	out := strings.Fields(e.run(t, py, script, "http://"+e.endpoint, "botomp", src, dst))
	if len(out) != 4 || !strings.HasSuffix(out[0], `-4"`) || out[1] != strconv.Itoa(17<<20+5) || out[2] != "application/x-boto" || out[3] != "boto3" {
		t.Fatalf("boto3 saw %q", out)
	}
	if got, want := fileMD5(t, dst), fileMD5(t, src); got != want {
		t.Fatalf("downloaded MD5 %s, uploaded %s", got, want)
	}
}
