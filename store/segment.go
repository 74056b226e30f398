package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/cespare/xxhash/v2"
)

// Segments. Values of at most Config.SmallValueMax bytes are not given a
// file each: they are appended, with their key and metadata, to the
// volume's log, a series of segment files DIR/segments/<seq>.seg, where
// <seq> is 16 hex digits. The log is written by one goroutine (log.go) that
// appends the records of every Put and Delete waiting at that moment and
// makes them durable with one fdatasync. The newest segment is the active
// one; older segments are sealed and never written again. Compaction
// (compact.go) copies the live records of sealed segments that are mostly
// garbage into a new segment of kind "compacted" and removes them.
//
// A segment file starts with a 24-byte header:
//
//	off len
//	  0   8  magic "kvdbsegm"
//	  8   1  format (1)
//	  9   1  kind: 1 log, 2 compacted
//	 10   2  reserved, zero
//	 12   4  CRC-32C of bytes [0,12) and [16,24)
//	 16   8  sequence number of the segment (its file name)
//
// Records follow, each starting at a multiple of 8 bytes and padded with
// zeros to the next one:
//
//	off len
//	  0   4  CRC-32C of bytes [4,48) and the key
//	  4   1  type: 1 put, 2 delete (a tombstone)
//	  5   1  reserved, zero
//	  6   2  key length
//	  8   8  LSN: the record's birth position, sequence<<32 | offset
//	 16   8  version
//	 24   8  put: value length; delete: zero
//	 32   8  put: xxhash64 of the value; delete: the birth sequence of the put it deletes, 0 for a blob file
//	 40   8  modification time, Unix nanoseconds, of the value (put) or of the deleted blob file; else zero
//	 48   -  key, then (put) the value
//
// All integers are big-endian. The LSN is where the record was first
// written; compaction copies a record with its LSN, so copies of one put
// share it, and LSNs grow in the order the log was written: for one
// (key, version) the record with the highest LSN says whether it is held.
// That lets Rebuild recreate the index from the segments alone, whatever
// copies compaction left behind.
//
// Deleting a blob file also writes a tombstone, naming the file's
// modification time instead (the file is removed in the background; if a
// crash comes first, Rebuild must not index it again). It is kept while
// the file exists.
//
// A tombstone names the birth sequence of the put it deletes; it is kept
// (and copied by compaction) as long as a segment that may hold a record
// born in that sequence exists, so that Rebuild never brings a deleted
// value back. A log segment holds records born in itself only; a
// compacted segment ends with the list of the birth sequences of the puts
// it holds, then a 24-byte footer:
//
//	off len
//	  0   4  number of sequences n (the list is the 8·n bytes before the footer)
//	  4   4  CRC-32C of the list and bytes [0,4) and [8,16) of the footer
//	  8   8  offset of the list in the file
//	 16   8  magic "kvdbsum1"
//
// A compacted segment without a valid footer was being written when the
// process died; it was not used yet (records are switched to it only once
// it is complete and durable), and Open removes it, unless the index does
// point into it (its footer rotted): then it stays, as holding any birth.
//
// Log segments are extended with zeros ahead of the records (written and
// fdatasynced in the background), so that the fdatasync of a commit
// overwrites allocated blocks in place instead of growing the file, which
// on ext4 saves a journal commit per fsync. A reader of the log takes a
// zero header, or any record that fails its checks, as garbage and looks
// for the next valid record 8 bytes further.

const (
	segMagic        = "kvdbsegm"
	segFormat1      = 1
	segKindLog      = 1
	segKindCompact  = 2
	segHeaderLen    = 24
	recHeaderLen    = 48
	recAlign        = 8
	recPut          = 1
	recDelete       = 2
	segFooterLen    = 24
	segFooterMagic  = "kvdbsum1"
	segExt          = ".seg"
	segNameLen      = 16 + len(segExt)
	maxSegmentSize  = 1 << 30 // offsets must fit in the low 32 bits of an LSN
	minSegmentSize  = 1 << 20
	maxSegBirthList = 1 << 24 // sanity bound on a footer's list
)

// MaxSmallValueMax is the largest Config.SmallValueMax accepted: a packed
// record is staged whole in the pooled streaming buffer.
const MaxSmallValueMax = 1 << 20

func segName(seq uint64) string {
	var b [segNameLen]byte
	const digits = "0123456789abcdef"
	for i := range 16 {
		b[15-i] = digits[(seq>>(4*i))&0xf]
	}
	copy(b[16:], segExt)
	return string(b[:])
}

// parseSegName returns the sequence number of a segment file name.
func parseSegName(name string) (uint64, bool) {
	if len(name) != segNameLen || !strings.HasSuffix(name, segExt) {
		return 0, false
	}
	for _, c := range []byte(name[:16]) {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return 0, false
		}
	}
	seq, err := strconv.ParseUint(name[:16], 16, 64)
	if err != nil || seq == 0 || seq >= 1<<32 {
		return 0, false
	}
	return seq, true
}

func lsnOf(seq uint64, off int64) uint64 { return seq<<32 | uint64(off) }

// birthOf returns the sequence of the segment a record was first written to.
func birthOf(lsn uint64) uint64 { return lsn >> 32 }

func alignRec(n int64) int64 { return (n + recAlign - 1) &^ (recAlign - 1) }

// recLen is the length of a record, padding included.
func recLen(keyLen int, size int64) int64 { return alignRec(recHeaderLen + int64(keyLen) + size) }

func appendSegHeader(dst []byte, kind byte, seq uint64) []byte {
	start := len(dst)
	dst = append(dst, segMagic...)
	dst = append(dst, segFormat1, kind, 0, 0)
	dst = append(dst, 0, 0, 0, 0) // CRC, below
	dst = binary.BigEndian.AppendUint64(dst, seq)
	h := dst[start:]
	crc := crc32.Update(crc32.Checksum(h[:12], castagnoli), castagnoli, h[16:24])
	binary.BigEndian.PutUint32(h[12:], crc)
	return dst
}

var errSegHeader = errors.New("bad segment header")

func decodeSegHeader(h []byte) (kind byte, seq uint64, err error) {
	if len(h) < segHeaderLen || string(h[:8]) != segMagic {
		return 0, 0, fmt.Errorf("%w: %w: no magic", ErrCorrupt, errSegHeader)
	}
	if crc := crc32.Update(crc32.Checksum(h[:12], castagnoli), castagnoli, h[16:24]); crc != binary.BigEndian.Uint32(h[12:]) {
		return 0, 0, fmt.Errorf("%w: %w: crc mismatch", ErrCorrupt, errSegHeader)
	}
	if h[8] != segFormat1 || h[10]|h[11] != 0 || (h[9] != segKindLog && h[9] != segKindCompact) {
		return 0, 0, fmt.Errorf("%w: %w: unknown format %d kind %d", ErrCorrupt, errSegHeader, h[8], h[9])
	}
	return h[9], binary.BigEndian.Uint64(h[16:]), nil
}

// logRec is one record of a segment, as encoded or decoded.
type logRec struct {
	typ      byte
	key      []byte // decoded: aliases the read buffer
	lsn      uint64
	version  uint64
	size     int64  // put
	checksum uint64 // put
	modNanos int64  // put
	target   uint64 // delete: the birth sequence of the deleted put; 0: a blob file, modNanos says which
}

// putHeader fills the first recHeaderLen bytes of b and the key after
// them, for a record whose LSN is not known yet: sealRec sets it and the CRC.
func putHeader(b []byte, r logRec) {
	b[4], b[5] = r.typ, 0
	binary.BigEndian.PutUint16(b[6:], uint16(len(r.key)))
	binary.BigEndian.PutUint64(b[8:], 0)
	binary.BigEndian.PutUint64(b[16:], r.version)
	switch r.typ {
	case recPut:
		binary.BigEndian.PutUint64(b[24:], uint64(r.size))
		binary.BigEndian.PutUint64(b[32:], r.checksum)
		binary.BigEndian.PutUint64(b[40:], uint64(r.modNanos))
	case recDelete:
		binary.BigEndian.PutUint64(b[24:], 0)
		binary.BigEndian.PutUint64(b[32:], r.target)
		binary.BigEndian.PutUint64(b[40:], uint64(r.modNanos))
	}
	copy(b[recHeaderLen:], r.key)
}

// sealRec writes the LSN into an encoded record and computes its CRC.
func sealRec(b []byte, lsn uint64) {
	binary.BigEndian.PutUint64(b[8:], lsn)
	kl := int(binary.BigEndian.Uint16(b[6:]))
	binary.BigEndian.PutUint32(b[0:], crc32.Checksum(b[4:recHeaderLen+kl], castagnoli))
}

// decodeRecHeader decodes the header and key at the start of b (which must
// hold at least recHeaderLen bytes, and the key if the header is valid).
// It checks everything but the value. maxSize bounds a put's length.
func decodeRecHeader(b []byte, maxSize int64) (logRec, bool) {
	if len(b) < recHeaderLen {
		return logRec{}, false
	}
	typ := b[4]
	kl := int(binary.BigEndian.Uint16(b[6:]))
	if (typ != recPut && typ != recDelete) || b[5] != 0 || kl == 0 || kl > MaxKeyLen || len(b) < recHeaderLen+kl {
		return logRec{}, false
	}
	if crc32.Checksum(b[4:recHeaderLen+kl], castagnoli) != binary.BigEndian.Uint32(b) {
		return logRec{}, false
	}
	r := logRec{
		typ:     typ,
		key:     b[recHeaderLen : recHeaderLen+kl],
		lsn:     binary.BigEndian.Uint64(b[8:]),
		version: binary.BigEndian.Uint64(b[16:]),
	}
	if checkKey(r.key) != nil {
		return logRec{}, false
	}
	switch typ {
	case recPut:
		size := binary.BigEndian.Uint64(b[24:])
		if size > uint64(maxSize) {
			return logRec{}, false
		}
		r.size = int64(size)
		r.checksum = binary.BigEndian.Uint64(b[32:])
		r.modNanos = int64(binary.BigEndian.Uint64(b[40:]))
	case recDelete:
		r.target = binary.BigEndian.Uint64(b[32:])
		r.modNanos = int64(binary.BigEndian.Uint64(b[40:]))
		if binary.BigEndian.Uint64(b[24:]) != 0 || (r.target != 0 && r.modNanos != 0) {
			return logRec{}, false
		}
	}
	return r, true
}

// encodeFooter returns the birth list and footer of a compacted segment
// whose list starts at offset at.
func encodeFooter(births []uint64, at int64) []byte {
	b := make([]byte, 0, 8*len(births)+segFooterLen)
	for _, s := range births {
		b = binary.BigEndian.AppendUint64(b, s)
	}
	list := len(b)
	b = binary.BigEndian.AppendUint32(b, uint32(len(births)))
	b = append(b, 0, 0, 0, 0)
	b = binary.BigEndian.AppendUint64(b, uint64(at))
	b = append(b, segFooterMagic...)
	f := b[list:]
	crc := crc32.Update(crc32.Checksum(b[:list+4], castagnoli), castagnoli, f[8:16])
	binary.BigEndian.PutUint32(f[4:], crc)
	return b
}

// readFooter reads the footer of a compacted segment of size bytes: the
// birth list and where the records end.
func readFooter(f *os.File, size int64) (births []uint64, end int64, err error) {
	if size < segHeaderLen+segFooterLen {
		return nil, 0, errors.New("no footer")
	}
	var foot [segFooterLen]byte
	if _, err := f.ReadAt(foot[:], size-segFooterLen); err != nil {
		return nil, 0, fmt.Errorf("read footer: %w", err)
	}
	n := int64(binary.BigEndian.Uint32(foot[:]))
	at := int64(binary.BigEndian.Uint64(foot[8:]))
	if string(foot[16:]) != segFooterMagic || n > maxSegBirthList || at < segHeaderLen || at+8*n != size-segFooterLen {
		return nil, 0, errors.New("no footer")
	}
	list := make([]byte, 8*n+4)
	if _, err := f.ReadAt(list[:8*n], at); err != nil {
		return nil, 0, fmt.Errorf("read birth list: %w", err)
	}
	copy(list[8*n:], foot[:4])
	if crc32.Update(crc32.Checksum(list, castagnoli), castagnoli, foot[8:16]) != binary.BigEndian.Uint32(foot[4:]) {
		return nil, 0, errors.New("footer crc mismatch")
	}
	births = make([]uint64, n)
	for i := range births {
		births[i] = binary.BigEndian.Uint64(list[8*i:])
	}
	return births, at, nil
}

// segInfo is what openSegment learns from a segment file's header and footer.
type segInfo struct {
	seq    uint64
	kind   byte
	size   int64    // file size
	end    int64    // where records end: the file size, or a compacted segment's birth list
	births []uint64 // sorted
}

// openSegment reads the header (and footer) of the segment file at path.
func openSegment(path string) (segInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return segInfo{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return segInfo{}, err
	}
	if !fi.Mode().IsRegular() {
		return segInfo{}, errors.New("not a regular file")
	}
	var h [segHeaderLen]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return segInfo{}, fmt.Errorf("%w: %w: %w", ErrCorrupt, errSegHeader, err)
	}
	kind, seq, err := decodeSegHeader(h[:])
	if err != nil {
		return segInfo{}, err
	}
	if want, ok := parseSegName(filepath.Base(path)); !ok || want != seq {
		return segInfo{}, fmt.Errorf("%w: header names segment %d", ErrCorrupt, seq)
	}
	si := segInfo{seq: seq, kind: kind, size: fi.Size(), end: fi.Size(), births: []uint64{seq}}
	if kind == segKindCompact {
		births, end, err := readFooter(f, fi.Size())
		if err != nil {
			return si, fmt.Errorf("%w: incomplete compacted segment: %w", errIncomplete, err)
		}
		slices.Sort(births)
		si.births, si.end = slices.Compact(births), end
	}
	return si, nil
}

var errIncomplete = errors.New("incomplete")

// scanned is one record found by scanSegment. Its key and value alias the
// scanner's buffer and are only valid during the callback.
type scanned struct {
	logRec
	off   int64  // where the record starts
	rec   []byte // the whole record, padding included
	value []byte // put: the value
	bad   error  // put whose value fails its checksum: the header is sound, the value is not
}

// scanSegment calls fn for every record of the segment file f between
// segHeaderLen and end, in file order, until fn returns false. A stretch
// that is not a valid record (zeros past the last commit, a torn write,
// rot) is skipped 8 bytes at a time; a put whose header is sound but whose
// value does not match its checksum is passed with bad set. buf, if large
// enough, is the read buffer.
func scanSegment(f *os.File, end int64, buf []byte, fn func(*scanned) bool) error {
	return scanSegmentFrom(f, segHeaderLen, end, buf, fn)
}

// scanSegmentFrom is scanSegment from offset from, a record boundary.
func scanSegmentFrom(f *os.File, from, end int64, buf []byte, fn func(*scanned) bool) error {
	if len(buf) < scanBufLen {
		buf = make([]byte, scanBufLen)
	}
	rd := segReader{f: f, buf: buf, limit: end, pos: from}
	var sc scanned
	for {
		b, err := rd.peek(recHeaderLen)
		if err != nil || b == nil {
			return err
		}
		if isZero(b[:recAlign]) {
			if err := rd.skipZeros(); err != nil {
				return err
			}
			continue
		}
		// Peek the key too, when the header says it is there.
		if kl := int(binary.BigEndian.Uint16(b[6:])); kl > 0 && kl <= MaxKeyLen {
			b2, err := rd.peek(recHeaderLen + kl)
			if err != nil {
				return err
			}
			if b2 != nil {
				b = b2
			}
		}
		r, ok := decodeRecHeader(b, MaxSmallValueMax)
		var full []byte
		if ok {
			n := recLen(len(r.key), r.size)
			if full, err = rd.peek(int(n)); err != nil {
				return err
			}
		}
		if full == nil {
			rd.discard(recAlign)
			continue
		}
		r, _ = decodeRecHeader(full, MaxSmallValueMax) // its key aliases full
		sc = scanned{logRec: r, off: rd.pos, rec: full}
		if r.typ == recPut {
			v := recHeaderLen + int64(len(r.key))
			sc.value = full[v : v+r.size]
			if got := xxhash.Sum64(sc.value); got != r.checksum {
				sc.bad = fmt.Errorf("%w: value checksum %016x, want %016x", ErrCorrupt, got, r.checksum)
			}
		}
		if !fn(&sc) {
			return nil
		}
		rd.discard(len(full))
	}
}

// scanBufLen holds two of the longest records, so a record is always seen
// whole in the window.
const scanBufLen = 2 * (recHeaderLen + MaxKeyLen + MaxSmallValueMax + recAlign)

func isZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// segReader reads a segment sequentially through a window buffer, so that
// a whole record can be looked at in place.
type segReader struct {
	f      *os.File
	buf    []byte
	lo, hi int   // the window: buf[lo:hi] holds the file's bytes from pos
	limit  int64 // end of the records
	pos    int64
}

// peek returns n bytes at the current position, or nil if the records end
// before.
func (r *segReader) peek(n int) ([]byte, error) {
	if int64(n) > r.limit-r.pos || n > len(r.buf) {
		return nil, nil
	}
	if r.hi-r.lo >= n {
		return r.buf[r.lo : r.lo+n], nil
	}
	if len(r.buf)-r.lo < n {
		r.hi = copy(r.buf, r.buf[r.lo:r.hi])
		r.lo = 0
	}
	// Fill the rest of the buffer, up to the limit.
	want := min(int64(len(r.buf)-r.hi), r.limit-r.pos-int64(r.hi-r.lo))
	for r.hi-r.lo < n {
		m, err := r.f.ReadAt(r.buf[r.hi:r.hi+int(want)], r.pos+int64(r.hi-r.lo))
		r.hi += m
		want -= int64(m)
		if err == io.EOF || (err == nil && m == 0) {
			// The file is shorter than the limit: its records end here.
			r.limit = r.pos + int64(r.hi-r.lo)
			if r.hi-r.lo < n {
				return nil, nil
			}
			break
		}
		if err != nil {
			return nil, fmt.Errorf("read segment %s at %d: %w", r.f.Name(), r.pos+int64(r.hi-r.lo), err)
		}
	}
	return r.buf[r.lo : r.lo+n], nil
}

// discard moves the position n bytes on; the bytes must have been peeked.
func (r *segReader) discard(n int) {
	r.lo += n
	r.pos += int64(n)
}

// skipZeros moves past a run of zero words.
func (r *segReader) skipZeros() error {
	for {
		b, err := r.peek(recAlign)
		if err != nil || b == nil || !isZero(b) {
			return err
		}
		i := r.lo
		for i+recAlign <= r.hi && isZero(r.buf[i:i+recAlign]) {
			i += recAlign
		}
		r.discard(i - r.lo)
	}
}
