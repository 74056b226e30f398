package s3

// Request authentication: AWS Signature Version 4 in the Authorization
// header or in a presigned URL's query, and Version 2 presigned URLs and
// headers (botocore presigns with V2 by default in us-east-1; see S3.md).
// Only the headers are needed: a request is authenticated before a byte of
// its body is read, which lets an Expect: 100-continue upload be refused
// before it is sent. What the payload must then satisfy (a hex SHA-256, a
// chain of chunk signatures) is carried in the identity to payload.go.

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/valyala/fasthttp"
)

// credential is one S3 key pair the gateway accepts.
type credential struct {
	id, secret string
	readOnly   bool
	// token is the bearer token the master takes for this key
	// (node.S3Token).
	token string
}

// The x-amz-content-sha256 values that are not a hex digest.
const (
	unsignedPayload          = "UNSIGNED-PAYLOAD"
	streamingSigned          = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
	streamingSignedTrailer   = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
	streamingUnsignedTrailer = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
	emptySHA256              = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
)

const (
	algoV4     = "AWS4-HMAC-SHA256"
	amzDateFmt = "20060102T150405Z"
	maxExpires = 7 * 24 * 3600 // a presigned URL's longest life, in seconds
)

// identity is who signed a request and what its payload must satisfy.
type identity struct {
	// cred is the key that signed it; nil on an open gateway.
	cred *credential
	// payload is the x-amz-content-sha256 claim: a hex SHA-256, one of the
	// constants above, or "" (nothing to check: presigned URLs, V2, an
	// open gateway's unsigned requests).
	payload string
	// For chunk and trailer signatures (streaming payloads): the signing
	// key, the request's date and scope, and the seed signature. Empty
	// when they cannot be checked (an open gateway).
	key     []byte
	amzDate string
	scope   string
	seed    string
}

// readOnly reports whether the identity may only read.
func (id *identity) readOnly() bool { return id.cred != nil && id.cred.readOnly }

// token is the bearer token to call the master with ("" on an open gateway).
func (id *identity) token() string {
	if id.cred == nil {
		return ""
	}
	return id.cred.token
}

// authenticate checks the request's signature (headers only).
func (s *Server) authenticate(ctx *fasthttp.RequestCtx) (identity, *apiError) {
	h := &ctx.Request.Header
	auth := h.Peek("Authorization")
	args := ctx.QueryArgs()
	switch {
	case bytes.HasPrefix(auth, []byte(algoV4+" ")):
		return s.verifyHeaderV4(ctx, string(auth[len(algoV4)+1:]))
	case args.Has("X-Amz-Signature") || args.Has("X-Amz-Algorithm") || args.Has("X-Amz-Credential"):
		return s.verifyQueryV4(ctx)
	case args.Has("AWSAccessKeyId") || args.Has("Signature") && args.Has("Expires"):
		return s.verifyV2(ctx, true)
	case bytes.HasPrefix(auth, []byte("AWS ")):
		return s.verifyV2(ctx, false)
	case len(auth) > 0:
		return identity{}, newError(fasthttp.StatusBadRequest, "InvalidArgument", "Unsupported Authorization Type")
	}
	if s.open {
		p, err := payloadClaim(h, true)
		return identity{payload: p}, err
	}
	return identity{}, errAccessDenied
}

// payloadClaim reads and checks x-amz-content-sha256.
func payloadClaim(h *fasthttp.RequestHeader, optional bool) (string, *apiError) {
	p := string(h.Peek("X-Amz-Content-Sha256"))
	switch p {
	case "":
		if optional {
			return "", nil
		}
		return "", newError(fasthttp.StatusBadRequest, "InvalidRequest", "Missing required header for this request: x-amz-content-sha256")
	case unsignedPayload, streamingSigned, streamingSignedTrailer, streamingUnsignedTrailer:
		return p, nil
	}
	if len(p) == 64 {
		if _, err := hex.DecodeString(p); err == nil {
			return strings.ToLower(p), nil
		}
	}
	return "", newError(fasthttp.StatusBadRequest, "InvalidArgument", "x-amz-content-sha256 must be UNSIGNED-PAYLOAD, a STREAMING-* mode, or a hex SHA-256")
}

// scope is a parsed credential scope: ID/DATE/REGION/SERVICE/aws4_request.
type scope struct {
	id, date, region, service string
}

func (sc scope) String() string {
	return sc.date + "/" + sc.region + "/" + sc.service + "/aws4_request"
}

func parseScope(cred string) (scope, bool) {
	f := strings.Split(cred, "/")
	if len(f) != 5 || f[4] != "aws4_request" || f[0] == "" || len(f[1]) != 8 || f[2] == "" || f[3] == "" {
		return scope{}, false
	}
	return scope{id: f[0], date: f[1], region: f[2], service: f[3]}, true
}

func (s *Server) verifyHeaderV4(ctx *fasthttp.RequestCtx, auth string) (identity, *apiError) {
	h := &ctx.Request.Header
	var credStr, signed, sig string
	for _, part := range strings.Split(auth, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch name {
		case "Credential":
			credStr = value
		case "SignedHeaders":
			signed = value
		case "Signature":
			sig = value
		}
	}
	sc, ok := parseScope(credStr)
	if !ok || signed == "" || sig == "" {
		return identity{}, newError(fasthttp.StatusBadRequest, "AuthorizationHeaderMalformed", "The authorization header is malformed; it must hold Credential=ID/DATE/REGION/SERVICE/aws4_request, SignedHeaders= and Signature=.")
	}
	// S3 requires x-amz-content-sha256 with header signatures; like
	// minio, its absence is taken as UNSIGNED-PAYLOAD (some clients omit
	// it, and it is what they then sign).
	payload, aerr := payloadClaim(h, true)
	if aerr != nil {
		return identity{}, aerr
	}
	if s.open {
		return identity{payload: payload}, nil
	}
	c := s.creds[sc.id]
	if c == nil {
		return identity{}, errUnknownKey
	}
	t, amzDate, aerr := requestTime(h)
	if aerr != nil {
		return identity{}, aerr
	}
	if d := s.cfg.now().Sub(t); d > s.cfg.MaxClockSkew || -d > s.cfg.MaxClockSkew {
		return identity{}, errSkew
	}
	if aerr := checkScope(sc, t); aerr != nil {
		return identity{}, aerr
	}
	if !strings.Contains(";"+signed+";", ";host;") {
		return identity{}, newError(fasthttp.StatusBadRequest, "AuthorizationHeaderMalformed", "SignedHeaders must include host")
	}
	key := signingKey(c.secret, sc)
	hashLine := payload
	if hashLine == "" {
		hashLine = unsignedPayload
	}
	if !s.matchV4(ctx, key, amzDate, sc.String(), signed, hashLine, "", sig) {
		return identity{}, errSignature
	}
	return identity{cred: c, payload: payload, key: key, amzDate: amzDate, scope: sc.String(), seed: sig}, nil
}

func checkScope(sc scope, t time.Time) *apiError {
	if sc.date != t.Format("20060102") {
		return newError(fasthttp.StatusBadRequest, "AuthorizationHeaderMalformed", "The credential scope's date does not match the request's date")
	}
	if sc.service != "s3" {
		return newError(fasthttp.StatusBadRequest, "AuthorizationHeaderMalformed", "The credential scope's service must be s3")
	}
	return nil
}

// requestTime reads x-amz-date (ISO 8601 basic) or, failing that, Date.
func requestTime(h *fasthttp.RequestHeader) (time.Time, string, *apiError) {
	if v := h.Peek("X-Amz-Date"); len(v) > 0 {
		t, err := time.Parse(amzDateFmt, string(v))
		if err != nil {
			return time.Time{}, "", newError(fasthttp.StatusForbidden, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
		}
		return t, string(v), nil
	}
	if v := h.Peek("Date"); len(v) > 0 {
		t, err := fasthttp.ParseHTTPDate(v)
		if err == nil {
			return t.UTC(), t.UTC().Format(amzDateFmt), nil
		}
	}
	return time.Time{}, "", newError(fasthttp.StatusForbidden, "AccessDenied", "AWS authentication requires a valid Date or x-amz-date header")
}

func (s *Server) verifyQueryV4(ctx *fasthttp.RequestCtx) (identity, *apiError) {
	args := ctx.QueryArgs()
	bad := func(msg string) (identity, *apiError) {
		return identity{}, newError(fasthttp.StatusBadRequest, "AuthorizationQueryParametersError", msg)
	}
	if string(args.Peek("X-Amz-Algorithm")) != algoV4 {
		return bad("X-Amz-Algorithm only supports \"AWS4-HMAC-SHA256\"")
	}
	sc, ok := parseScope(string(args.Peek("X-Amz-Credential")))
	signed := string(args.Peek("X-Amz-SignedHeaders"))
	sig := string(args.Peek("X-Amz-Signature"))
	if !ok || signed == "" || sig == "" {
		return bad("Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters.")
	}
	amzDate := string(args.Peek("X-Amz-Date"))
	t, err := time.Parse(amzDateFmt, amzDate)
	if err != nil {
		return bad("X-Amz-Date must be in the ISO8601 Long Format \"yyyyMMdd'T'HHmmss'Z'\"")
	}
	expires, err := strconv.Atoi(string(args.Peek("X-Amz-Expires")))
	if err != nil || expires < 1 || expires > maxExpires {
		return bad("X-Amz-Expires must be a number of seconds from 1 to 604800")
	}
	if s.open {
		return identity{}, nil
	}
	c := s.creds[sc.id]
	if c == nil {
		return identity{}, errUnknownKey
	}
	now := s.cfg.now()
	if t.Sub(now) > s.cfg.MaxClockSkew {
		return identity{}, newError(fasthttp.StatusForbidden, "AccessDenied", "Request is not valid yet")
	}
	if now.After(t.Add(time.Duration(expires) * time.Second)) {
		return identity{}, errExpired
	}
	if aerr := checkScope(sc, t); aerr != nil {
		return identity{}, aerr
	}
	payload := unsignedPayload
	if p := args.Peek("X-Amz-Content-Sha256"); len(p) > 0 {
		payload = string(p)
	}
	key := signingKey(c.secret, sc)
	if !s.matchV4(ctx, key, amzDate, sc.String(), signed, payload, "X-Amz-Signature", sig) {
		return identity{}, errSignature
	}
	// The payload of a presigned request is not signed (UNSIGNED-PAYLOAD),
	// unless the URL carries a hex digest.
	if payload == unsignedPayload {
		payload = ""
	}
	return identity{cred: c, payload: payload}, nil
}

// matchV4 computes the Signature V4 of the request and compares it with
// sig. The canonical request takes the path and query decoded and encoded
// again as AWS does; when the client sent them in another form that may
// also be what it signed, so that form is tried too (never more than that).
func (s *Server) matchV4(ctx *fasthttp.RequestCtx, key []byte, amzDate, sc, signed, payload, skipParam, sig string) bool {
	want, err := hex.DecodeString(sig)
	if err != nil || len(want) != sha256.Size {
		return false
	}
	rawPath := string(ctx.URI().PathOriginal())
	if i := strings.IndexByte(rawPath, '?'); i >= 0 {
		rawPath = rawPath[:i]
	}
	rawQuery := string(ctx.URI().QueryString())
	headers := canonicalHeaders(&ctx.Request.Header, signed)
	method := string(ctx.Method())
	try := func(path, query string) bool {
		creq := method + "\n" + path + "\n" + query + "\n" + headers + "\n" + signed + "\n" + payload
		sum := sha256.Sum256([]byte(creq))
		sts := algoV4 + "\n" + amzDate + "\n" + sc + "\n" + hex.EncodeToString(sum[:])
		return hmac.Equal(hmacSHA256(key, sts), want)
	}
	path, query := canonicalPath(rawPath), canonicalQuery(rawQuery, skipParam, false)
	if try(path, query) {
		return true
	}
	rawPathSigned := rawPath
	if rawPathSigned == "" {
		rawPathSigned = "/"
	}
	asSentQuery := canonicalQuery(rawQuery, skipParam, true)
	if rawPathSigned != path || asSentQuery != query {
		return try(rawPathSigned, asSentQuery)
	}
	return false
}

// signingKey derives the Signature V4 key of secret for the scope.
func signingKey(secret string, sc scope) []byte {
	k := hmacSHA256([]byte("AWS4"+secret), sc.date)
	k = hmacSHA256(k, sc.region)
	k = hmacSHA256(k, sc.service)
	return hmacSHA256(k, "aws4_request")
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// uriEncode percent-encodes s as Signature V4 wants: everything but the
// unreserved characters (A-Z a-z 0-9 - . _ ~), and '/' too unless
// keepSlash, upper-case hex.
func uriEncode(s string, keepSlash bool) string {
	const hexDigits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '/' && keepSlash {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hexDigits[c>>4])
		b.WriteByte(hexDigits[c&15])
	}
	return b.String()
}

// canonicalPath decodes the path as sent and encodes it once (S3 does not
// normalize or double-encode paths).
func canonicalPath(raw string) string {
	if raw == "" {
		return "/"
	}
	dec, err := url.PathUnescape(raw)
	if err != nil {
		return raw
	}
	return uriEncode(dec, true)
}

// canonicalQuery sorts the query's parameters by name (then value), each
// name=value (empty values included), leaving out skip. asSent keeps each
// name and value as the client encoded it; otherwise they are decoded ('+'
// stays a plus) and encoded again.
func canonicalQuery(raw, skip string, asSent bool) string {
	if raw == "" {
		return ""
	}
	type pair struct{ k, v string }
	var pairs []pair
	for _, part := range strings.Split(raw, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		if !asSent {
			dk, err1 := url.PathUnescape(k)
			dv, err2 := url.PathUnescape(v)
			if err1 == nil && err2 == nil {
				k, v = uriEncode(dk, false), uriEncode(dv, false)
			}
		}
		if skip != "" && k == skip {
			continue
		}
		pairs = append(pairs, pair{k, v})
	}
	sort.Slice(pairs, func(i, j int) bool {
		if pairs[i].k != pairs[j].k {
			return pairs[i].k < pairs[j].k
		}
		return pairs[i].v < pairs[j].v
	})
	var b strings.Builder
	for i, p := range pairs {
		if i > 0 {
			b.WriteByte('&')
		}
		b.WriteString(p.k)
		b.WriteByte('=')
		b.WriteString(p.v)
	}
	return b.String()
}

// canonicalHeaders renders the signed headers, "name:value\n" each, values
// trimmed with inner runs of spaces collapsed, repeated headers joined by
// commas.
func canonicalHeaders(h *fasthttp.RequestHeader, signed string) string {
	var b strings.Builder
	for _, name := range strings.Split(signed, ";") {
		var vals []string
		switch name {
		case "host":
			vals = []string{string(h.Host())}
		case "content-length":
			if n := h.ContentLength(); n >= 0 {
				vals = []string{strconv.Itoa(n)}
			}
		case "transfer-encoding":
			if h.ContentLength() == -1 {
				vals = []string{"chunked"}
			}
		default:
			for _, v := range h.PeekAll(name) {
				vals = append(vals, string(v))
			}
		}
		b.WriteString(name)
		b.WriteByte(':')
		for i, v := range vals {
			if i > 0 {
				b.WriteByte(',')
			}
			b.WriteString(strings.Join(strings.Fields(v), " "))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// v2SubResources are the query parameters Signature V2 signs.
var v2SubResources = map[string]bool{
	"acl": true, "cors": true, "delete": true, "lifecycle": true, "location": true, "logging": true,
	"notification": true, "partNumber": true, "policy": true, "requestPayment": true, "restore": true,
	"tagging": true, "torrent": true, "uploadId": true, "uploads": true, "versionId": true,
	"versioning": true, "versions": true, "website": true,
	"response-cache-control": true, "response-content-disposition": true, "response-content-encoding": true,
	"response-content-language": true, "response-content-type": true, "response-expires": true,
}

// verifyV2 checks a Signature Version 2 request: a presigned URL
// (AWSAccessKeyId, Expires, Signature) or an "Authorization: AWS ID:SIG"
// header. It is what botocore presigns with by default.
func (s *Server) verifyV2(ctx *fasthttp.RequestCtx, query bool) (identity, *apiError) {
	h := &ctx.Request.Header
	args := ctx.QueryArgs()
	var id, sig, dateLine string
	now := s.cfg.now()
	if query {
		id, sig = string(args.Peek("AWSAccessKeyId")), string(args.Peek("Signature"))
		dateLine = string(args.Peek("Expires"))
		exp, err := strconv.ParseInt(dateLine, 10, 64)
		if err != nil || id == "" || sig == "" {
			return identity{}, newError(fasthttp.StatusForbidden, "AccessDenied", "Query-string authentication requires the Signature, Expires and AWSAccessKeyId parameters")
		}
		if !s.open && now.Unix() > exp {
			return identity{}, errExpired
		}
	} else {
		cred := string(h.Peek("Authorization"))[len("AWS "):]
		i := strings.LastIndexByte(cred, ':')
		if i <= 0 {
			return identity{}, newError(fasthttp.StatusBadRequest, "InvalidArgument", "Authorization header is invalid: want AWS ACCESS_KEY_ID:SIGNATURE")
		}
		id, sig = cred[:i], cred[i+1:]
		t, _, aerr := requestTime(h)
		if aerr != nil && !s.open {
			return identity{}, aerr
		}
		if !s.open {
			if d := now.Sub(t); d > s.cfg.MaxClockSkew || -d > s.cfg.MaxClockSkew {
				return identity{}, errSkew
			}
		}
		if len(h.Peek("X-Amz-Date")) == 0 {
			dateLine = string(h.Peek("Date"))
		}
	}
	if s.open {
		p, _ := payloadClaim(h, true)
		return identity{payload: p}, nil
	}
	c := s.creds[id]
	if c == nil {
		return identity{}, errUnknownKey
	}
	var amz []string
	h.VisitAll(func(k, v []byte) {
		name := strings.ToLower(string(k))
		if strings.HasPrefix(name, "x-amz-") {
			amz = append(amz, name+":"+strings.TrimSpace(string(v)))
		}
	})
	sort.Strings(amz)
	var b strings.Builder
	b.WriteString(string(ctx.Method()) + "\n")
	b.WriteString(string(h.Peek("Content-Md5")) + "\n")
	b.WriteString(string(h.ContentType()) + "\n")
	b.WriteString(dateLine + "\n")
	for _, a := range amz {
		b.WriteString(a + "\n")
	}
	b.WriteString(s.v2Resource(ctx))
	m := hmac.New(sha1.New, []byte(c.secret))
	m.Write([]byte(b.String()))
	want := base64.StdEncoding.EncodeToString(m.Sum(nil))
	if subtle.ConstantTimeCompare([]byte(want), []byte(sig)) != 1 {
		return identity{}, errSignature
	}
	return identity{cred: c}, nil
}

// v2Resource is Signature V2's canonicalized resource: the path as sent
// (with the bucket of a virtual-hosted request in front) and the signed
// sub-resources.
func (s *Server) v2Resource(ctx *fasthttp.RequestCtx) string {
	path := string(ctx.URI().PathOriginal())
	if b, ok := s.hostBucket(ctx); ok {
		path = "/" + b + path
	}
	var subs []string
	ctx.QueryArgs().VisitAll(func(k, v []byte) {
		if v2SubResources[string(k)] {
			if len(v) == 0 {
				subs = append(subs, string(k))
			} else {
				subs = append(subs, string(k)+"="+string(v))
			}
		}
	})
	sort.Strings(subs)
	if len(subs) > 0 {
		path += "?" + strings.Join(subs, "&")
	}
	return path
}
