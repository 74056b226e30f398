package store

import (
	"bytes"
	"fmt"
	"sync/atomic"
	"testing"
)

// BenchmarkPut1MiB measures a 1 MiB Put end to end (stream, hash, trailer,
// rename, index), with every fsync and with none. Old versions are deleted
// outside the timer so the disk does not fill.
func BenchmarkPut1MiB(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		name := "fsync"
		if noSync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			s := openStore(b, Config{NoSync: noSync})
			value := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
			key := []byte("bench/key")
			const keep = 32
			r := bytes.NewReader(value)
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			v := uint64(0)
			for b.Loop() {
				r.Reset(value)
				if _, err := s.Put(key, v, r, int64(len(value))); err != nil {
					b.Fatal(err)
				}
				if v >= keep {
					b.StopTimer()
					if err := s.Delete(key, v-keep); err != nil {
						b.Fatal(err)
					}
					b.StartTimer()
				}
				v++
			}
		})
	}
}

// BenchmarkGet measures an index lookup of a present (key, version).
func BenchmarkGet(b *testing.B) {
	s := openStore(b, Config{NoSync: true})
	const n = 1000
	keys := make([][]byte, n)
	for i := range keys {
		keys[i] = fmt.Appendf(nil, "bench/key/%d", i)
		if _, err := s.Put(keys[i], uint64(i), bytes.NewReader(nil), 0); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if _, err := s.Get(keys[i%n], uint64(i%n)); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

// BenchmarkScrub measures an unthrottled Scrub pass over four 4 MiB values:
// each file's cached pages dropped, then the file re-read and hashed. The
// values are fsynced, so their pages are clean and the reads reach the disk
// (unless the filesystem ignores fadvise).
func BenchmarkScrub(b *testing.B) {
	s := openStore(b, Config{})
	const files, size = 4, 4 << 20
	var total int64
	for i := range files {
		key := fmt.Sprintf("bench/scrub/%d", i)
		if _, err := s.Put([]byte(key), 1, newGen(size, uint64(i+1)), size); err != nil {
			b.Fatal(err)
		}
		total += size + trailerLen(len(key))
	}
	b.SetBytes(total)
	b.ReportAllocs()
	for b.Loop() {
		st, err := s.Scrub(b.Context(), ScrubConfig{}, func(m Meta, err error) {
			b.Errorf("Scrub reported %q v%d: %v", m.Key, m.Version, err)
		})
		if err != nil || st.Files != files {
			b.Fatalf("Scrub: %+v, %v; want %d files", st, err, files)
		}
	}
}

// BenchmarkPutSmallParallel measures 1 KiB Puts from 16 writers at once,
// every fsync included: the cost of a tiny value is the syncs, not bytes.
func BenchmarkPutSmallParallel(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		name := "fsync"
		if noSync {
			name = "nosync"
		}
		b.Run(name, func(b *testing.B) {
			s := openStore(b, Config{NoSync: noSync})
			value := bytes.Repeat([]byte("x"), 1<<10)
			b.SetBytes(int64(len(value)))
			b.ReportAllocs()
			b.SetParallelism(8)
			var seq atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				r := bytes.NewReader(value)
				for pb.Next() {
					n := seq.Add(1)
					r.Reset(value)
					if _, err := s.Put(fmt.Appendf(nil, "small/%d", n), uint64(n), r, int64(len(value))); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
