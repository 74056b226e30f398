package node

import (
	"bytes"
	"errors"

	"github.com/kvdb/kvdb/node/client"
	"github.com/kvdb/kvdb/store"
)

// The key rules belong to the HTTP API and are declared once, in
// node/client, which the servers and the client share. The names below are
// the server's for the same constants, errors and functions.

// MaxKeyLen is the longest key, in bytes after percent-decoding.
const MaxKeyLen = client.MaxKeyLen

// ReservedPrefix starts every admin path; no key may begin with it.
const ReservedPrefix = client.ReservedPrefix

// Key parsing errors (the values of node/client). Each maps to 400 Bad
// Request; the message is the one-line reason sent to the client.
var (
	ErrKeyEmpty      = client.ErrKeyEmpty
	ErrKeyTooLong    = client.ErrKeyTooLong
	ErrKeyEncoding   = client.ErrKeyEncoding
	ErrKeyReserved   = client.ErrKeyReserved
	ErrKeyNUL        = client.ErrKeyNUL
	ErrKeyUTF8       = client.ErrKeyUTF8
	ErrKeyDotSegment = client.ErrKeyDotSegment
)

// ParseKey turns the raw (still percent-encoded) request path into a key;
// see client.ParseKey.
func ParseKey(dst, rawPath []byte) ([]byte, error) { return client.ParseKey(dst, rawPath) }

// parseStoredKey is ParseKey for the endpoints that handle stored blobs
// (a volume's reads and internal API, lost-copy reports): it also takes
// the keys of multipart parts and of manifest blobs, under the reserved
// prefix, which the client API refuses.
func parseStoredKey(dst, rawPath []byte) ([]byte, error) {
	key, err := client.ParseKey(dst, rawPath)
	if !errors.Is(err, ErrKeyReserved) {
		return key, err
	}
	if len(rawPath) > 0 && rawPath[0] == '/' {
		rawPath = rawPath[1:]
	}
	key, err = client.AppendUnescapedKey(dst[:0], rawPath)
	if err != nil {
		return nil, err
	}
	if err := validateStoredKey(key); err != nil {
		return nil, err
	}
	return key, nil
}

// validateStoredKey checks a decoded key that a volume may hold: a key of
// the client API, a multipart part's key or a manifest blob's key.
func validateStoredKey(key []byte) error {
	err := client.ValidateKey(key)
	if !errors.Is(err, ErrKeyReserved) {
		return err
	}
	if obj, ok := bytes.CutPrefix(key, []byte(manifestBlobPrefix)); ok {
		if len(key) > store.MaxKeyLen {
			return ErrKeyTooLong
		}
		return client.ValidateKey(obj)
	}
	if _, _, ok := parsePartKey(key); !ok {
		return ErrKeyReserved
	}
	return client.ValidateKey(key[len(ReservedPrefix):])
}

// ValidateKey checks a decoded key against the rules of ParseKey.
func ValidateKey(key []byte) error { return client.ValidateKey(key) }

// ValidatePrefix checks a listing prefix: like a key, but it may be empty.
func ValidatePrefix(prefix []byte) error { return client.ValidatePrefix(prefix) }

// AppendEscapedKey appends key to dst percent-encoded for use as a URL path
// (without the leading '/'). ParseKey inverts it.
func AppendEscapedKey(dst, key []byte) []byte { return client.AppendEscapedKey(dst, key) }

// unescape percent-decodes a key or prefix from a URL path strictly.
func unescape(dst, s []byte) ([]byte, error) { return client.AppendUnescapedKey(dst, s) }
