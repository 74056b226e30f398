package client

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseKey(t *testing.T) {
	tests := []struct {
		raw     string
		want    string
		wantErr error
	}{
		{"/examplekey", "examplekey", nil},
		{"/a/b/c.jpg", "a/b/c.jpg", nil},
		{"/a%20b", "a b", nil},
		{"/a+b", "a+b", nil},
		{"/%E2%9C%93", "✓", nil},
		{"/a//b", "a//b", nil},
		{"/.hidden", ".hidden", nil},
		{"/a/...", "a/...", nil},
		{"/%2Fslash", "/slash", nil},
		{"/", "", ErrKeyEmpty},
		{"", "", ErrKeyEmpty},
		{"/" + strings.Repeat("x", 1024), strings.Repeat("x", 1024), nil},
		{"/" + strings.Repeat("x", 1025), "", ErrKeyTooLong},
		{"/" + strings.Repeat("%41", 1025), "", ErrKeyTooLong},
		{"/a%", "", ErrKeyEncoding},
		{"/a%4", "", ErrKeyEncoding},
		{"/a%g0", "", ErrKeyEncoding},
		{"/a%00", "", ErrKeyNUL},
		{"/%ff%fe", "", ErrKeyUTF8},
		{"/_kvdb/metrics", "", ErrKeyReserved},
		{"/%5fkvdb/x", "", ErrKeyReserved},
		{"/_kvdbx", "_kvdbx", nil},
		{"/..", "", ErrKeyDotSegment},
		{"/a/./b", "", ErrKeyDotSegment},
		{"/a/%2e%2e", "", ErrKeyDotSegment},
	}
	for _, tt := range tests {
		got, err := ParseKey(nil, []byte(tt.raw))
		if !errors.Is(err, tt.wantErr) || err == nil && string(got) != tt.want {
			t.Errorf("ParseKey(%q) = %q, %v; want %q, %v", tt.raw, got, err, tt.want, tt.wantErr)
		}
	}
}

func FuzzParseKey(f *testing.F) {
	for _, s := range []string{"/examplekey", "/a%20b", "/%", "/_kvdb/x", "/a/../b", "/%E2%9C%93", "/a%00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		key, err := ParseKey(nil, raw)
		if err != nil {
			return
		}
		if ValidateKey(key) != nil {
			t.Fatalf("ParseKey accepted %q, ValidateKey refuses it", key)
		}
		// Escaping for a redirect URL and parsing again gives the same key.
		back, err := ParseKey(nil, append([]byte{'/'}, AppendEscapedKey(nil, key)...))
		if err != nil || !bytes.Equal(back, key) {
			t.Fatalf("round trip of %q: got %q, %v", key, back, err)
		}
	})
}
