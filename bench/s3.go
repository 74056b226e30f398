package bench

// bench as an S3 client: with Config.S3, Config.URL is an S3 endpoint
// (a kvdb --s3 gateway), keys are path-style objects whose bucket is the
// first segment of the prefix, and every request is signed with AWS
// Signature V4 in its Authorization header. Bodies are sent as
// UNSIGNED-PAYLOAD (the payload hash would need a second pass over the
// generated value), as minio-go and the AWS SDKs send them over https.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// S3Credentials sign an S3 run's requests.
type S3Credentials struct {
	// AccessKeyID and SecretAccessKey are the key's two halves. A gateway
	// without keys accepts any.
	AccessKeyID, SecretAccessKey string
	// Region is the signature's region. Default "us-east-1".
	Region string
}

// unsignedPayload is x-amz-content-sha256 for a body that is not hashed.
const unsignedPayload = "UNSIGNED-PAYLOAD"

// s3Signer signs requests with Signature V4; it caches the day's signing
// key. One per worker: it is not safe for concurrent use.
type s3Signer struct {
	creds S3Credentials
	day   string
	key   []byte
	now   func() time.Time
}

func newS3Signer(c S3Credentials) *s3Signer {
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	return &s3Signer{creds: c, now: time.Now}
}

func hmacSum(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// sign adds x-amz-date, x-amz-content-sha256 (payload: a hex SHA-256 or
// UNSIGNED-PAYLOAD) and Authorization to req, whose URI must be final.
// The path is signed as it is sent: bench escapes keys as S3 wants them
// (RFC 3986, upper-case hex).
func (s *s3Signer) sign(req *fasthttp.Request, payload string) {
	t := s.now().UTC()
	amzDate := t.Format("20060102T150405Z")
	day := amzDate[:8]
	if day != s.day {
		k := hmacSum([]byte("AWS4"+s.creds.SecretAccessKey), day)
		k = hmacSum(k, s.creds.Region)
		k = hmacSum(k, "s3")
		s.key, s.day = hmacSum(k, "aws4_request"), day
	}
	h := &req.Header
	h.Set("X-Amz-Date", amzDate)
	h.Set("X-Amz-Content-Sha256", payload)
	uri := req.URI()
	host := string(uri.Host())
	h.SetHost(host)

	var cr strings.Builder
	cr.Write(h.Method())
	cr.WriteByte('\n')
	cr.Write(uri.PathOriginal())
	cr.WriteByte('\n')
	cr.WriteString(canonicalQuery(uri.QueryArgs()))
	cr.WriteByte('\n')
	cr.WriteString("host:" + host + "\nx-amz-content-sha256:" + payload + "\nx-amz-date:" + amzDate + "\n\n")
	const signed = "host;x-amz-content-sha256;x-amz-date"
	cr.WriteString(signed + "\n" + payload)
	crSum := sha256.Sum256([]byte(cr.String()))
	scope := day + "/" + s.creds.Region + "/s3/aws4_request"
	sts := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(crSum[:])
	sig := hex.EncodeToString(hmacSum(s.key, sts))
	h.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+s.creds.AccessKeyID+"/"+scope+", SignedHeaders="+signed+", Signature="+sig)
}

// canonicalQuery is the query part of a canonical request: parameters
// sorted, names and values encoded as S3 wants (bench's own queries are
// plain words, so encoding only matters for completeness).
func canonicalQuery(args *fasthttp.Args) string {
	var pairs []string
	args.VisitAll(func(k, v []byte) {
		pairs = append(pairs, s3Escape(string(k))+"="+s3Escape(string(v)))
	})
	sort.Strings(pairs)
	return strings.Join(pairs, "&")
}

// s3Escape encodes s as RFC 3986 with upper-case hex (every byte but the
// unreserved ones).
func s3Escape(s string) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// s3Bucket is the bucket of an S3 run: the prefix's first segment.
func s3Bucket(prefix string) (string, error) {
	b, _, ok := strings.Cut(prefix, "/")
	if !ok || len(b) < 3 || len(b) > 63 {
		return "", fmt.Errorf("bench: prefix %q: with --s3 it must start with a bucket name of 3 to 63 characters and a '/'", prefix)
	}
	return b, nil
}

// createBucket makes sure an S3 run's bucket exists (it may already).
func createBucket(client *fasthttp.Client, base string, creds S3Credentials, bucket string, timeout time.Duration) error {
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.Header.SetMethod(fasthttp.MethodPut)
	req.SetRequestURI(base + "/" + bucket)
	newS3Signer(creds).sign(req, emptySHA256)
	if err := client.DoTimeout(req, resp, timeout); err != nil {
		return fmt.Errorf("bench: create bucket %q: %w", bucket, err)
	}
	defer resp.CloseBodyStream()
	st := resp.StatusCode()
	if st == fasthttp.StatusOK || st == fasthttp.StatusConflict {
		// 409: BucketAlreadyOwnedByYou (or exists), which will do.
		return nil
	}
	return fmt.Errorf("bench: create bucket %q: %w", bucket, statusError(resp))
}

// emptySHA256 is the SHA-256 of no bytes, hex.
const emptySHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
