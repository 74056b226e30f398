package bench

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"

	"github.com/cespare/xxhash/v2"
)

// value is the content of one key: a pure function of (seed, key), so it
// is generated as a stream for a PUT and generated again to check a GET,
// never held whole. Its bytes are splitmix64 in counter mode: word i is
// mix(base + (i+1)·γ), so any offset can be produced without the bytes
// before it and odd chunk sizes give the same stream.
type value struct {
	base uint64
	size int64
}

const golden = 0x9e3779b97f4a7c15 // splitmix64's increment, 2^64/φ

func mix64(z uint64) uint64 {
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// newValue returns the value of key: its bytes and its size, drawn from r.
func newValue(seed uint64, key string, r SizeRange) value {
	base := mix64(xxhash.Sum64String(key) ^ mix64(seed+golden))
	size := r.Min
	if span := uint64(r.Max - r.Min + 1); span > 1 {
		size += int64(mix64(base^0x5bd1e9955bd1e995) % span)
	}
	return value{base: base, size: size}
}

// fill writes the bytes [off, off+len(p)) of the stream into p. It does not
// look at the size: the stream goes on past it.
func (v value) fill(off int64, p []byte) {
	i := uint64(off) / 8
	if r := off % 8; r != 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], mix64(v.base+(i+1)*golden))
		n := copy(p, w[r:])
		p = p[n:]
		i++
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, mix64(v.base+(i+1)*golden))
		p = p[8:]
		i++
	}
	if len(p) > 0 {
		var w [8]byte
		binary.LittleEndian.PutUint64(w[:], mix64(v.base+(i+1)*golden))
		copy(p, w[:])
	}
}

// valueReader streams a value from its start. It is reused by one worker;
// WriteTo lets fasthttp (and files) take the body in large chunks straight
// from buf.
type valueReader struct {
	v   value
	off int64
	buf []byte // scratch for WriteTo, owned by the worker
	ctx context.Context
}

func (r *valueReader) reset(ctx context.Context, v value, buf []byte) {
	*r = valueReader{v: v, buf: buf, ctx: ctx}
}

func (r *valueReader) Read(p []byte) (int, error) {
	if r.off >= r.v.size {
		return 0, io.EOF
	}
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	if rest := r.v.size - r.off; int64(len(p)) > rest {
		p = p[:rest]
	}
	r.v.fill(r.off, p)
	r.off += int64(len(p))
	return len(p), nil
}

func (r *valueReader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for r.off < r.v.size {
		if err := r.ctx.Err(); err != nil {
			return total, err
		}
		p := r.buf
		if rest := r.v.size - r.off; int64(len(p)) > rest {
			p = p[:rest]
		}
		r.v.fill(r.off, p)
		n, err := w.Write(p)
		r.off += int64(n)
		total += int64(n)
		if err != nil {
			return total, err
		}
		if n < len(p) {
			return total, io.ErrShortWrite
		}
	}
	return total, nil
}

// checker compares a stream, chunk by chunk, against the value it should
// be. It holds one scratch buffer, never the value.
type checker struct {
	v   value
	off int64
	exp []byte
}

// check compares the next len(p) bytes of the stream with p.
func (c *checker) check(p []byte) error {
	if c.off+int64(len(p)) > c.v.size {
		return fmt.Errorf("verify: body longer than the %d bytes put", c.v.size)
	}
	for len(p) > 0 {
		n := min(len(p), len(c.exp))
		exp := c.exp[:n]
		c.v.fill(c.off, exp)
		if !bytes.Equal(p[:n], exp) {
			for i := range n {
				if p[i] != exp[i] {
					return fmt.Errorf("verify: byte %d differs", c.off+int64(i))
				}
			}
		}
		p = p[n:]
		c.off += int64(n)
	}
	return nil
}

// done reports a body that ended early.
func (c *checker) done() error {
	if c.off != c.v.size {
		return fmt.Errorf("verify: body is %d bytes, %d were put", c.off, c.v.size)
	}
	return nil
}
