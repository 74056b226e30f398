package s3

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/signer"
)

func TestGuardHoldsBackTheLastByte(t *testing.T) {
	for _, size := range []int{0, 1, 2, 100, guardBufSize - 1, guardBufSize, guardBufSize + 1, 3*guardBufSize + 7} {
		data := randBytes(size, uint64(size))
		for _, fail := range []bool{false, true} {
			var seen int
			g := newGuard(io.MultiReader(bytes.NewReader(data[:size/2]), bytes.NewReader(data[size/2:])),
				func(p []byte) error { seen += len(p); return nil },
				func() error {
					if fail {
						return io.ErrUnexpectedEOF
					}
					return nil
				})
			// Read as fasthttp's client does when it knows the length: never
			// past it, so only the last Read can see the check's verdict.
			got := make([]byte, 0, size)
			buf := make([]byte, 1000)
			var err error
			for len(got) < size {
				var n int
				n, err = g.Read(buf[:min(len(buf), size-len(got))])
				got = append(got, buf[:n]...)
				if err != nil {
					break
				}
			}
			if !fail && (!bytes.Equal(got, data) || seen != size) {
				t.Fatalf("size %d: got %d bytes (%v), saw %d", size, len(got), err, seen)
			}
			if fail && size > 0 && len(got) >= size {
				t.Fatalf("size %d: a failing check let every byte through", size)
			}
		}
	}
}

type sha256Hasher struct{ hash.Hash }

func (sha256Hasher) Close() {}

// TestUploadChecks sends uploads that fail one check each, by hand-built
// requests signed with minio-go's signer, and makes sure nothing was
// stored: neither a new key nor the replacement of an existing one (the
// gateway cut the upload to the master short). Good uploads of each kind
// are stored.
func TestUploadChecks(t *testing.T) {
	e := newEnv(t, true)
	c := e.minio(false)
	ctx := context.Background()
	if err := c.MakeBucket(ctx, "chk", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.PutObject(ctx, "chk", "keep", strings.NewReader("old value"), 9, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	// Small values go through the master; from redirectMin the bytes go
	// to a volume by the redirected write path, and a failed check must
	// leave nothing behind there too.
	for _, size := range []int{200<<10 + 3, redirectMin + 70<<10} {
		t.Run(fmt.Sprintf("%d bytes", size), func(t *testing.T) {
			before := e.redirectedWrites(t)
			uploadChecks(t, e, c, size)
			got := e.redirectedWrites(t) - before
			if size < redirectMin && got != 0 {
				t.Errorf("%d uploads of %d bytes redirected, want 0", got, size)
			}
			if size >= redirectMin && got < 8 {
				t.Errorf("%d uploads of %d bytes redirected, want every one", got, size)
			}
		})
	}
}

// uploadChecks puts size bytes in every payload mode, good and bad.
func uploadChecks(t *testing.T, e *testEnv, c *minio.Client, size int) {
	ctx := context.Background()
	data := randBytes(size, 7)
	other := append(bytes.Clone(data[:len(data)-1]), data[len(data)-1]^1)
	b64 := func(h hash.Hash, b []byte) string { h.Write(b); return base64.StdEncoding.EncodeToString(h.Sum(nil)) }
	url := func(key string) string { return "http://" + e.endpoint + "/chk/" + key }
	newReq := func(key string, body []byte) *http.Request {
		req, _ := http.NewRequest("PUT", url(key), bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		return req
	}
	signed := func(req *http.Request) *http.Request {
		return signer.SignV4(*req, testID, testSecret, "", "us-east-1")
	}
	chunked := func(key string, corruptAt int) *http.Request {
		req := newReq(key, data)
		req = signer.StreamingSignV4(req, testID, testSecret, "", "us-east-1", int64(len(data)), time.Now().UTC(), sha256Hasher{sha256.New()})
		if corruptAt >= 0 {
			req.Body = io.NopCloser(&corrupter{r: req.Body, at: int64(corruptAt)})
		}
		return req
	}
	trailer := func(key string, sum string) *http.Request {
		req := newReq(key, data)
		req.Header.Set("X-Amz-Content-Sha256", streamingUnsignedTrailer)
		return signer.SignV4Trailer(*req, testID, testSecret, "", "us-east-1", http.Header{"X-Amz-Checksum-Crc32c": {sum}})
	}
	withHeader := func(req *http.Request, kv ...string) *http.Request {
		for i := 0; i+1 < len(kv); i += 2 {
			req.Header.Set(kv[i], kv[i+1])
		}
		return req
	}
	sum256 := func(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }
	for _, tc := range []struct {
		name string
		req  func(key string) *http.Request
		want string // S3 error code, "" for success
	}{
		{"signed chunks", func(k string) *http.Request { return chunked(k, -1) }, ""},
		{"signed chunks, a byte changed in the second chunk", func(k string) *http.Request { return chunked(k, 70000) }, "SignatureDoesNotMatch"},
		{"signed chunks, a byte changed in the last chunk", func(k string) *http.Request { return chunked(k, len(data)+300) }, "SignatureDoesNotMatch"},
		{"unsigned trailer CRC32C", func(k string) *http.Request { return trailer(k, b64(crc32.New(crc32cTable), data)) }, ""},
		{"unsigned trailer, wrong CRC32C", func(k string) *http.Request { return trailer(k, b64(crc32.New(crc32cTable), other)) }, "BadDigest"},
		{"signed payload", func(k string) *http.Request {
			return signed(withHeader(newReq(k, data), "X-Amz-Content-Sha256", sum256(data)))
		}, ""},
		{"signed payload, hash of other bytes", func(k string) *http.Request {
			return signed(withHeader(newReq(k, data), "X-Amz-Content-Sha256", sum256(other)))
		}, "XAmzContentSHA256Mismatch"},
		{"Content-MD5", func(k string) *http.Request {
			return signed(withHeader(newReq(k, data), "Content-Md5", b64(md5.New(), data)))
		}, ""},
		{"Content-MD5 of other bytes", func(k string) *http.Request {
			return signed(withHeader(newReq(k, data), "Content-Md5", b64(md5.New(), other)))
		}, "BadDigest"},
		{"x-amz-checksum-crc32", func(k string) *http.Request {
			return signed(withHeader(newReq(k, data), "X-Amz-Checksum-Crc32", b64(crc32.NewIEEE(), data)))
		}, ""},
		{"x-amz-checksum-crc64nvme of other bytes", func(k string) *http.Request {
			return signed(withHeader(newReq(k, data), "X-Amz-Checksum-Crc64nvme", b64(checksumAlgos["crc64nvme"](), other)))
		}, "BadDigest"},
		{"x-amz-checksum-sha256 of other bytes", func(k string) *http.Request {
			return signed(withHeader(newReq(k, data), "X-Amz-Checksum-Sha256", b64(sha256.New(), other)))
		}, "BadDigest"},
		{"empty body, Content-MD5 of other bytes", func(k string) *http.Request {
			return signed(withHeader(newReq(k, nil), "Content-Md5", b64(md5.New(), []byte("x"))))
		}, "BadDigest"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, key := range []string{"fresh", "keep"} {
				st, body := doRaw(t, tc.req(key))
				if tc.want == "" {
					if st != 200 {
						t.Fatalf("%s: got %d %s, want 200", key, st, body)
					}
					if got := e.nativeValue(t, "chk/"+key); !bytes.Equal(got, data) {
						t.Fatalf("%s: stored %d bytes, want the %d sent", key, len(got), len(data))
					}
					// Back to the start for the next case.
					e.native("DELETE", "chk/fresh", nil)
					if _, err := c.PutObject(ctx, "chk", "keep", strings.NewReader("old value"), 9, minio.PutObjectOptions{}); err != nil {
						t.Fatal(err)
					}
					continue
				}
				if !strings.Contains(body, "<Code>"+tc.want+"</Code>") {
					t.Fatalf("%s: got %d %s, want %s", key, st, body, tc.want)
				}
				if st, _, _ := e.native("GET", "chk/fresh", nil); st != 404 {
					t.Fatalf("a refused upload was stored as a new key (%d)", st)
				}
				if got := e.nativeValue(t, "chk/keep"); string(got) != "old value" {
					t.Fatalf("a refused upload replaced a value: now %d bytes", len(got))
				}
			}
		})
	}
}

// redirectedWrites reads the master's count of writes redirected to a
// volume.
func (e *testEnv) redirectedWrites(t *testing.T) int {
	t.Helper()
	st, _, body := e.native("GET", "_kvdb/metrics", nil)
	if st != 200 {
		t.Fatalf("metrics: %d %s", st, body)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, `kvdb_redirected_writes_total{role="master"} `); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				t.Fatalf("metrics: %q", line)
			}
			return n
		}
	}
	return 0
}

// nativeValue reads a value through the native API.
func (e *testEnv) nativeValue(t *testing.T, key string) []byte {
	t.Helper()
	st, _, body := e.native("GET", key, nil)
	if st != 200 {
		t.Fatalf("native GET %s: %d %s", key, st, body)
	}
	return []byte(body)
}

func doRaw(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// corrupter flips the byte at offset at of what it reads.
type corrupter struct {
	r  io.Reader
	at int64
	n  int64
}

func (c *corrupter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if c.at >= c.n && c.at < c.n+int64(n) {
		p[c.at-c.n] ^= 0x20
	}
	c.n += int64(n)
	return n, err
}

func TestPresignedURLs(t *testing.T) {
	e := newEnv(t, true)
	c := e.minio(false)
	ctx := context.Background()
	if err := c.MakeBucket(ctx, "pre", minio.MakeBucketOptions{}); err != nil {
		t.Fatal(err)
	}
	put, err := c.PresignedPutObject(ctx, "pre", "up.txt", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest("PUT", put.String(), strings.NewReader("presigned body"))
	if st, body := doRaw(t, req); st != 200 {
		t.Fatalf("presigned PUT: %d %s", st, body)
	}
	get, err := c.PresignedGetObject(ctx, "pre", "up.txt", time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	req, _ = http.NewRequest("GET", get.String(), nil)
	if st, body := doRaw(t, req); st != 200 || body != "presigned body" {
		t.Fatalf("presigned GET: %d %q", st, body)
	}
	// Tampered: another key, another expiry.
	for _, bad := range []string{
		strings.Replace(get.String(), "up.txt", "up2.txt", 1),
		strings.Replace(get.String(), "X-Amz-Expires=3600", "X-Amz-Expires=3601", 1),
	} {
		req, _ = http.NewRequest("GET", bad, nil)
		if st, body := doRaw(t, req); st != 403 || !strings.Contains(body, "SignatureDoesNotMatch") {
			t.Fatalf("tampered URL %s: %d %s", bad, st, body)
		}
	}
	// Expired: the gateway's clock is moved past the expiry.
	e.gw.cfg.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	req, _ = http.NewRequest("GET", get.String(), nil)
	if st, body := doRaw(t, req); st != 403 || !strings.Contains(body, "expired") {
		t.Fatalf("expired URL: %d %s", st, body)
	}
	// V2 presigned URLs (botocore's default), good and tampered.
	e.gw.cfg.now = time.Now
	req, _ = http.NewRequest("GET", "http://"+e.endpoint+"/pre/up.txt", nil)
	v2 := signer.PreSignV2(*req, testID, testSecret, 600, false)
	if st, body := doRaw(t, v2); st != 200 || body != "presigned body" {
		t.Fatalf("V2 presigned GET: %d %q", st, body)
	}
	// And a V2 Authorization header.
	req, _ = http.NewRequest("GET", "http://"+e.endpoint+"/pre/up.txt", nil)
	if st, body := doRaw(t, signer.SignV2(*req, testID, testSecret, false)); st != 200 || body != "presigned body" {
		t.Fatalf("V2 signed GET: %d %q", st, body)
	}
	req, _ = http.NewRequest("GET", "http://"+e.endpoint+"/pre/up.txt", nil)
	if st, body := doRaw(t, signer.SignV2(*req, testID, "wrong-secret-0123456789", false)); st != 403 {
		t.Fatalf("V2 signed GET with a wrong secret: %d %q", st, body)
	}
	v2.URL.RawQuery = strings.Replace(v2.URL.RawQuery, "Expires=", "Expires=1", 1)
	if st, body := doRaw(t, v2); st != 403 {
		t.Fatalf("tampered V2 URL: %d %s", st, body)
	}
}

func TestClockSkew(t *testing.T) {
	e := newEnv(t, true)
	e.gw.cfg.now = func() time.Time { return time.Now().Add(16 * time.Minute) }
	_, err := e.minio(false).ListBuckets(context.Background())
	if errCode(err) != "RequestTimeTooSkewed" {
		t.Fatalf("got %v, want RequestTimeTooSkewed", err)
	}
}

// TestOpenGateway: without a keys file, any credentials (or none) work.
func TestOpenGateway(t *testing.T) {
	e := newEnv(t, false)
	ctx := context.Background()
	c, err := minio.New(e.endpoint, &minio.Options{Region: "us-east-1"}) // anonymous
	if err != nil {
		t.Fatal(err)
	}
	if err := c.MakeBucket(ctx, "open", minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("anonymous MakeBucket: %v", err)
	}
	wrong := e.minio(false) // signed with a key the gateway does not know
	if _, err := wrong.PutObject(ctx, "open", "k", strings.NewReader("v"), 1, minio.PutObjectOptions{}); err != nil {
		t.Fatalf("PutObject with any credentials: %v", err)
	}
	if got := e.nativeValue(t, "open/k"); string(got) != "v" {
		t.Fatalf("stored %q", got)
	}
}

// TestExpectContinueRefused: an upload with Expect: 100-continue and a bad
// signature gets the S3 error before it sends its body.
func TestExpectContinueRefused(t *testing.T) {
	e := newEnv(t, true)
	conn, err := net.Dial("tcp", e.endpoint)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /bkt/key HTTP/1.1\r\nHost: %s\r\nContent-Length: 1073741824\r\nExpect: 100-continue\r\n"+
		"X-Amz-Date: %s\r\nX-Amz-Content-Sha256: UNSIGNED-PAYLOAD\r\n"+
		"Authorization: AWS4-HMAC-SHA256 Credential=%s/%s/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=%s\r\n\r\n",
		e.endpoint, time.Now().UTC().Format(amzDateFmt), testID, time.Now().UTC().Format("20060102"), strings.Repeat("0", 64))
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 403 || !strings.Contains(string(b), "<Code>SignatureDoesNotMatch</Code>") {
		t.Fatalf("got %d %s, want 403 SignatureDoesNotMatch before the body", resp.StatusCode, b)
	}
}
