package s3

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"io"
	"testing"
)

// FuzzChunkedReader: an aws-chunked body, signed (with a key) or not, with
// or without trailers, never panics, never yields more bytes than it
// carries, and always ends (with io.EOF or an error).
func FuzzChunkedReader(f *testing.F) {
	f.Add([]byte("5\r\nhello\r\n0\r\n\r\n"), false, false)
	f.Add([]byte("5;chunk-signature=00\r\nhello\r\n0;chunk-signature=00\r\n\r\n"), true, false)
	f.Add([]byte("3\r\nabc\r\n0\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n"), false, true)
	f.Add([]byte("ffffffffffffffff\r\n"), false, false)
	f.Add([]byte("-1\r\n"), false, true)
	f.Fuzz(func(t *testing.T, data []byte, signed, trailer bool) {
		c := &chunkedReader{br: bufio.NewReaderSize(bytes.NewReader(data), 16<<10), signed: signed, trailer: trailer}
		if signed {
			c.key, c.amzDate, c.scope, c.prev = []byte("k"), "20261201T000000Z", "20261201/us-east-1/s3/aws4_request", "seed"
			c.h = sha256.New()
		}
		n, _ := io.Copy(io.Discard, io.LimitReader(c, int64(len(data))+1))
		if n > int64(len(data)) {
			t.Fatalf("decoded %d bytes out of a %d-byte body", n, len(data))
		}
	})
}
