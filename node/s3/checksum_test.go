package s3

import (
	"encoding/binary"
	"testing"
)

// AWS's CRC64NVME vectors, from aws-checksums' tests, and the CRC
// catalogue's check value.
func TestCRC64NVME(t *testing.T) {
	values := make([]byte, 32)
	for i := range values {
		values[i] = byte(i)
	}
	for _, tc := range []struct {
		in   []byte
		want uint64
	}{
		{make([]byte, 32), 0xCF3473434D4ECF3B},
		{values, 0xB9D9D4A8492CBD7F},
		{[]byte("123456789"), 0xAE8B14860A799888},
	} {
		h := checksumAlgos["crc64nvme"]()
		// In two writes: the state carries over.
		h.Write(tc.in[:len(tc.in)/2])
		h.Write(tc.in[len(tc.in)/2:])
		if got := binary.BigEndian.Uint64(h.Sum(nil)); got != tc.want {
			t.Errorf("crc64nvme(%q) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

func TestChecksumAlgos(t *testing.T) {
	// Values as S3 documents them for "Hello world" style checks are not
	// at hand for every algorithm; the check values of the CRC catalogue
	// and of the FIPS examples are.
	for algo, want := range map[string]string{
		"crc32":  "cbf43926",
		"crc32c": "e3069283",
		"sha1":   "f7c3bc1d808e04732adf679965ccc34ca7ae3441",
	} {
		h := checksumAlgos[algo]()
		h.Write([]byte("123456789"))
		got := h.Sum(nil)
		if hexs := bytesToHex(got); hexs != want {
			t.Errorf("%s(123456789) = %s, want %s", algo, hexs, want)
		}
	}
	if got := checksumHeaderAlgo("X-Amz-Checksum-CRC64NVME"); got != "crc64nvme" {
		t.Errorf("checksumHeaderAlgo: got %q", got)
	}
	if got := checksumHeaderAlgo("x-amz-checksum-md5"); got != "" {
		t.Errorf("checksumHeaderAlgo(md5): got %q, want none", got)
	}
}

func bytesToHex(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}
