package node

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// A write ticket lets a client send a value straight to a volume (the
// redirected write path, see coordinate.go): the master admits the write
// from its headers (Expect: 100-continue), assigns the version and the
// replicas, records the intent, and answers 307 to the first replica with
// the ticket in the URL. The ticket names everything the volume needs; the
// master keeps its own copy of what it promised (the catalog's w entry) and
// checks the coordinator's commit against it, so a ticket is good once.
//
// Wire format: the URL is
//
//	/_kvdb/write/KEY?t=TICKET[&s=SIGNATURE]
//
// TICKET is the unpadded base64url encoding of
//
//	format(1) version(uvarint) size(varint, -1 unknown) max(varint)
//	expiry(varint unix s)
//	nreplicas(uvarint) names... nspares(uvarint) names...
//
// each name as uvarint length + bytes followed by its HTTP address the same
// way. With a cluster secret, SIGNATURE is
// the base64url HMAC-SHA256, under the signing key, of
// "kvdb ticket v1" 0x00 KEY 0x00 TICKET-BYTES: a ticket cannot be altered
// or moved to another key.
type ticket struct {
	Version  uint64
	Size     int64 // the declared size, -1 for a chunked body
	Max      int64 // the largest value the master takes
	Expiry   int64 // unix seconds: the upload must start by then
	Replicas []string
	Spares   []string
	// Addrs are the HTTP addresses of Replicas then Spares, in order: the
	// coordinator need not have heard of a volume by gossip yet.
	Addrs []string
}

// addr returns the HTTP address the ticket gives volume name.
func (t *ticket) addr(name string) (string, bool) {
	for i, n := range append(t.Replicas[:len(t.Replicas):len(t.Replicas)], t.Spares...) {
		if n == name && i < len(t.Addrs) {
			return t.Addrs[i], true
		}
	}
	return "", false
}

const (
	ticketFormat = 1
	ticketLabel  = "kvdb ticket v1"
	// ticketTTL is how long a client has to start sending the body to the
	// volume after the master's 307.
	ticketTTL = time.Minute
	// maxTicketNames bounds the replicas plus spares a ticket names.
	maxTicketNames = 32
)

var (
	errTicket        = errors.New("malformed write ticket")
	errTicketExpired = errors.New("write ticket expired")
	errTicketSig     = errors.New("write ticket signature does not match")
)

func (t *ticket) appendBinary(dst []byte) []byte {
	dst = append(dst, ticketFormat)
	dst = binary.AppendUvarint(dst, t.Version)
	dst = binary.AppendVarint(dst, t.Size)
	dst = binary.AppendVarint(dst, t.Max)
	dst = binary.AppendVarint(dst, t.Expiry)
	i := 0
	for _, names := range [][]string{t.Replicas, t.Spares} {
		dst = binary.AppendUvarint(dst, uint64(len(names)))
		for _, n := range names {
			dst = binary.AppendUvarint(dst, uint64(len(n)))
			dst = append(dst, n...)
			addr := ""
			if i < len(t.Addrs) {
				addr = t.Addrs[i]
			}
			i++
			dst = binary.AppendUvarint(dst, uint64(len(addr)))
			dst = append(dst, addr...)
		}
	}
	return dst
}

func parseTicketBinary(b []byte) (ticket, error) {
	var t ticket
	if len(b) == 0 || b[0] != ticketFormat {
		return t, errTicket
	}
	b = b[1:]
	var n int
	if t.Version, n = binary.Uvarint(b); n <= 0 {
		return t, errTicket
	}
	b = b[n:]
	if t.Size, n = binary.Varint(b); n <= 0 || t.Size < -1 {
		return t, errTicket
	}
	b = b[n:]
	if t.Max, n = binary.Varint(b); n <= 0 || t.Max < 0 {
		return t, errTicket
	}
	b = b[n:]
	if t.Expiry, n = binary.Varint(b); n <= 0 {
		return t, errTicket
	}
	b = b[n:]
	total := 0
	for _, dst := range []*[]string{&t.Replicas, &t.Spares} {
		count, n := binary.Uvarint(b)
		if n <= 0 || count > maxTicketNames {
			return t, errTicket
		}
		b = b[n:]
		for range count {
			l, n := binary.Uvarint(b)
			if n <= 0 || l == 0 || l > uint64(len(b)-n) {
				return t, errTicket
			}
			name := string(b[n : n+int(l)])
			if !nameRE.MatchString(name) {
				return t, errTicket
			}
			*dst = append(*dst, name)
			b = b[n+int(l):]
			l, n = binary.Uvarint(b)
			if n <= 0 || l > 256 || l > uint64(len(b)-n) {
				return t, errTicket
			}
			t.Addrs = append(t.Addrs, string(b[n:n+int(l)]))
			b = b[n+int(l):]
		}
		total += len(*dst)
	}
	if len(b) != 0 || len(t.Replicas) == 0 || total > maxTicketNames {
		return t, errTicket
	}
	return t, nil
}

// ticketQuery is the query string of a ticket URL for key: "t=...&s=...".
func (s *signer) ticketQuery(key []byte, t *ticket) string {
	raw := t.appendBinary(nil)
	q := "t=" + base64.RawURLEncoding.EncodeToString(raw)
	if s == nil {
		return q
	}
	return q + "&s=" + base64.RawURLEncoding.EncodeToString(s.ticketMAC(key, raw))
}

func (s *signer) ticketMAC(key, raw []byte) []byte {
	st := s.get()
	defer s.put(st)
	st.msg = append(st.msg, ticketLabel...)
	st.msg = append(st.msg, 0)
	st.msg = append(st.msg, key...)
	st.msg = append(st.msg, 0)
	st.msg = append(st.msg, raw...)
	return append([]byte(nil), st.compute()...)
}

// parseTicket decodes and checks the t= and s= arguments of a ticket URL
// for key at now.
func (s *signer) parseTicket(key, t64, s64 []byte, now time.Time) (ticket, error) {
	raw, err := base64.RawURLEncoding.AppendDecode(nil, t64)
	if err != nil {
		return ticket{}, errTicket
	}
	if s != nil {
		sig, err := base64.RawURLEncoding.AppendDecode(nil, s64)
		if err != nil || !hmac.Equal(sig, s.ticketMAC(key, raw)) {
			return ticket{}, errTicketSig
		}
	}
	t, err := parseTicketBinary(raw)
	if err != nil {
		return t, err
	}
	if now.Add(-clockSkew).Unix() > t.Expiry {
		return t, errTicketExpired
	}
	return t, nil
}

// String describes t for logs.
func (t ticket) String() string {
	return fmt.Sprintf("v%s size %d replicas %v spares %v", formatVersion(t.Version), t.Size, t.Replicas, t.Spares)
}
