package client

import (
	"bytes"
	"errors"
	"unicode/utf8"
)

// The key rules are the HTTP API's: a key travels percent-encoded as the
// path of its URL. The servers parse it with ParseKey, the client escapes it
// with AppendEscapedKey and checks it with ValidateKey before sending, so
// both sides agree byte for byte.

// MaxKeyLen is the longest key, in bytes after percent-decoding.
const MaxKeyLen = 1024

// ReservedPrefix starts every admin path; no key may begin with it.
const ReservedPrefix = "_kvdb/"

// Key errors. A server answers each with 400 Bad Request and the message as
// the one-line reason; a Client returns them before sending anything.
var (
	ErrKeyEmpty      = errors.New("key is empty")
	ErrKeyTooLong    = errors.New("key is longer than 1024 bytes")
	ErrKeyEncoding   = errors.New("key has invalid percent-encoding")
	ErrKeyReserved   = errors.New("key uses the reserved prefix _kvdb/")
	ErrKeyNUL        = errors.New("key contains a NUL byte")
	ErrKeyUTF8       = errors.New("key is not valid UTF-8")
	ErrKeyDotSegment = errors.New("key has a . or .. path segment, which HTTP clients rewrite")
)

// ParseKey turns the raw (still percent-encoded) request path into a key.
// The key is everything after the first '/', percent-decoded. It must be 1
// to MaxKeyLen bytes of valid UTF-8 without NUL, must not start with
// ReservedPrefix and must not hold "." or ".." segments (clients normalise
// those away, so such a key could be written but never read back).
// dst is reused for the result when it has room.
func ParseKey(dst, rawPath []byte) ([]byte, error) {
	if len(rawPath) > 0 && rawPath[0] == '/' {
		rawPath = rawPath[1:]
	}
	key, err := AppendUnescapedKey(dst[:0], rawPath)
	if err != nil {
		return nil, err
	}
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

// ValidateKey checks a decoded key against the rules of ParseKey.
func ValidateKey(key []byte) error {
	switch {
	case len(key) == 0:
		return ErrKeyEmpty
	case len(key) > MaxKeyLen:
		return ErrKeyTooLong
	case bytes.HasPrefix(key, []byte(ReservedPrefix)):
		return ErrKeyReserved
	case bytes.IndexByte(key, 0) >= 0:
		return ErrKeyNUL
	case !utf8.Valid(key):
		return ErrKeyUTF8
	case hasDotSegment(key):
		return ErrKeyDotSegment
	}
	return nil
}

// ValidatePrefix checks a listing prefix: like a key, but it may be empty.
func ValidatePrefix(prefix []byte) error {
	if len(prefix) == 0 {
		return nil
	}
	if err := ValidateKey(prefix); err != nil && err != ErrKeyReserved && err != ErrKeyDotSegment {
		return err
	}
	return nil
}

func hasDotSegment(key []byte) bool {
	for len(key) > 0 {
		seg := key
		if i := bytes.IndexByte(key, '/'); i >= 0 {
			seg, key = key[:i], key[i+1:]
		} else {
			key = nil
		}
		if len(seg) == 1 && seg[0] == '.' || len(seg) == 2 && seg[0] == '.' && seg[1] == '.' {
			return true
		}
	}
	return false
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// AppendUnescapedKey appends s, a key or listing prefix as escaped in a URL
// path, to dst percent-decoded. It is strict: every '%' must be followed by
// two hex digits. '+' stays '+' (it means space only in query strings). It
// checks only the length, not the other rules of ValidateKey.
func AppendUnescapedKey(dst, s []byte) ([]byte, error) {
	if len(s) > 3*MaxKeyLen+3 {
		return nil, ErrKeyTooLong
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '%' {
			dst = append(dst, c)
			continue
		}
		if i+2 >= len(s) {
			return nil, ErrKeyEncoding
		}
		hi, ok1 := unhex(s[i+1])
		lo, ok2 := unhex(s[i+2])
		if !ok1 || !ok2 {
			return nil, ErrKeyEncoding
		}
		dst = append(dst, hi<<4|lo)
		i += 2
	}
	return dst, nil
}

// shouldEscape reports whether c must be percent-encoded in a path built
// from a key: everything but RFC 3986 unreserved characters and '/'.
func shouldEscape(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return false
	}
	switch c {
	case '-', '_', '.', '~', '/':
		return false
	}
	return true
}

// AppendEscapedKey appends key to dst percent-encoded for use as a URL path
// (without the leading '/'). ParseKey inverts it. A key under the reserved
// prefix (which only kvdb's own nodes use, for the parts of multipart
// values) starts "%5F", so that its path never reads as an admin path.
func AppendEscapedKey(dst, key []byte) []byte {
	const hexDigits = "0123456789ABCDEF"
	if bytes.HasPrefix(key, []byte(ReservedPrefix)) {
		dst = append(dst, "%5F"...)
		key = key[1:]
	}
	for _, c := range key {
		if shouldEscape(c) {
			dst = append(dst, '%', hexDigits[c>>4], hexDigits[c&15])
		} else {
			dst = append(dst, c)
		}
	}
	return dst
}
