package s3

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node"
)

// AWS's example credentials and the time of its published examples.
const (
	exampleID     = "AKIAIOSFODNN7EXAMPLE"
	exampleSecret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
)

var exampleTime = time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC)

// authServer is a Server that only authenticates (nothing listens).
func authServer(t *testing.T, now time.Time) *Server {
	t.Helper()
	keys, err := node.ParseAPIKeys(strings.NewReader("s3 " + exampleID + " " + exampleSecret + " rw\n"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{Master: func() (string, error) { return "", nil }, Keys: keys, now: func() time.Time { return now }}.withDefaults()
	s := &Server{cfg: cfg, log: slog.New(slog.DiscardHandler), creds: map[string]*credential{}}
	for _, k := range keys {
		s.creds[k.S3.AccessKeyID] = &credential{id: k.S3.AccessKeyID, secret: k.S3.SecretAccessKey}
	}
	return s
}

// requestCtx parses a raw HTTP request (LF line ends are turned into CRLF).
func requestCtx(t *testing.T, raw string) *fasthttp.RequestCtx {
	t.Helper()
	var ctx fasthttp.RequestCtx
	raw = strings.ReplaceAll(raw, "\n", "\r\n")
	if err := ctx.Request.Read(bufio.NewReader(strings.NewReader(raw))); err != nil {
		t.Fatalf("parse request: %v", err)
	}
	return &ctx
}

// The examples of AWS's "Authenticating Requests: Using the Authorization
// Header" and "Using Query Parameters" pages.
func TestSignatureV4Examples(t *testing.T) {
	s := authServer(t, exampleTime)
	for _, tc := range []struct {
		name, raw string
		want      string // "" for success, else the S3 error code
	}{
		{"GET with Range", "GET /test.txt HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\n" +
			"Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41\n" +
			"Range: bytes=0-9\nx-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-amz-date: 20130524T000000Z\n\n", ""},
		{"GET with Range, signature tampered", "GET /test.txt HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\n" +
			"Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb42\n" +
			"Range: bytes=0-9\nx-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-amz-date: 20130524T000000Z\n\n", "SignatureDoesNotMatch"},
		{"GET with Range, header changed", "GET /test.txt HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\n" +
			"Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41\n" +
			"Range: bytes=0-99\nx-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-amz-date: 20130524T000000Z\n\n", "SignatureDoesNotMatch"},
		{"unknown key", "GET /test.txt HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\n" +
			"Authorization: AWS4-HMAC-SHA256 Credential=AKIAOTHER/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41\n" +
			"Range: bytes=0-9\nx-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-amz-date: 20130524T000000Z\n\n", "InvalidAccessKeyId"},
		{"PUT with $ in the key", "PUT /test%24file.text HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\nDate: Fri, 24 May 2013 00:00:00 GMT\n" +
			"Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=date;host;x-amz-content-sha256;x-amz-date;x-amz-storage-class,Signature=98ad721746da40c64f1a55b78f14c238d841ea1380cd77a1b5971af0ece108bd\n" +
			"x-amz-date: 20130524T000000Z\nx-amz-storage-class: REDUCED_REDUNDANCY\nx-amz-content-sha256: 44ce7dd67c959e0d3524ffac1771dfbba87d2b6b4b4e99e42034a8b803f8b072\nContent-Length: 21\n\nWelcome to Amazon S3.", ""},
		{"presigned GET", "GET /test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404 HTTP/1.1\n" +
			"Host: examplebucket.s3.amazonaws.com\n\n", ""},
		{"presigned GET, tampered", "GET /test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86401&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404 HTTP/1.1\n" +
			"Host: examplebucket.s3.amazonaws.com\n\n", "SignatureDoesNotMatch"},
		{"presigned GET, other key", "GET /test2.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404 HTTP/1.1\n" +
			"Host: examplebucket.s3.amazonaws.com\n\n", "SignatureDoesNotMatch"},
		{"no credentials", "GET /test.txt HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\n\n", "AccessDenied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, aerr := s.authenticate(requestCtx(t, tc.raw))
			got := ""
			if aerr != nil {
				got = aerr.code
			}
			if got != tc.want {
				t.Fatalf("got %q (%v), want %q", got, aerr, tc.want)
			}
		})
	}
}

func TestSignatureV4Time(t *testing.T) {
	get := "GET /test.txt HTTP/1.1\nHost: examplebucket.s3.amazonaws.com\n" +
		"Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=host;range;x-amz-content-sha256;x-amz-date,Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41\n" +
		"Range: bytes=0-9\nx-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\nx-amz-date: 20130524T000000Z\n\n"
	presigned := "GET /test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404 HTTP/1.1\n" +
		"Host: examplebucket.s3.amazonaws.com\n\n"
	for _, tc := range []struct {
		raw  string
		now  time.Time
		want string
	}{
		{get, exampleTime.Add(14 * time.Minute), ""},
		{get, exampleTime.Add(16 * time.Minute), "RequestTimeTooSkewed"},
		{get, exampleTime.Add(-16 * time.Minute), "RequestTimeTooSkewed"},
		{presigned, exampleTime.Add(86399 * time.Second), ""},
		{presigned, exampleTime.Add(86401 * time.Second), "AccessDenied"},
		{presigned, exampleTime.Add(-time.Hour), "AccessDenied"},
	} {
		_, aerr := authServer(t, tc.now).authenticate(requestCtx(t, tc.raw))
		got := ""
		if aerr != nil {
			got = aerr.code
		}
		if got != tc.want {
			t.Errorf("at %v: got %q (%v), want %q", tc.now, got, aerr, tc.want)
		}
	}
}

// exampleChunked is AWS's signed streaming upload (sigv4-streaming): 66560
// bytes of 'a' as a chunk of 65536, one of 1024 and the last, empty one.
func exampleChunked(corrupt bool) string {
	var b strings.Builder
	for _, c := range []struct {
		size int
		sig  string
	}{
		{65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"},
		{1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"},
		{0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"},
	} {
		fmt.Fprintf(&b, "%x;chunk-signature=%s\r\n", c.size, c.sig)
		data := bytes.Repeat([]byte("a"), c.size)
		if corrupt && c.size == 1024 {
			data[10] = 'b'
		}
		b.Write(data)
		b.WriteString("\r\n")
	}
	return b.String()
}

func exampleStreamingRequest(body string) string {
	return "PUT /examplebucket/chunkObject.txt HTTP/1.1\nHost: s3.amazonaws.com\nx-amz-date: 20130524T000000Z\n" +
		"x-amz-storage-class: REDUCED_REDUNDANCY\n" +
		"Authorization: AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request,SignedHeaders=content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class,Signature=4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9\n" +
		"x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD\nContent-Encoding: aws-chunked\nx-amz-decoded-content-length: 66560\n" +
		fmt.Sprintf("Content-Length: %d\n\n", len(body))
}

// readBody authenticates a request and reads its decoded body as a
// PutObject would.
func readBody(t *testing.T, s *Server, head, body string) ([]byte, *apiError) {
	t.Helper()
	var ctx fasthttp.RequestCtx
	raw := strings.ReplaceAll(head, "\n", "\r\n") + body
	br := bufio.NewReader(strings.NewReader(raw))
	if err := ctx.Request.Header.Read(br); err != nil {
		t.Fatal(err)
	}
	ctx.Request.SetBodyStream(br, len(body))
	id, aerr := s.authenticate(&ctx)
	if aerr != nil {
		return nil, aerr
	}
	b, aerr := s.newBody(&ctx, &id)
	if aerr != nil {
		return nil, aerr
	}
	got, err := io.ReadAll(b)
	if err != nil {
		if b.failure() == nil {
			t.Fatalf("read failed without an S3 error: %v", err)
		}
		return got, b.failure()
	}
	return got, nil
}

func TestStreamingSignatureExample(t *testing.T) {
	s := authServer(t, exampleTime)
	body := exampleChunked(false)
	if len(body) != 66824 {
		t.Fatalf("example body is %d bytes, AWS says 66824", len(body))
	}
	got, aerr := readBody(t, s, exampleStreamingRequest(body), body)
	if aerr != nil || !bytes.Equal(got, bytes.Repeat([]byte("a"), 66560)) {
		t.Fatalf("good chunks: %d bytes, %v", len(got), aerr)
	}
	bad := exampleChunked(true)
	got, aerr = readBody(t, s, exampleStreamingRequest(bad), bad)
	if aerr == nil || aerr.code != "SignatureDoesNotMatch" {
		t.Fatalf("corrupt chunk: got %v, want SignatureDoesNotMatch", aerr)
	}
	if len(got) >= 66560 {
		t.Fatalf("a corrupt upload was let through whole (%d bytes)", len(got))
	}
}
