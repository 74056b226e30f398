package s3

import (
	"crypto/sha1"
	"crypto/sha256"
	"hash"
	"hash/crc32"
	"hash/crc64"
	"strings"
)

// The x-amz-checksum-* algorithms. Each sum is sent in base64 of its
// big-endian bytes, which is what Go's hash.Hash Sum gives.

// crc64NVMETable is CRC-64/NVME (polynomial 0xad93d23594c93659, reflected
// 0x9a6c9329ac4bc9b5; initial value and final xor all ones, which
// hash/crc64 applies itself), the default of aws-cli v2. Checked against
// AWS's test vectors (aws-checksums) in checksum_test.go.
var crc64NVMETable = crc64.MakeTable(0x9a6c9329ac4bc9b5)

var crc32cTable = crc32.MakeTable(crc32.Castagnoli)

// checksumAlgos are the algorithms by their lower-case name in
// x-amz-checksum-NAME.
var checksumAlgos = map[string]func() hash.Hash{
	"crc32":     func() hash.Hash { return crc32.NewIEEE() },
	"crc32c":    func() hash.Hash { return crc32.New(crc32cTable) },
	"crc64nvme": func() hash.Hash { return crc64.New(crc64NVMETable) },
	"sha1":      sha1.New,
	"sha256":    sha256.New,
}

// checksumHeaderAlgo returns the algorithm of a header name
// "x-amz-checksum-NAME" (any case), "" if it is not one.
func checksumHeaderAlgo(name string) string {
	name = strings.ToLower(name)
	algo, ok := strings.CutPrefix(name, "x-amz-checksum-")
	if !ok || checksumAlgos[algo] == nil {
		return ""
	}
	return algo
}
