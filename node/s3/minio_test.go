package s3

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
)

// errCode is the S3 error code of a minio-go error.
func errCode(err error) string {
	var r minio.ErrorResponse
	if errors.As(err, &r) {
		return r.Code
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

func randBytes(n int, seed uint64) []byte {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func md5hex(b []byte) string {
	s := md5.Sum(b)
	return hex.EncodeToString(s[:])
}

func TestMinioBuckets(t *testing.T) {
	e := newEnv(t, true)
	c := e.minio(false)
	ctx := context.Background()
	if err := c.MakeBucket(ctx, "photos", minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("MakeBucket: %v", err)
	}
	if err := c.MakeBucket(ctx, "photos", minio.MakeBucketOptions{}); errCode(err) != "BucketAlreadyOwnedByYou" {
		t.Fatalf("MakeBucket again: got %v, want BucketAlreadyOwnedByYou", err)
	}
	if err := c.MakeBucket(ctx, "archive", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	if ok, err := c.BucketExists(ctx, "photos"); !ok || err != nil {
		t.Fatalf("BucketExists(photos) = %v, %v", ok, err)
	}
	if ok, err := c.BucketExists(ctx, "nothere"); ok || err != nil {
		t.Fatalf("BucketExists(nothere) = %v, %v", ok, err)
	}
	list, err := c.ListBuckets(ctx)
	if err != nil || len(list) != 2 || list[0].Name != "archive" || list[1].Name != "photos" || list[0].CreationDate.IsZero() {
		t.Fatalf("ListBuckets = %+v, %v", list, err)
	}
	if loc, err := c.GetBucketLocation(ctx, "photos"); err != nil || loc != "us-east-1" {
		t.Fatalf("GetBucketLocation = %q, %v", loc, err)
	}
	if _, err := c.PutObject(ctx, "photos", "cat.jpg", strings.NewReader("meow"), 4, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveBucket(ctx, "photos"); errCode(err) != "BucketNotEmpty" {
		t.Fatalf("RemoveBucket(non-empty): got %v, want BucketNotEmpty", err)
	}
	if err := c.RemoveObject(ctx, "photos", "cat.jpg", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveBucket(ctx, "photos"); err != nil {
		t.Fatalf("RemoveBucket: %v", err)
	}
	if err := c.RemoveBucket(ctx, "photos"); errCode(err) != "NoSuchBucket" {
		t.Fatalf("RemoveBucket again: got %v, want NoSuchBucket", err)
	}
	if _, err := c.PutObject(ctx, "photos", "x", strings.NewReader("x"), 1, minio.PutObjectOptions{}); errCode(err) != "NoSuchBucket" {
		t.Fatalf("PutObject into a deleted bucket: got %v, want NoSuchBucket", err)
	}
	if err := c.MakeBucket(ctx, "Bad_Name", minio.MakeBucketOptions{}); err == nil {
		t.Fatal("MakeBucket accepted an invalid name")
	}
	// The read-only key reads but does not write.
	ro := e.minio(true)
	if _, err := ro.ListBuckets(ctx); err != nil {
		t.Fatalf("read-only ListBuckets: %v", err)
	}
	if err := ro.MakeBucket(ctx, "rofail", minio.MakeBucketOptions{}); errCode(err) != "AccessDenied" {
		t.Fatalf("read-only MakeBucket: got %v, want AccessDenied", err)
	}
}

func TestMinioObjects(t *testing.T) {
	e := newEnv(t, true)
	c := e.minio(false)
	ctx := context.Background()
	if err := c.MakeBucket(ctx, "data", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	value := randBytes(3<<20+17, 1)
	info, err := c.PutObject(ctx, "data", "dir/value.bin", bytes.NewReader(value), int64(len(value)), minio.PutObjectOptions{
		ContentType: "application/x-test", UserMetadata: map[string]string{"Color": "blue"},
		CacheControl: "max-age=60", ContentDisposition: `attachment; filename="v.bin"`,
	})
	if err != nil {
		t.Fatalf("PutObject: %v", err)
	}
	if info.ETag != md5hex(value) {
		t.Fatalf("PutObject ETag %q, want the MD5 %s", info.ETag, md5hex(value))
	}
	st, err := c.StatObject(ctx, "data", "dir/value.bin", minio.StatObjectOptions{})
	if err != nil || st.Size != int64(len(value)) || st.ETag != md5hex(value) || st.ContentType != "application/x-test" ||
		st.UserMetadata["Color"] != "blue" || st.Metadata.Get("Cache-Control") != "max-age=60" || st.LastModified.IsZero() {
		t.Fatalf("StatObject = %+v, %v", st, err)
	}
	obj, err := c.GetObject(ctx, "data", "dir/value.bin", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(obj)
	if err != nil || !bytes.Equal(got, value) {
		t.Fatalf("GetObject: %d bytes, %v", len(got), err)
	}
	// Ranges: a middle, a suffix, an open end.
	for _, r := range [][2]int64{{1000, 1999}, {int64(len(value)) - 10, int64(len(value)) - 1}, {0, 0}} {
		opts := minio.GetObjectOptions{}
		if err := opts.SetRange(r[0], r[1]); err != nil {
			t.Fatal(err)
		}
		obj, err := c.GetObject(ctx, "data", "dir/value.bin", opts)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(obj)
		if err != nil || !bytes.Equal(got, value[r[0]:r[1]+1]) {
			t.Fatalf("range %v: %d bytes, %v", r, len(got), err)
		}
	}
	// Conditional reads.
	opts := minio.GetObjectOptions{}
	_ = opts.SetMatchETag("0123")
	if _, err := c.StatObject(ctx, "data", "dir/value.bin", minio.StatObjectOptions(opts)); err == nil {
		t.Fatal("If-Match with another ETag succeeded")
	}
	opts = minio.GetObjectOptions{}
	_ = opts.SetMatchETag(md5hex(value))
	if _, err := c.StatObject(ctx, "data", "dir/value.bin", minio.StatObjectOptions(opts)); err != nil {
		t.Fatalf("If-Match with the ETag: %v", err)
	}
	// Missing keys.
	if _, err := c.StatObject(ctx, "data", "nothere", minio.StatObjectOptions{}); errCode(err) != "NoSuchKey" {
		t.Fatalf("StatObject of a missing key: %v", err)
	}
	obj, _ = c.GetObject(ctx, "data", "nothere", minio.GetObjectOptions{})
	if _, err := io.ReadAll(obj); errCode(err) != "NoSuchKey" {
		t.Fatalf("GetObject of a missing key: %v", err)
	}
	// An empty object.
	if _, err := c.PutObject(ctx, "data", "empty", bytes.NewReader(nil), 0, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	obj, _ = c.GetObject(ctx, "data", "empty", minio.GetObjectOptions{})
	if got, err := io.ReadAll(obj); err != nil || len(got) != 0 {
		t.Fatalf("empty object: %q, %v", got, err)
	}
	// Copy, with the metadata, then with new metadata.
	if _, err := c.CopyObject(ctx, minio.CopyDestOptions{Bucket: "data", Object: "copy.bin"}, minio.CopySrcOptions{Bucket: "data", Object: "dir/value.bin"}); err != nil {
		t.Fatalf("CopyObject: %v", err)
	}
	st, err = c.StatObject(ctx, "data", "copy.bin", minio.StatObjectOptions{})
	if err != nil || st.ETag != md5hex(value) || st.UserMetadata["Color"] != "blue" || st.ContentType != "application/x-test" {
		t.Fatalf("copy: %+v, %v", st, err)
	}
	if _, err := c.CopyObject(ctx, minio.CopyDestOptions{Bucket: "data", Object: "copy.bin", ReplaceMetadata: true, UserMetadata: map[string]string{"Color": "red"}},
		minio.CopySrcOptions{Bucket: "data", Object: "copy.bin"}); err != nil {
		t.Fatalf("CopyObject onto itself with new metadata: %v", err)
	}
	st, err = c.StatObject(ctx, "data", "copy.bin", minio.StatObjectOptions{})
	if err != nil || st.ETag != md5hex(value) || st.UserMetadata["Color"] != "red" {
		t.Fatalf("copy onto itself: %+v, %v", st, err)
	}
	// Deletes.
	if err := c.RemoveObject(ctx, "data", "copy.bin", minio.RemoveObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := c.RemoveObject(ctx, "data", "copy.bin", minio.RemoveObjectOptions{}); err != nil {
		t.Fatalf("deleting a missing key: %v (S3 answers 204)", err)
	}
	if _, err := c.StatObject(ctx, "data", "copy.bin", minio.StatObjectOptions{}); errCode(err) != "NoSuchKey" {
		t.Fatalf("deleted object: %v", err)
	}
}

func TestMinioListAndDeleteObjects(t *testing.T) {
	e := newEnv(t, true)
	c := e.minio(false)
	ctx := context.Background()
	if err := c.MakeBucket(ctx, "lst", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	var all []string
	for i := 0; i < 30; i++ {
		k := fmt.Sprintf("d%d/k%02d", i%3, i)
		if i%5 == 0 {
			k = fmt.Sprintf("top%02d", i)
		}
		all = append(all, k)
		if _, err := c.PutObject(ctx, "lst", k, strings.NewReader(k), int64(len(k)), minio.PutObjectOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(all)
	list := func(opts minio.ListObjectsOptions) []string {
		var out []string
		for o := range c.ListObjects(ctx, "lst", opts) {
			if o.Err != nil {
				t.Fatalf("ListObjects: %v", o.Err)
			}
			out = append(out, o.Key)
			if !strings.HasSuffix(o.Key, "/") && (o.Size != int64(len(o.Key)) || o.ETag != md5hex([]byte(o.Key))) {
				t.Fatalf("entry %+v", o)
			}
		}
		return out
	}
	// Pages of 7 (MaxKeys) through v2 and v1.
	for _, v1 := range []bool{false, true} {
		got := list(minio.ListObjectsOptions{Recursive: true, MaxKeys: 7, UseV1: v1})
		if !slices.Equal(got, all) {
			t.Fatalf("recursive listing (v1 %v):\n got %v\nwant %v", v1, got, all)
		}
		got = list(minio.ListObjectsOptions{MaxKeys: 2, UseV1: v1})
		slices.Sort(got) // each page lists its objects, then its prefixes
		want := []string{"d0/", "d1/", "d2/", "top00", "top05", "top10", "top15", "top20", "top25"}
		if !slices.Equal(got, want) {
			t.Fatalf("delimited listing (v1 %v):\n got %v\nwant %v", v1, got, want)
		}
		got = list(minio.ListObjectsOptions{Prefix: "d1/", UseV1: v1})
		if len(got) != 8 || got[0] != "d1/k01" {
			t.Fatalf("prefix listing: %v", got)
		}
		got = list(minio.ListObjectsOptions{Recursive: true, StartAfter: "d2/k29", UseV1: v1})
		if !slices.Equal(got, []string{"top00", "top05", "top10", "top15", "top20", "top25"}) && !v1 {
			t.Fatalf("start-after: %v", got)
		}
	}
	// DeleteObjects, in one request.
	objs := make(chan minio.ObjectInfo)
	go func() {
		defer close(objs)
		for _, k := range all[:20] {
			objs <- minio.ObjectInfo{Key: k}
		}
		objs <- minio.ObjectInfo{Key: "never-was"}
	}()
	for r := range c.RemoveObjects(ctx, "lst", objs, minio.RemoveObjectsOptions{}) {
		t.Fatalf("RemoveObjects: %v %v", r.ObjectName, r.Err)
	}
	if got := list(minio.ListObjectsOptions{Recursive: true}); !slices.Equal(got, all[20:]) {
		t.Fatalf("after RemoveObjects: %v, want %v", got, all[20:])
	}
}

// TestNativeInterop checks that both APIs see the same values: an object
// put through S3 is read with the native API (following the redirect, as
// curl -L does), and a value put natively is read through S3.
func TestNativeInterop(t *testing.T) {
	e := newEnv(t, true)
	c := e.minio(false)
	ctx := context.Background()
	if err := c.MakeBucket(ctx, "both", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	opts := minio.PutObjectOptions{ContentType: "text/plain; charset=utf-8", ContentDisposition: "inline", UserMetadata: map[string]string{"Origin": "s3"}}
	if _, err := c.PutObject(ctx, "both", "from s3/a+b.txt", strings.NewReader("written by S3"), 13, opts); err != nil {
		t.Fatal(err)
	}
	// Its metadata comes back on the native API too (as curl -L sees it).
	checkMeta := func(what string, h http.Header) {
		t.Helper()
		if h.Get("Content-Type") != opts.ContentType || h.Get("Content-Disposition") != "inline" || h.Get("X-Amz-Meta-Origin") != "s3" {
			t.Errorf("%s: Content-Type %q, Content-Disposition %q, x-amz-meta-origin %q; want the S3 PUT's", what, h.Get("Content-Type"), h.Get("Content-Disposition"), h.Get("X-Amz-Meta-Origin"))
		}
	}
	st, h, body := e.native("GET", "both/from%20s3/a%2Bb.txt", nil)
	if st != 200 || body != "written by S3" {
		t.Fatalf("native GET of an S3 object: %d %q", st, body)
	}
	checkMeta("native GET", h)
	_, h, _ = e.native("HEAD", "both/from%20s3/a%2Bb.txt", nil)
	checkMeta("native HEAD", h)
	// A multipart object's too (its bytes come from a volume's parts
	// stream).
	big := bytes.Repeat([]byte("0123456789abcdef"), 11<<16) // 11 MiB: 3 parts of 5 MiB
	mopts := opts
	mopts.PartSize = 5 << 20
	if _, err := c.PutObject(ctx, "both", "big.txt", bytes.NewReader(big), int64(len(big)), mopts); err != nil {
		t.Fatal(err)
	}
	st, h, body = e.native("GET", "both/big.txt", nil)
	if st != 200 || body != string(big) {
		t.Fatalf("native GET of a multipart S3 object: %d, %d bytes", st, len(body))
	}
	checkMeta("native GET of a multipart object", h)
	st, hdr, _ := e.native("PUT", "both/native.txt", strings.NewReader("written natively"))
	if st != 201 {
		t.Fatalf("native PUT: %d", st)
	}
	obj, _ := c.GetObject(ctx, "both", "native.txt", minio.GetObjectOptions{})
	got, err := io.ReadAll(obj)
	if err != nil || string(got) != "written natively" {
		t.Fatalf("S3 GET of a native value: %q, %v", got, err)
	}
	// No MD5 was recorded for it: its S3 ETag is kvdb's own.
	if oi, err := c.StatObject(ctx, "both", "native.txt", minio.StatObjectOptions{}); err != nil || `"`+oi.ETag+`"` != hdr.Get("ETag") {
		t.Fatalf("S3 ETag of a native value: %+v, %v; want %s", oi, err, hdr.Get("ETag"))
	}
}
