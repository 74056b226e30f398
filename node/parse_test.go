package node

import (
	"reflect"
	"testing"
	"time"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		h          string
		size       int64
		start, end int64
		err        error
	}{
		{"bytes=0-9", 100, 0, 9, nil},
		{"bytes=10-", 100, 10, 99, nil},
		{"bytes=-10", 100, 90, 99, nil},
		{"bytes=-1000", 100, 0, 99, nil},
		{"bytes=50-1000", 100, 50, 99, nil},
		{"BYTES = 1-2", 100, 0, 0, errRangeIgnored},
		{"Bytes=1-2", 100, 1, 2, nil},
		{"bytes=100-", 100, 0, 0, errRangeUnsatisfiable},
		{"bytes=-0", 100, 0, 0, errRangeUnsatisfiable},
		{"bytes=0-0", 0, 0, 0, errRangeUnsatisfiable},
		{"bytes=5-4", 100, 0, 0, errRangeIgnored},
		{"bytes=0-1,3-4", 100, 0, 0, errRangeIgnored},
		{"items=0-1", 100, 0, 0, errRangeIgnored},
		{"bytes=a-b", 100, 0, 0, errRangeIgnored},
		{"bytes=", 100, 0, 0, errRangeIgnored},
		{"bytes=-", 100, 0, 0, errRangeIgnored},
		{"bytes=99999999999999999999-", 100, 0, 0, errRangeUnsatisfiable},
		{"bytes=0-18446744073709551616", 100, 0, 99, nil},
		{"bytes=10-99999999999999999999999999", 100, 10, 99, nil},
		{"bytes=-18446744073709551616", 100, 0, 99, nil},
	}
	for _, tt := range tests {
		s, e, err := parseRange([]byte(tt.h), tt.size)
		if err != tt.err || err == nil && (s != tt.start || e != tt.end) {
			t.Errorf("parseRange(%q, %d) = %d, %d, %v; want %d, %d, %v", tt.h, tt.size, s, e, err, tt.start, tt.end, tt.err)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	f.Add([]byte("bytes=0-9"), int64(100))
	f.Add([]byte("bytes=-5"), int64(3))
	f.Add([]byte("bytes=7-"), int64(0))
	f.Fuzz(func(t *testing.T, h []byte, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 {
			return
		}
		s, e, err := parseRange(h, size)
		if err != nil {
			return
		}
		if s < 0 || e < s || e >= size {
			t.Fatalf("parseRange(%q, %d) = %d, %d: outside the value", h, size, s, e)
		}
	})
}

func TestRecordRoundTrip(t *testing.T) {
	recs := []Record{
		{Version: 1, Size: 0, Checksum: 0, ModTime: time.Unix(0, 0).UTC()},
		{Version: 1<<63 + 5, Size: 1 << 40, Checksum: 0xdeadbeefcafef00d, ModTime: time.Unix(1700000000, 123).UTC(), Replicas: []string{"vol1", "vol-2"}},
		{Version: 9, Size: 5, Checksum: 3, ModTime: time.Unix(7, 0).UTC(), Replicas: []string{"vol1"}, Meta: true},
		{Version: 10, Size: 50 << 20, Checksum: 4, ModTime: time.Unix(8, 0).UTC(), Parts: 7, Meta: true},
	}
	for _, r := range recs {
		var got Record
		if err := decodeRecord(appendRecord(nil, &r), &got); err != nil {
			t.Fatalf("decode(encode(%+v)): %v", r, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("round trip: got %+v, want %+v", got, r)
		}
	}
	for _, bad := range [][]byte{nil, {2}, {1}, {1, 1, 1}, {5}, {8, 1, 1}, {3, 1, 1}, append(appendRecord(nil, &recs[1]), 0)} {
		var got Record
		if err := decodeRecord(bad, &got); err == nil {
			t.Errorf("decodeRecord(%x): got no error", bad)
		}
	}
}

func FuzzDecodeRecord(f *testing.F) {
	f.Add(appendRecord(nil, &Record{Version: 7, Size: 3, Checksum: 9, ModTime: time.Unix(5, 0), Replicas: []string{"a", "b"}}))
	f.Add(appendRecord(nil, &Record{Version: 8, Size: 12 << 20, Checksum: 9, ModTime: time.Unix(5, 0), Parts: 3}))
	f.Add(appendRecord(nil, &Record{Version: 8, Size: 12 << 20, Checksum: 9, ModTime: time.Unix(5, 0), Parts: 3, Meta: true}))
	f.Add([]byte{1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r Record
		if err := decodeRecord(b, &r); err != nil {
			return
		}
		var again Record
		if err := decodeRecord(appendRecord(nil, &r), &again); err != nil || !reflect.DeepEqual(r, again) {
			t.Fatalf("re-encoding %+v: got %+v, %v", r, again, err)
		}
	})
}

func FuzzDecodeMeta(f *testing.F) {
	b, _ := encodeMeta(nodeMeta{Role: RoleVolume, HTTP: "127.0.0.1:3001", Free: 10, Total: 20})
	f.Add(b)
	f.Add([]byte(`{"v":1,"r":"master","h":"[::1]:3000"}`))
	f.Add([]byte(`{"v":2}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMeta(b)
		if err != nil {
			return
		}
		enc, err := encodeMeta(m)
		if err != nil {
			t.Fatalf("re-encoding %+v: %v", m, err)
		}
		if again, err := decodeMeta(enc); err != nil || again != m {
			t.Fatalf("round trip of %+v: got %+v, %v", m, again, err)
		}
	})
}

func TestEscapedKeyInLocation(t *testing.T) {
	key := []byte("a b/ü?#%&x")
	loc := blobURL("127.0.0.1:1", key, 0xabc)
	if want := "http://127.0.0.1:1/a%20b/%C3%BC%3F%23%25%26x?v=abc"; loc != want {
		t.Fatalf("got %s, want %s", loc, want)
	}
}

func TestParseVersion(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want uint64
		ok   bool
	}{{"abc", 0xabc, true}, {"ffffffffffffffff", 1<<64 - 1, true}, {"", 0, false}, {"ABC", 0, false}, {"1ffffffffffffffff", 0, false}, {"-1", 0, false}} {
		got, err := parseVersion([]byte(tt.in))
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseVersion(%q) = %x, %v; want %x ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}
