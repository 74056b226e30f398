package store

import (
	"bytes"
	"errors"
	"math"
	"testing"
)

func TestBlobNameGolden(t *testing.T) {
	// File names are on disk: they must not change.
	tests := []struct {
		key     string
		version uint64
		want    string
	}{
		{"a", 1, "ca978112ca1bbdcafac231b39a23dc4d-0000000000000001"},
		{"../etc/passwd", 0xdeadbeef, "7fef78f53440346c04dac510d59620d4-00000000deadbeef"},
	}
	for _, tt := range tests {
		if got := blobName([]byte(tt.key), tt.version); got != tt.want {
			t.Errorf("blobName(%q, %d): got %s, want %s", tt.key, tt.version, got, tt.want)
		}
	}
}

func TestIndexKeyOrder(t *testing.T) {
	// Index keys sort as (key, version).
	ordered := []struct {
		key     string
		version uint64
	}{
		{"a", 0}, {"a", 1}, {"a", 256}, {"a", math.MaxUint64},
		{"a\x01", 0}, {"ab", 0}, {"b", 5},
	}
	for i := 1; i < len(ordered); i++ {
		a := indexKey([]byte(ordered[i-1].key), ordered[i-1].version)
		b := indexKey([]byte(ordered[i].key), ordered[i].version)
		if bytes.Compare(a, b) >= 0 {
			t.Errorf("index key of %q v%d does not sort before %q v%d", ordered[i-1].key, ordered[i-1].version, ordered[i].key, ordered[i].version)
		}
		k, v, err := splitIndexKey(b)
		if err != nil || string(k) != ordered[i].key || v != ordered[i].version {
			t.Errorf("splitIndexKey: got %q v%d (%v), want %q v%d", k, v, err, ordered[i].key, ordered[i].version)
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	tests := []record{
		{},
		{size: 1, checksum: 2, modNanos: 3},
		{size: math.MaxInt64, checksum: math.MaxUint64, modNanos: math.MinInt64},
		{size: 1 << 30, checksum: 0xdeadbeef, modNanos: -1},
		{size: 1024, checksum: 9, modNanos: 10, seg: 1, off: segHeaderLen, lsn: lsnOf(1, segHeaderLen)},
		{size: MaxSmallValueMax, checksum: math.MaxUint64, modNanos: math.MinInt64, seg: 1<<32 - 1, off: maxSegmentSize - 1, lsn: math.MaxUint64},
	}
	for _, r := range tests {
		b := appendRecord(nil, r)
		if len(b) > maxRecordLen {
			t.Errorf("record %+v encodes to %d bytes, more than %d", r, len(b), maxRecordLen)
		}
		got, err := decodeRecord(b)
		if err != nil || got != r {
			t.Errorf("decode(encode(%+v)): got %+v, %v", r, got, err)
		}
	}
	bad := map[string][]byte{
		"empty":          nil,
		"format 3":       {3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"no location":    {2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
		"cut location":   appendRecord(nil, record{seg: 1})[:11:11],
		"packed > max":   {2, 0x80, 0x80, 0x41, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 24, 1},
		"short checksum": {1, 5, 1, 2, 3},
		"trailing":       append(appendRecord(nil, record{size: 1}), 0),
		"size > int64":   {1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0},
	}
	for name, b := range bad {
		if _, err := decodeRecord(b); !errors.Is(err, errRecord) {
			t.Errorf("decodeRecord(%s): got %v, want errRecord", name, err)
		}
	}
}

func TestTrailerRoundTrip(t *testing.T) {
	tr := trailer{key: []byte("some/key"), version: 42, size: 5, checksum: 0xabcdef, modNanos: 1700000000123456789}
	file := appendTrailer([]byte("hello"), tr)
	if got, want := int64(len(file)), tr.size+trailerLen(len(tr.key)); got != want {
		t.Fatalf("file length: got %d, want %d", got, want)
	}
	for _, tailLen := range []int{len(file) - 5, len(file), footerLen + len(tr.key)} {
		got, err := decodeTrailer(file[len(file)-tailLen:], int64(len(file)))
		if err != nil || !bytes.Equal(got.key, tr.key) || got.version != tr.version || got.size != tr.size ||
			got.checksum != tr.checksum || got.modNanos != tr.modNanos {
			t.Errorf("decode of a %d-byte tail: got %+v, %v; want %+v", tailLen, got, err, tr)
		}
	}
	// Every single-bit flip in the trailer is caught.
	for i := 5; i < len(file); i++ {
		for bit := range 8 {
			b := bytes.Clone(file)
			b[i] ^= 1 << bit
			if _, err := decodeTrailer(b, int64(len(b))); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("flip of bit %d of byte %d: got %v, want ErrCorrupt", bit, i, err)
			}
		}
	}
	if _, err := decodeTrailer(file[:len(file)-1], int64(len(file)-1)); !errors.Is(err, ErrCorrupt) {
		t.Errorf("truncated trailer: got %v, want ErrCorrupt", err)
	}
	if _, err := decodeTrailer(file, int64(len(file))+1); !errors.Is(err, ErrCorrupt) {
		t.Errorf("file longer than the trailer says: got %v, want ErrCorrupt", err)
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add([]byte{}, int64(0), uint64(0), int64(0))
	f.Add(appendRecord(nil, record{size: 1 << 20, checksum: 7, modNanos: 1700000000000000000}), int64(1<<20), uint64(7), int64(-1))
	f.Add([]byte{1, 0x80, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0}, int64(math.MaxInt64), uint64(math.MaxUint64), int64(math.MinInt64))
	f.Add(appendRecord(nil, record{size: 5, seg: 3, off: 24, lsn: lsnOf(2, 24)}), int64(5), uint64(0), int64(0))
	f.Fuzz(func(t *testing.T, data []byte, size int64, sum uint64, mod int64) {
		if r, err := decodeRecord(data); err == nil {
			if r.size < 0 {
				t.Fatalf("decoded a negative size %d from %x", r.size, data)
			}
			again, err := decodeRecord(appendRecord(nil, r))
			if err != nil || again != r {
				t.Fatalf("re-encoding %+v: got %+v, %v", r, again, err)
			}
		}
		if size < 0 {
			return
		}
		r := record{size: size, checksum: sum, modNanos: mod}
		b := appendRecord(nil, r)
		got, err := decodeRecord(b)
		if err != nil || got != r {
			t.Fatalf("decode(encode(%+v)): got %+v, %v", r, got, err)
		}
	})
}

func FuzzDecodeTrailer(f *testing.F) {
	good := appendTrailer([]byte("value"), trailer{key: []byte("k"), version: 1, size: 5, checksum: 2, modNanos: 3})
	f.Add(good, int64(len(good)), []byte("k"), uint64(1), int64(5), uint64(2), int64(3))
	f.Add(good[5:], int64(len(good)), []byte("a/b"), uint64(0), int64(0), uint64(0), int64(0))
	f.Add([]byte(trailerMagic), int64(8), []byte{0}, uint64(1), int64(-1), uint64(1), int64(1))
	f.Fuzz(func(t *testing.T, tail []byte, fileSize int64, key []byte, version uint64, size int64, sum uint64, mod int64) {
		if tr, err := decodeTrailer(tail, fileSize); err == nil {
			if tr.size < 0 || tr.size+trailerLen(len(tr.key)) != fileSize || checkKey(tr.key) != nil {
				t.Fatalf("accepted an inconsistent trailer %+v for a file of %d bytes", tr, fileSize)
			}
		} else if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("error %v does not wrap ErrCorrupt", err)
		}
		if checkKey(key) != nil || size < 0 || size > math.MaxInt64-maxTrailerLen {
			return
		}
		in := trailer{key: key, version: version, size: size, checksum: sum, modNanos: mod}
		b := appendTrailer(nil, in)
		got, err := decodeTrailer(b, size+int64(len(b)))
		if err != nil || !bytes.Equal(got.key, key) || got.version != version || got.size != size ||
			got.checksum != sum || got.modNanos != mod {
			t.Fatalf("decode(encode(%+v)): got %+v, %v", in, got, err)
		}
	})
}
