package main

import (
	"strconv"

	"github.com/kvdb/kvdb/bench"
)

// sizeFlag is a byte count given as 123, 64KiB, 5GiB, 1MB or 2G
// (K/M/G/T alone mean the binary units), as bench.ParseSize reads it.
type sizeFlag int64

func (s *sizeFlag) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *sizeFlag) Set(v string) error {
	n, err := bench.ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}
