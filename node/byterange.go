package node

import (
	"bytes"
	"errors"
	"math"
)

// errRangeUnsatisfiable means the Range header was well formed but no byte of
// it lies within the value: the answer is 416.
var errRangeUnsatisfiable = errors.New("range not satisfiable")

// errRangeIgnored means the Range header is malformed or asks for several
// ranges; RFC 9110 lets a server ignore it and send the whole value (200).
var errRangeIgnored = errors.New("range ignored")

// parseRange parses a Range header against a value of size bytes and
// returns the first and last byte offsets (inclusive). Only a single range
// of unit "bytes" is served: "bytes=a-b", "bytes=a-" and "bytes=-n".
func parseRange(h []byte, size int64) (start, end int64, err error) {
	const prefix = "bytes="
	h = bytes.TrimSpace(h)
	if len(h) < len(prefix) || !bytes.EqualFold(h[:len(prefix)], []byte(prefix)) {
		return 0, 0, errRangeIgnored
	}
	spec := bytes.TrimSpace(h[len(prefix):])
	if bytes.IndexByte(spec, ',') >= 0 {
		return 0, 0, errRangeIgnored
	}
	dash := bytes.IndexByte(spec, '-')
	if dash < 0 {
		return 0, 0, errRangeIgnored
	}
	first, last := bytes.TrimSpace(spec[:dash]), bytes.TrimSpace(spec[dash+1:])
	if len(first) == 0 {
		// Suffix range: the last n bytes.
		n, ok := parseDigits(last)
		if !ok {
			return 0, 0, errRangeIgnored
		}
		if n == 0 || size == 0 {
			return 0, 0, errRangeUnsatisfiable
		}
		if n > size {
			n = size
		}
		return size - n, size - 1, nil
	}
	start, ok := parseDigits(first)
	if !ok {
		return 0, 0, errRangeIgnored
	}
	end = size - 1
	if len(last) > 0 {
		e, ok := parseDigits(last)
		if !ok || e < start {
			return 0, 0, errRangeIgnored
		}
		if e < end {
			end = e
		}
	}
	if start >= size {
		return 0, 0, errRangeUnsatisfiable
	}
	return start, end, nil
}

// parseDigits parses a non-empty run of ASCII digits. A number past the
// range of int64 saturates at its maximum: RFC 9110 puts no bound on a
// position, and "bytes=0-18446744073709551616" still means "to the end".
func parseDigits(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		if n > (math.MaxInt64-9)/10 {
			n = math.MaxInt64
			continue
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}
