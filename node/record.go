package node

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"time"
)

// Record is what the master knows about one key: which version is current,
// its size and checksum, and which volumes hold that version.
type Record struct {
	Version  uint64
	Size     int64
	Checksum uint64
	ModTime  time.Time
	Replicas []string // volume names, in placement order
	// Parts is the number of parts of a multipart value (multipart.go),
	// 0 for a value stored as one blob. A multipart value's bytes are the
	// blobs its manifest lists; its own record names no replica.
	Parts int
	// Meta is set when S3 metadata (Content-Type and the rest) is
	// recorded for this very version (objmeta.go): the native GET and HEAD
	// then return it too, and others skip the lookup.
	Meta bool
}

// ETag is the value's entity tag: its checksum in quoted hex.
func (r *Record) ETag() string {
	var b [32]byte
	return string(r.appendTag(b[:0]))
}

// appendTag appends the value's entity tag: the checksum in quoted hex,
// and for a multipart value "-PARTS" after it (its checksum is not the
// xxHash of its bytes, and clients check only 16-digit tags).
func (r *Record) appendTag(dst []byte) []byte {
	dst = appendETag(dst, r.Checksum)
	if r.Parts > 0 {
		dst = append(dst[:len(dst)-1], '-')
		dst = strconv.AppendInt(dst, int64(r.Parts), 10)
		dst = append(dst, '"')
	}
	return dst
}

func etag(sum uint64) string {
	var b [18]byte
	return string(appendETag(b[:0], sum))
}

func appendETag(dst []byte, sum uint64) []byte {
	const hexDigits = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 60; i >= 0; i -= 4 {
		dst = append(dst, hexDigits[(sum>>uint(i))&15])
	}
	return append(dst, '"')
}

// recordFormat is the first byte of every encoded record; bump it when the
// layout changes and keep decoding the old one. recordFormatParts is the
// same layout followed by the uvarint part count, written only for a
// multipart value (so every other record stays as it was).
const (
	recordFormat      = 1
	recordFormatParts = 2
	// recordFlagMeta is added to the format byte of a record with
	// Meta set.
	recordFlagMeta = 4
)

// maxParts is the most parts a multipart value has (S3's limit).
const maxParts = 10000

const maxReplicasInRecord = 64

var errRecord = errors.New("node: malformed index record")

// appendRecord encodes r after dst: format byte, uvarint version, varint
// size, fixed64 checksum, varint mtime (unix ns), uvarint replica count,
// then each replica name as uvarint length + bytes.
func appendRecord(dst []byte, r *Record) []byte {
	format := byte(recordFormat)
	if r.Parts > 0 {
		format = recordFormatParts
	}
	if r.Meta {
		format |= recordFlagMeta
	}
	dst = append(dst, format)
	dst = binary.AppendUvarint(dst, r.Version)
	dst = binary.AppendVarint(dst, r.Size)
	dst = binary.LittleEndian.AppendUint64(dst, r.Checksum)
	dst = binary.AppendVarint(dst, r.ModTime.UnixNano())
	dst = binary.AppendUvarint(dst, uint64(len(r.Replicas)))
	for _, name := range r.Replicas {
		dst = binary.AppendUvarint(dst, uint64(len(name)))
		dst = append(dst, name...)
	}
	if r.Parts > 0 {
		dst = binary.AppendUvarint(dst, uint64(r.Parts))
	}
	return dst
}

// decodeRecord parses what appendRecord wrote. It never panics on bad input.
func decodeRecord(b []byte, r *Record) error {
	if len(b) == 0 {
		return fmt.Errorf("%w: empty", errRecord)
	}
	format := b[0] &^ recordFlagMeta
	if format != recordFormat && format != recordFormatParts {
		return fmt.Errorf("%w: unknown format", errRecord)
	}
	withParts := format == recordFormatParts
	r.Meta = b[0]&recordFlagMeta != 0
	b = b[1:]
	var n int
	if r.Version, n = binary.Uvarint(b); n <= 0 {
		return fmt.Errorf("%w: version", errRecord)
	}
	b = b[n:]
	if r.Size, n = binary.Varint(b); n <= 0 || r.Size < 0 {
		return fmt.Errorf("%w: size", errRecord)
	}
	b = b[n:]
	if len(b) < 8 {
		return fmt.Errorf("%w: checksum", errRecord)
	}
	r.Checksum = binary.LittleEndian.Uint64(b)
	b = b[8:]
	mtime, n := binary.Varint(b)
	if n <= 0 {
		return fmt.Errorf("%w: mtime", errRecord)
	}
	r.ModTime = time.Unix(0, mtime).UTC()
	b = b[n:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > maxReplicasInRecord {
		return fmt.Errorf("%w: replica count", errRecord)
	}
	b = b[n:]
	r.Replicas = r.Replicas[:0]
	for i := uint64(0); i < count; i++ {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) || l == 0 {
			return fmt.Errorf("%w: replica %d", errRecord, i)
		}
		r.Replicas = append(r.Replicas, string(b[n:n+int(l)]))
		b = b[n+int(l):]
	}
	r.Parts = 0
	if withParts {
		parts, n := binary.Uvarint(b)
		if n <= 0 || parts == 0 || parts > maxParts {
			return fmt.Errorf("%w: part count", errRecord)
		}
		r.Parts = int(parts)
		b = b[n:]
	}
	if len(b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errRecord, len(b))
	}
	return nil
}

// versionTime is the write time a version encodes (the master hands out
// versions from its clock in nanoseconds).
func versionTime(v uint64) time.Time { return time.Unix(0, int64(v)).UTC() }

// formatVersion renders a version the way volume URLs carry it.
func formatVersion(v uint64) string { return strconv.FormatUint(v, 16) }

func appendVersion(dst []byte, v uint64) []byte { return strconv.AppendUint(dst, v, 16) }

func parseVersion(b []byte) (uint64, error) {
	if len(b) == 0 || len(b) > 16 {
		return 0, errors.New("bad version")
	}
	var v uint64
	for _, c := range b {
		// Lower-case hex only, as formatVersion writes it.
		var d byte
		switch {
		case '0' <= c && c <= '9':
			d = c - '0'
		case 'a' <= c && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, errors.New("bad version")
		}
		v = v<<4 | uint64(d)
	}
	return v, nil
}

// clone returns a copy of r that shares nothing with it.
func (r *Record) clone() Record {
	c := *r
	c.Replicas = append([]string(nil), r.Replicas...)
	return c
}
