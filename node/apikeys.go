package node

// Client API keys. When the master has any, every request to it needs one,
// sent as "Authorization: Bearer TOKEN" (or, for browsers and curl -u, as
// the password of HTTP Basic authentication: "Authorization: Basic
// base64(ANYTHING:TOKEN)"). A token is never taken from the URL: URLs end
// up in access logs, browser history and Referer headers.
//
//   - /_kvdb/live and /_kvdb/ready stay open, for orchestrators' probes;
//   - GET and HEAD (reads, listings, /_kvdb/metrics, /_kvdb/cluster,
//     /_kvdb/status) need a read-only or a read-write key;
//   - every other method (PUT, POST, DELETE) needs a read-write key.
//
// No or an unknown key is answered 401 with WWW-Authenticate: Bearer; a
// read-only key that tries to write, 403. The check runs on the headers,
// before any byte of the body is read. Tokens are compared in constant
// time: the master compares SHA-256 digests with crypto/subtle and looks
// at every key each time.

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/valyala/fasthttp"
)

// MinTokenLen is the shortest API key token accepted, in bytes.
const MinTokenLen = 16

// APIKey is one client credential for the master's API.
type APIKey struct {
	// Token is what the client sends: "Authorization: Bearer TOKEN". At
	// least MinTokenLen characters of the RFC 6750 token alphabet
	// (A-Z a-z 0-9 - . _ ~ + / =).
	Token string
	// ReadOnly limits the key to GET and HEAD: reads, listings and the
	// admin pages. A read-write key may also PUT, POST and DELETE.
	ReadOnly bool
	// S3, when set, makes this an S3 credential (s3keys.go); Token is then
	// S3Token of it.
	S3 *S3Credential
}

// ParseAPIKeys reads an API keys file: one key a line, "TOKEN rw" or
// "TOKEN ro"; blank lines and lines starting with # are ignored, as is
// anything after a # that follows whitespace.
func ParseAPIKeys(r io.Reader) ([]APIKey, error) {
	var keys []APIKey
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		if i := strings.Index(line, "\t#"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		if f[0] == "s3" {
			k, err := parseS3KeyLine(f)
			if err != nil {
				return nil, fmt.Errorf("api keys line %d: %w", n, err)
			}
			keys = append(keys, k)
			continue
		}
		if len(f) != 2 {
			return nil, fmt.Errorf("api keys line %d: want \"TOKEN rw\" or \"TOKEN ro\"", n)
		}
		k := APIKey{Token: f[0]}
		switch f[1] {
		case "rw":
		case "ro":
			k.ReadOnly = true
		default:
			return nil, fmt.Errorf("api keys line %d: access %q: want rw or ro", n, f[1])
		}
		if err := k.validate(); err != nil {
			return nil, fmt.Errorf("api keys line %d: %w", n, err)
		}
		keys = append(keys, k)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("api keys: %w", err)
	}
	if len(keys) == 0 {
		return nil, errors.New("api keys: the file holds no key")
	}
	return keys, validateAPIKeys(keys)
}

// LoadAPIKeys reads an API keys file (see ParseAPIKeys).
func LoadAPIKeys(path string) ([]APIKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("api keys: %w", err)
	}
	defer f.Close()
	keys, err := ParseAPIKeys(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return keys, nil
}

func (k APIKey) validate() error {
	if len(k.Token) < MinTokenLen {
		return fmt.Errorf("token is %d characters, want at least %d", len(k.Token), MinTokenLen)
	}
	for i := 0; i < len(k.Token); i++ {
		if !isTokenChar(k.Token[i]) {
			return errors.New("token has a character outside A-Z a-z 0-9 - . _ ~ + / =")
		}
	}
	return nil
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~+/=", c) >= 0
}

func validateAPIKeys(keys []APIKey) error {
	seen := make(map[string]bool, len(keys))
	for _, k := range keys {
		if err := k.validate(); err != nil {
			return fmt.Errorf("api key: %w", err)
		}
		if seen[k.Token] {
			return errors.New("api key: a token is listed twice")
		}
		seen[k.Token] = true
	}
	return nil
}

// apiKey is an APIKey as the master keeps it: the token's digest.
type apiKey struct {
	sum      [sha256.Size]byte
	readOnly bool
}

func newAPIKeys(keys []APIKey) []apiKey {
	out := make([]apiKey, len(keys))
	for i, k := range keys {
		out[i] = apiKey{sum: sha256.Sum256([]byte(k.Token)), readOnly: k.ReadOnly}
	}
	return out
}

// match finds token's key in constant time (for a given number of keys).
func matchAPIKey(keys []apiKey, token []byte) (found, readOnly bool) {
	sum := sha256.Sum256(token)
	for i := range keys {
		if subtle.ConstantTimeCompare(keys[i].sum[:], sum[:]) == 1 {
			found, readOnly = true, keys[i].readOnly
		}
	}
	return found, readOnly
}

// requestToken returns the token of an Authorization header, Bearer or
// Basic (the password). buf receives a decoded Basic credential.
func requestToken(h *fasthttp.RequestHeader, buf []byte) ([]byte, bool) {
	auth := h.Peek("Authorization")
	scheme, cred, ok := bytes.Cut(auth, []byte(" "))
	if !ok {
		return nil, false
	}
	cred = bytes.TrimSpace(cred)
	switch {
	case bytes.EqualFold(scheme, []byte("Bearer")):
		return cred, len(cred) > 0
	case bytes.EqualFold(scheme, []byte("Basic")):
		if base64.StdEncoding.DecodedLen(len(cred)) > len(buf) {
			return nil, false
		}
		n, err := base64.StdEncoding.Decode(buf, cred)
		if err != nil {
			return nil, false
		}
		_, pass, ok := bytes.Cut(buf[:n], []byte(":"))
		return pass, ok && len(pass) > 0
	}
	return nil, false
}

// authorize checks the request's API key when the master has keys; it
// answers 401 or 403 itself and returns false when the request is refused.
// It allocates nothing for a request it lets through.
func (m *Master) authorize(ctx *fasthttp.RequestCtx, path []byte) bool {
	status, msg := m.authStatus(ctx, path)
	if status == 0 {
		return true
	}
	h := &ctx.Response.Header
	switch {
	case status == fasthttp.StatusForbidden:
		h.Add("WWW-Authenticate", `Bearer realm="kvdb", error="insufficient_scope"`)
	case msg == msgUnknownKey:
		h.Add("WWW-Authenticate", `Bearer realm="kvdb", error="invalid_token"`)
	default:
		h.Add("WWW-Authenticate", `Bearer realm="kvdb"`)
	}
	if status == fasthttp.StatusUnauthorized && string(path) == "/"+ReservedPrefix+"status" {
		// Lets a browser ask for the token (as the password).
		h.Add("WWW-Authenticate", `Basic realm="kvdb", charset="UTF-8"`)
	}
	replyText(ctx, status, msg)
	return false
}

const msgUnknownKey = "unknown API key"

// authStatus checks the request's API key without answering: 0 when it
// may go on, else 401 or 403 and the reason.
func (m *Master) authStatus(ctx *fasthttp.RequestCtx, path []byte) (int, string) {
	if len(m.keys) == 0 {
		return 0, ""
	}
	read := ctx.IsGet() || ctx.IsHead()
	if read {
		switch string(path) {
		case "/" + ReservedPrefix + "live", "/" + ReservedPrefix + "ready":
			return 0, ""
		}
	}
	var buf [512]byte
	token, given := requestToken(&ctx.Request.Header, buf[:])
	found, readOnly := false, false
	if given {
		found, readOnly = matchAPIKey(m.keys, token)
	}
	switch {
	case !found && given:
		return fasthttp.StatusUnauthorized, msgUnknownKey
	case !found:
		return fasthttp.StatusUnauthorized, "missing API key: send Authorization: Bearer TOKEN"
	case readOnly && !read:
		return fasthttp.StatusForbidden, "read-only API key: " + string(ctx.Method()) + " needs a read-write key"
	}
	return 0, ""
}
