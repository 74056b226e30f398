package main

import (
	"fmt"
	"strconv"
	"time"

	"github.com/kvdb/kvdb/bench"
	"github.com/kvdb/kvdb/node"
)

// The flag.Value types of kvdb's flags. Each binds straight to a field of
// a node or bench Config, whose value (the preset's) is the flag's default;
// --help prints it in the flag's own syntax.

// sizeFlag is a byte count given as 123, 64KiB, 5GiB, 1MB or 2G
// (K/M/G/T alone mean the binary units), as bench.ParseSize reads it, and
// printed as bench.FormatSize writes it (5GiB).
type sizeFlag int64

func (s *sizeFlag) String() string { return bench.FormatSize(int64(*s)) }

func (s *sizeFlag) Set(v string) error {
	n, err := bench.ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

// rateFlag is a rate in bytes per second, as sizeFlag, where 0 means no
// cap: node.Unlimited in the Config.
type rateFlag int64

func (r *rateFlag) String() string {
	if *r < 0 {
		return "0"
	}
	return bench.FormatSize(int64(*r))
}

func (r *rateFlag) Set(v string) error {
	n, err := bench.ParseSize(v)
	if err != nil {
		return err
	}
	if n == 0 {
		n = node.Unlimited
	}
	*r = rateFlag(n)
	return nil
}

// intervalFlag is a duration (24h, 90m) where 0 means never: node.Never
// in the Config.
type intervalFlag time.Duration

func (d *intervalFlag) String() string {
	if *d < 0 {
		return "0"
	}
	return time.Duration(*d).String()
}

func (d *intervalFlag) Set(v string) error {
	t, err := time.ParseDuration(v)
	switch {
	case err != nil:
		return err
	case t < 0:
		return fmt.Errorf("%s is negative: want a duration, or 0 for never", v)
	case t == 0:
		t = node.Never
	}
	*d = intervalFlag(t)
	return nil
}

// intRange is an integer flag that refuses values outside lo..hi, so that
// a 0 is not silently taken for a default.
type intRange struct {
	p      *int
	lo, hi int
}

// intFlag binds an intRange to p.
func intFlag(p *int, lo, hi int) *intRange { return &intRange{p, lo, hi} }

func (f *intRange) String() string {
	if f.p == nil {
		return "0"
	}
	return strconv.Itoa(*f.p)
}

func (f *intRange) Set(v string) error {
	n, err := strconv.Atoi(v)
	if err != nil {
		return fmt.Errorf("%q is not a whole number", v)
	}
	if n < f.lo || n > f.hi {
		return fmt.Errorf("%d is out of range: want %d to %d", n, f.lo, f.hi)
	}
	*f.p = n
	return nil
}
