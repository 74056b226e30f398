package node

// The cluster secret. Without one, any host that reaches a node's ports
// can join gossip, write to and delete from volumes, and read every value.
// With one (the same bytes on every node):
//
//   - gossip is encrypted and authenticated (AES-GCM) with a key derived
//     from the secret, so a node without it cannot join or forge deaths;
//   - every request the master (or a volume pulling a copy) makes to a
//     volume's internal API carries an HMAC-SHA256 signature that expires
//     after internalTTL, and volumes refuse unsigned ones with 403;
//   - the 302 Location of a read carries a signature that expires after
//     the master's RedirectTTL, and volumes serve no value without one.
//
// Two keys are derived from the secret with HKDF-SHA256 under distinct
// labels, so the gossip key and the signing key are independent.
//
// Wire format. A signed URL ends with
//
//	e=EXPIRY&s=SIGNATURE
//
// where EXPIRY is a Unix time in seconds (decimal) and SIGNATURE the
// unpadded base64url encoding of the 32-byte HMAC-SHA256, keyed by the
// signing key, of one of:
//
//	read:     "kvdb read v1" 0x00 KEY 0x00 VERSION(8 bytes BE) EXPIRY(8 bytes BE)
//	internal: "kvdb internal v1" 0x00 METHOD 0x00 VOLUME-ADDR 0x00 PATH "?" QUERY
//
// A read signature covers the percent-decoded key and the version, so any
// client's (equivalent) re-encoding of the path still verifies; GET and
// HEAD share it. An internal signature covers the method, the target
// volume's advertised HOST:PORT (a request captured on its way to one
// volume cannot be replayed against another) and the request target
// exactly as sent, up to and including "e=EXPIRY": every argument (v=,
// from=, start=...) is covered. Node clocks must agree to within
// clockSkew (run NTP).

import (
	"bytes"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

const (
	// MinSecretLen is the shortest cluster secret accepted, in bytes.
	MinSecretLen = 16
	// DefaultRedirectTTL is how long a signed read redirect stays valid by
	// default. A transfer must start within it, not finish: a 1 GiB read
	// that began in time runs to the end.
	DefaultRedirectTTL = time.Hour
	// internalTTL is how long a signed request to a volume's internal API
	// stays valid: enough for a queued request and some clock skew, short
	// enough that a captured one is soon useless.
	internalTTL = 5 * time.Minute
	// clockSkew is how long after its expiry a signature is still taken,
	// for clocks that disagree a little.
	clockSkew = time.Minute
)

// Labels keep the keys derived from one secret apart.
const (
	gossipKeyLabel = "kvdb gossip key v1"
	signKeyLabel   = "kvdb request signing key v1"
	readMsgLabel   = "kvdb read v1"
	internalLabel  = "kvdb internal v1"
)

// sigLen is the length of an encoded signature.
var sigLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// errUnsigned and friends are the reasons a volume gives with its 403.
var (
	errUnsigned     = errors.New("request is not signed (e= and s= missing): volumes only serve URLs signed by the master")
	errBadSignature = errors.New("bad signature")
	errExpired      = errors.New("signature expired")
	errSigFormat    = errors.New("malformed e= or s=")
)

// deriveKey derives a 32-byte key for one purpose from the cluster secret.
func deriveKey(secret []byte, label string) []byte {
	k, err := hkdf.Key(sha256.New, secret, []byte("kvdb"), label, 32)
	if err != nil {
		// Only a requested length over 255 hash blocks fails.
		panic(err)
	}
	return k
}

// gossipKey is the memberlist (AES-256-GCM) key for a cluster secret.
func gossipKey(secret []byte) []byte { return deriveKey(secret, gossipKeyLabel) }

// validateSecret checks a role's Secret against its Gossip.Secret.
func validateSecret(role string, secret, gossipSecret []byte) error {
	switch {
	case len(secret) == 0:
		return nil
	case len(secret) < MinSecretLen:
		return fmt.Errorf("%s: cluster secret is %d bytes, want at least %d", role, len(secret), MinSecretLen)
	case len(gossipSecret) > 0:
		return fmt.Errorf("%s: set the cluster secret or Gossip.Secret, not both (gossip's key is derived from the cluster secret)", role)
	}
	return nil
}

// ReadSecretFile reads a cluster secret from path, without the surrounding
// whitespace (a trailing newline), and checks its length.
func ReadSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("secret file: %w", err)
	}
	b = bytes.TrimSpace(b)
	if len(b) < MinSecretLen {
		return nil, fmt.Errorf("secret file %s: secret is %d bytes, want at least %d", path, len(b), MinSecretLen)
	}
	return b, nil
}

// signer signs and checks requests with the key derived from the cluster
// secret. A nil *signer means no secret: it signs nothing and lets every
// request through, so callers need no branches.
type signer struct {
	key  []byte
	pool sync.Pool // *macState
	// self is this volume's advertised HTTP address, which internal
	// requests must be signed for; unset until the volume knows it.
	self atomic.Pointer[string]
}

// macState is one pooled HMAC with room for the message, so that signing
// a redirect allocates nothing.
type macState struct {
	mac hash.Hash
	msg []byte
	sum [sha256.Size]byte
}

func newSigner(secret []byte) *signer {
	if len(secret) == 0 {
		return nil
	}
	s := &signer{key: deriveKey(secret, signKeyLabel)}
	s.pool.New = func() any {
		return &macState{mac: hmac.New(sha256.New, s.key), msg: make([]byte, 0, 256)}
	}
	return s
}

// setSelf records the address internal requests to this node are signed for.
func (s *signer) setSelf(addr string) {
	if s != nil {
		s.self.Store(&addr)
	}
}

// compute returns the HMAC of st.msg (in st.sum).
func (st *macState) compute() []byte {
	st.mac.Reset()
	st.mac.Write(st.msg)
	return st.mac.Sum(st.sum[:0])
}

func (s *signer) get() *macState {
	st := s.pool.Get().(*macState)
	st.msg = st.msg[:0]
	return st
}

func (s *signer) put(st *macState) {
	if cap(st.msg) > 4<<10 {
		st.msg = make([]byte, 0, 256)
	}
	s.pool.Put(st)
}

// appendReadMsg is the message a read URL's signature covers: key,
// version, expiry and, when the URL carries one, its m= argument (the
// response headers the volume is to send, see metaArg).
func appendReadMsg(dst, key []byte, version uint64, expiry int64, meta []byte) []byte {
	dst = append(dst, readMsgLabel...)
	dst = append(dst, 0)
	dst = append(dst, key...)
	dst = append(dst, 0)
	dst = binary.BigEndian.AppendUint64(dst, version)
	dst = binary.BigEndian.AppendUint64(dst, uint64(expiry))
	if len(meta) > 0 {
		dst = append(dst, 'm')
		dst = append(dst, meta...)
	}
	return dst
}

// appendReadSig appends "&e=EXPIRY&s=SIG" to a blob URL (which ends in
// "?v=VERSION") for key and version. It allocates nothing when dst has room.
func (s *signer) appendReadSig(dst, key []byte, version uint64, expiry int64) []byte {
	return s.appendReadSigMeta(dst, key, version, expiry, nil)
}

// appendReadSigMeta is appendReadSig of a URL that carries meta as its
// m= argument.
func (s *signer) appendReadSigMeta(dst, key []byte, version uint64, expiry int64, meta []byte) []byte {
	if s == nil {
		return dst
	}
	st := s.get()
	st.msg = appendReadMsg(st.msg, key, version, expiry, meta)
	sum := st.compute()
	dst = append(dst, "&e="...)
	dst = strconv.AppendInt(dst, expiry, 10)
	dst = append(dst, "&s="...)
	dst = base64.RawURLEncoding.AppendEncode(dst, sum)
	s.put(st)
	return dst
}

// signURL signs a request to a volume's internal API: uri is
// "http://HOST:PORT/PATH[?QUERY]" exactly as it will be sent (the client
// must not re-encode the path), and the result has "e=EXPIRY&s=SIG"
// appended to the query.
func (s *signer) signURL(method, uri string) string {
	if s == nil {
		return uri
	}
	return s.signURLExpiring(method, uri, time.Now().Add(internalTTL).Unix())
}

func (s *signer) signURLExpiring(method, uri string, expiry int64) string {
	rest, _ := strings.CutPrefix(uri, "http://")
	if strings.IndexByte(rest, '/') < 0 {
		uri, rest = uri+"/", rest+"/" // the path the client sends
	}
	i := strings.IndexByte(rest, '/')
	addr, target := rest[:i], rest[i:]
	b := make([]byte, 0, len(uri)+24+sigLen)
	b = append(b, uri...)
	if strings.IndexByte(target, '?') >= 0 {
		b = append(b, '&')
	} else {
		b = append(b, '?')
	}
	b = append(b, "e="...)
	b = strconv.AppendInt(b, expiry, 10)
	signed := b[len(uri)-len(target):]
	st := s.get()
	st.msg = appendInternalMsg(st.msg, method, addr, signed)
	sum := st.compute()
	b = append(b, "&s="...)
	b = base64.RawURLEncoding.AppendEncode(b, sum)
	s.put(st)
	return string(b)
}

func appendInternalMsg(dst []byte, method, addr string, target []byte) []byte {
	dst = append(dst, internalLabel...)
	dst = append(dst, 0)
	dst = append(dst, method...)
	dst = append(dst, 0)
	dst = append(dst, addr...)
	dst = append(dst, 0)
	return append(dst, target...)
}

// parseSigArgs reads the values of e= and s=.
func parseSigArgs(e, s []byte) (expiry int64, sig [sha256.Size]byte, err error) {
	if len(e) == 0 && len(s) == 0 {
		return 0, sig, errUnsigned
	}
	if len(e) == 0 || len(e) > 19 || len(s) != sigLen {
		return 0, sig, errSigFormat
	}
	for _, c := range e {
		if c < '0' || c > '9' || expiry > (math.MaxInt64-9)/10 {
			return 0, sig, errSigFormat
		}
		expiry = expiry*10 + int64(c-'0')
	}
	if n, err := base64.RawURLEncoding.Decode(sig[:], s); err != nil || n != len(sig) {
		return 0, sig, errSigFormat
	}
	return expiry, sig, nil
}

// splitSignedQuery splits a raw query that ends in "e=EXPIRY&s=SIG" into
// the signed part (up to and including EXPIRY) and the two values.
func splitSignedQuery(q []byte) (signed, e, s []byte, err error) {
	i := bytes.LastIndex(q, []byte("&s="))
	if i < 0 {
		return nil, nil, nil, errUnsigned
	}
	signed, s = q[:i], q[i+len("&s="):]
	j := bytes.LastIndexByte(signed, '&') + 1
	if !bytes.HasPrefix(signed[j:], []byte("e=")) {
		return nil, nil, nil, errSigFormat
	}
	return signed, signed[j+len("e="):], s, nil
}

// checkExpiry reports whether a signature that expires at expiry is still
// good at now, allowing for clockSkew.
func checkExpiry(expiry int64, now time.Time) error {
	if now.Add(-clockSkew).Unix() > expiry {
		return errExpired
	}
	return nil
}

// verifyRead checks a read URL's signature (e= and s= from the query).
func (s *signer) verifyRead(key []byte, version uint64, e, sv []byte, now time.Time) error {
	return s.verifyReadMeta(key, version, e, sv, nil, now)
}

// verifyReadMeta is verifyRead of a URL whose m= argument is meta.
func (s *signer) verifyReadMeta(key []byte, version uint64, e, sv, meta []byte, now time.Time) error {
	expiry, sig, err := parseSigArgs(e, sv)
	if err != nil {
		return err
	}
	st := s.get()
	st.msg = appendReadMsg(st.msg, key, version, expiry, meta)
	ok := hmac.Equal(st.compute(), sig[:])
	s.put(st)
	if !ok {
		return errBadSignature
	}
	return checkExpiry(expiry, now)
}

// verifyInternal checks the signature of a request to this volume's
// internal API: path and query exactly as received.
func (s *signer) verifyInternal(method []byte, path, query []byte, now time.Time) error {
	self := s.self.Load()
	if self == nil {
		return errors.New("volume is starting")
	}
	signed, e, sv, err := splitSignedQuery(query)
	if err != nil {
		return err
	}
	expiry, sig, err := parseSigArgs(e, sv)
	if err != nil {
		return err
	}
	st := s.get()
	st.msg = appendInternalMsg(st.msg, string(method), *self, path)
	st.msg = append(st.msg, '?')
	st.msg = append(st.msg, signed...)
	ok := hmac.Equal(st.compute(), sig[:])
	s.put(st)
	if !ok {
		return errBadSignature
	}
	return checkExpiry(expiry, now)
}

// forbid answers 403 with the reason a signature was refused.
func forbid(ctx *fasthttp.RequestCtx, err error) {
	replyText(ctx, fasthttp.StatusForbidden, "forbidden: "+err.Error())
}

// allowRead is the volume's check of a value read (GET or HEAD of
// /KEY?v=VERSION&e=...&s=...); it answers 403 itself and returns false when
// the read is refused. version is 0 when the URL names none, which no
// master signs.
func (s *signer) allowRead(ctx *fasthttp.RequestCtx, key []byte, version uint64) bool {
	if s == nil {
		return true
	}
	args := ctx.QueryArgs()
	if err := s.verifyReadMeta(key, version, args.Peek("e"), args.Peek("s"), args.Peek("m"), time.Now()); err != nil {
		forbid(ctx, err)
		return false
	}
	return true
}

// openInternal reports whether a volume's internal endpoint (the path
// after /_kvdb/) is open without a signature: probes and monitoring.
func openInternal(rest []byte) bool {
	switch string(rest) {
	case "live", "ready", "cluster", "metrics":
		return true
	}
	return bytes.HasPrefix(rest, []byte("debug/pprof/"))
}

// allowInternal is the volume's check of a request under /_kvdb/: every
// endpoint but the open ones needs a valid signature. It answers 403 itself
// and returns false when the request is refused.
func (s *signer) allowInternal(ctx *fasthttp.RequestCtx, rest []byte) bool {
	if s == nil || openInternal(rest) {
		return true
	}
	if err := s.verifyInternal(ctx.Method(), ctx.URI().PathOriginal(), ctx.URI().QueryString(), time.Now()); err != nil {
		forbid(ctx, err)
		return false
	}
	return true
}
