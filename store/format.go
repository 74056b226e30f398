package store

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/crc32"
	"math"
	"path/filepath"
	"time"
)

// MaxKeyLen is the longest key the store accepts, in bytes.
const MaxKeyLen = 1024

// checkKey reports ErrBadKey for an empty key, one longer than MaxKeyLen or one
// holding a NUL byte. NUL is forbidden because it separates the key from the
// version in index keys, which keeps the index in (key, version) order.
func checkKey(key []byte) error {
	switch {
	case len(key) == 0:
		return fmt.Errorf("%w: empty", ErrBadKey)
	case len(key) > MaxKeyLen:
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrBadKey, len(key), MaxKeyLen)
	case bytes.IndexByte(key, 0) >= 0:
		return fmt.Errorf("%w: contains a NUL byte", ErrBadKey)
	}
	return nil
}

// Index keys: key | 0x00 | version (8 bytes, big-endian). Because keys hold
// no NUL, byte order of index keys is (key, version) order.

const versionLen = 8

func indexKey(key []byte, version uint64) []byte {
	ik := make([]byte, 0, len(key)+1+versionLen)
	ik = append(ik, key...)
	ik = append(ik, 0)
	return binary.BigEndian.AppendUint64(ik, version)
}

// keyRange returns the index key range [start, limit) holding every version
// of key.
func keyRange(key []byte) (start, limit []byte) {
	start = make([]byte, 0, len(key)+1)
	start = append(start, key...)
	start = append(start, 0)
	limit = make([]byte, 0, len(key)+1)
	limit = append(limit, key...)
	limit = append(limit, 1)
	return start, limit
}

// splitIndexKey is the inverse of indexKey. The returned key aliases ik.
func splitIndexKey(ik []byte) (key []byte, version uint64, err error) {
	n := len(ik) - versionLen - 1
	if n < 1 || ik[n] != 0 {
		return nil, 0, fmt.Errorf("malformed index key of %d bytes", len(ik))
	}
	return ik[:n], binary.BigEndian.Uint64(ik[n+1:]), nil
}

// Index records. Layout of format 1 (a value in a blob file of its own):
//
//	byte 0      format (1)
//	uvarint     size
//	8 bytes     xxhash64 checksum, big-endian
//	varint      modification time, Unix nanoseconds
//
// Format 2 (a value packed into a segment) adds, after those:
//
//	uvarint     sequence number of the segment holding the record
//	uvarint     offset of the record in the segment
//	uvarint     the record's LSN (see segment.go)
//
// A decoder rejects unknown formats and trailing bytes so that a record
// written by a newer format is never misread.

const (
	recordFormat1 = 1
	recordFormat2 = 2
)

type record struct {
	size     int64
	checksum uint64
	modNanos int64
	// seg is the segment holding a packed value, 0 for a blob file; off is
	// where its record starts there, lsn its LSN.
	seg uint64
	off int64
	lsn uint64
}

func (r record) packed() bool { return r.seg != 0 }

// valueOff is where a packed value starts in its segment.
func (r record) valueOff(keyLen int) int64 { return r.off + recHeaderLen + int64(keyLen) }

// maxRecordLen bounds an encoded record: format byte, five varints, checksum.
const maxRecordLen = 1 + 5*binary.MaxVarintLen64 + 8

func appendRecord(dst []byte, r record) []byte {
	format := byte(recordFormat1)
	if r.packed() {
		format = recordFormat2
	}
	dst = append(dst, format)
	dst = binary.AppendUvarint(dst, uint64(r.size))
	dst = binary.BigEndian.AppendUint64(dst, r.checksum)
	dst = binary.AppendVarint(dst, r.modNanos)
	if r.packed() {
		dst = binary.AppendUvarint(dst, r.seg)
		dst = binary.AppendUvarint(dst, uint64(r.off))
		dst = binary.AppendUvarint(dst, r.lsn)
	}
	return dst
}

var errRecord = errors.New("malformed index record")

func decodeRecord(b []byte) (record, error) {
	if len(b) == 0 {
		return record{}, fmt.Errorf("%w: empty", errRecord)
	}
	format := b[0]
	if format != recordFormat1 && format != recordFormat2 {
		return record{}, fmt.Errorf("%w: unknown format %d", errRecord, b[0])
	}
	b = b[1:]
	size, n := binary.Uvarint(b)
	if n <= 0 || size > math.MaxInt64 {
		return record{}, fmt.Errorf("%w: bad size", errRecord)
	}
	b = b[n:]
	if len(b) < 8 {
		return record{}, fmt.Errorf("%w: short checksum", errRecord)
	}
	sum := binary.BigEndian.Uint64(b)
	b = b[8:]
	mod, n := binary.Varint(b)
	if n <= 0 {
		return record{}, fmt.Errorf("%w: bad modification time", errRecord)
	}
	b = b[n:]
	r := record{size: int64(size), checksum: sum, modNanos: mod}
	if format == recordFormat2 {
		var vals [3]uint64
		for i := range vals {
			if vals[i], n = binary.Uvarint(b); n <= 0 {
				return record{}, fmt.Errorf("%w: bad segment location", errRecord)
			}
			b = b[n:]
		}
		if vals[0] == 0 || vals[0] >= 1<<32 || vals[1] >= 1<<32 || r.size > MaxSmallValueMax {
			return record{}, fmt.Errorf("%w: bad segment location %d@%d", errRecord, vals[0], vals[1])
		}
		r.seg, r.off, r.lsn = vals[0], int64(vals[1]), vals[2]
	}
	if len(b) != 0 {
		return record{}, fmt.Errorf("%w: %d trailing bytes", errRecord, len(b))
	}
	return r, nil
}

func (r record) meta(key []byte, version uint64) Meta {
	return Meta{
		Key:      bytes.Clone(key),
		Version:  version,
		Size:     r.size,
		Checksum: r.checksum,
		ModTime:  time.Unix(0, r.modNanos).UTC(),
	}
}

// Blob trailer. A blob file is the value bytes, then the key bytes, then this
// fixed footer, so that the index can be rebuilt from the files alone:
//
//	off len
//	  0   1  format (1)
//	  1   3  reserved, zero
//	  4   4  key length
//	  8   8  version
//	 16   8  size of the value
//	 24   8  xxhash64 of the value
//	 32   8  modification time, Unix nanoseconds
//	 40   4  CRC-32C of the key bytes and footer[0:40]
//	 44   8  magic "kvdbblob"
//
// All integers are big-endian. The magic sits at the very end so that a file
// that is not a kvdb blob (or was truncated) is recognised from its last bytes.

const (
	trailerFormat1 = 1
	footerLen      = 52
	trailerMagic   = "kvdbblob"
	// maxTrailerLen is the longest trailer: the longest key plus the footer.
	maxTrailerLen = MaxKeyLen + footerLen
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// trailerLen is the number of bytes that follow the value in a blob file.
func trailerLen(keyLen int) int64 { return int64(keyLen) + footerLen }

type trailer struct {
	key      []byte // aliases the decoded buffer
	version  uint64
	size     int64
	checksum uint64
	modNanos int64
}

func appendTrailer(dst []byte, t trailer) []byte {
	start := len(dst)
	dst = append(dst, t.key...)
	foot := len(dst)
	dst = append(dst, trailerFormat1, 0, 0, 0)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(t.key)))
	dst = binary.BigEndian.AppendUint64(dst, t.version)
	dst = binary.BigEndian.AppendUint64(dst, uint64(t.size))
	dst = binary.BigEndian.AppendUint64(dst, t.checksum)
	dst = binary.BigEndian.AppendUint64(dst, uint64(t.modNanos))
	dst = binary.BigEndian.AppendUint32(dst, crc32.Checksum(dst[start:foot+40], castagnoli))
	return append(dst, trailerMagic...)
}

var errTrailer = errors.New("bad trailer")

// decodeTrailer decodes the trailer at the end of tail, the last len(tail)
// bytes of a blob file of fileSize bytes. It checks the magic, format, CRC,
// key and that value and trailer add up to exactly fileSize. Errors wrap
// ErrCorrupt.
func decodeTrailer(tail []byte, fileSize int64) (trailer, error) {
	if int64(len(tail)) > fileSize {
		return trailer{}, fmt.Errorf("%w: %w: %d tail bytes in a file of %d", ErrCorrupt, errTrailer, len(tail), fileSize)
	}
	if len(tail) < footerLen {
		return trailer{}, fmt.Errorf("%w: %w: file of %d bytes is too short", ErrCorrupt, errTrailer, fileSize)
	}
	f := tail[len(tail)-footerLen:]
	if string(f[44:]) != trailerMagic {
		return trailer{}, fmt.Errorf("%w: %w: no magic", ErrCorrupt, errTrailer)
	}
	if f[0] != trailerFormat1 {
		return trailer{}, fmt.Errorf("%w: %w: unknown format %d", ErrCorrupt, errTrailer, f[0])
	}
	if f[1]|f[2]|f[3] != 0 {
		return trailer{}, fmt.Errorf("%w: %w: reserved bytes set", ErrCorrupt, errTrailer)
	}
	keyLen := binary.BigEndian.Uint32(f[4:])
	if keyLen == 0 || keyLen > MaxKeyLen || int(keyLen) > len(tail)-footerLen {
		return trailer{}, fmt.Errorf("%w: %w: key length %d", ErrCorrupt, errTrailer, keyLen)
	}
	t := tail[len(tail)-footerLen-int(keyLen):]
	if got, want := crc32.Checksum(t[:int(keyLen)+40], castagnoli), binary.BigEndian.Uint32(f[40:]); got != want {
		return trailer{}, fmt.Errorf("%w: %w: crc %08x, want %08x", ErrCorrupt, errTrailer, got, want)
	}
	tr := trailer{
		key:      t[:keyLen],
		version:  binary.BigEndian.Uint64(f[8:]),
		checksum: binary.BigEndian.Uint64(f[24:]),
		modNanos: int64(binary.BigEndian.Uint64(f[32:])),
	}
	if err := checkKey(tr.key); err != nil {
		return trailer{}, fmt.Errorf("%w: %w: %w", ErrCorrupt, errTrailer, err)
	}
	size := binary.BigEndian.Uint64(f[16:])
	if size > math.MaxInt64 || int64(size) != fileSize-trailerLen(int(keyLen)) {
		return trailer{}, fmt.Errorf("%w: %w: value size %d, trailer of %d bytes and file of %d bytes disagree",
			ErrCorrupt, errTrailer, size, trailerLen(int(keyLen)), fileSize)
	}
	tr.size = int64(size)
	return tr, nil
}

// Blob paths. The name comes from a hash of the key, never the key itself.

const (
	hashHexLen  = 32 // hex digits of sha256(key)[:16]
	blobNameLen = hashHexLen + 1 + 16
)

// blobName returns "<32 hex of sha256(key)[:16]>-<16 hex version>".
func blobName(key []byte, version uint64) string {
	sum := sha256.Sum256(key)
	var v [versionLen]byte
	binary.BigEndian.PutUint64(v[:], version)
	var b [blobNameLen]byte
	hex.Encode(b[:hashHexLen], sum[:16])
	b[hashHexLen] = '-'
	hex.Encode(b[hashHexLen+1:], v[:])
	return string(b[:])
}

// blobRel returns the path of a blob file relative to DIR/blobs: ab/name.
// One level of 256 directories: each is created once, the first time a
// file lands in it, so a volume soon does no directory work per value.
func blobRel(name string) string {
	return filepath.Join(name[0:2], name)
}

// legacyRel returns where volumes written before the one-level layout
// keep a blob file: ab/cd/name. Such files are read, deleted and rebuilt
// from where they are; new files never go there.
func legacyRel(name string) string {
	return filepath.Join(name[0:2], name[2:4], name)
}
