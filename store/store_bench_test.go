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
// "packed" is the default (values up to SmallValueMax share the log's
// group commits); "files" gives each value a blob file, as before packing.
// log-fsyncs/op counts the log's fdatasyncs only (not goleveldb's).
func BenchmarkPutSmallParallel(b *testing.B) {
	for _, tt := range []struct {
		name   string
		noSync bool
		small  int64
	}{
		{"fsync", false, 0}, {"nosync", true, 0},
		{"files-fsync", false, -1}, {"files-nosync", true, -1},
	} {
		noSync := tt.noSync
		b.Run(tt.name, func(b *testing.B) {
			s := openStore(b, Config{NoSync: noSync, SmallValueMax: tt.small, CompactRate: -1})
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
			b.ReportMetric(float64(s.syncs.Load())/float64(b.N), "log-fsyncs/op")
		})
	}
}

// BenchmarkPutSizes compares packed values with blob files at the sizes
// around DefaultSmallValueMax, 16 writers at once, fsyncs included: the
// measurement behind the default.
func BenchmarkPutSizes(b *testing.B) {
	for _, size := range []int{16 << 10, 64 << 10, 256 << 10, 1 << 20} {
		for _, packed := range []bool{true, false} {
			name := fmt.Sprintf("%dKiB/files", size>>10)
			small := int64(-1)
			if packed {
				name, small = fmt.Sprintf("%dKiB/packed", size>>10), MaxSmallValueMax
			}
			b.Run(name, func(b *testing.B) {
				s := openStore(b, Config{SmallValueMax: small, CompactRate: -1})
				value := bytes.Repeat([]byte("x"), size)
				b.SetBytes(int64(size))
				b.SetParallelism(8)
				var seq atomic.Int64
				b.RunParallel(func(pb *testing.PB) {
					r := bytes.NewReader(value)
					for pb.Next() {
						n := seq.Add(1)
						r.Reset(value)
						if _, err := s.Put(fmt.Appendf(nil, "v/%d", n), 1, r, int64(size)); err != nil {
							b.Fatal(err)
						}
					}
				})
			})
		}
	}
}

// BenchmarkDeleteSmallParallel measures 1 KiB Deletes from 16 deleters at
// once (the values are written outside the timer).
func BenchmarkDeleteSmallParallel(b *testing.B) {
	for _, small := range []int64{0, -1} {
		name := "packed"
		if small < 0 {
			name = "files"
		}
		b.Run(name, func(b *testing.B) {
			s := openStore(b, Config{SmallValueMax: small, CompactRate: -1, NoSync: true})
			value := make([]byte, 1<<10)
			for i := range b.N {
				if _, err := s.Put(fmt.Appendf(nil, "d/%d", i), 1, bytes.NewReader(value), 1<<10); err != nil {
					b.Fatal(err)
				}
			}
			s.Close()
			s = openStore(b, Config{Dir: s.cfg.Dir, SmallValueMax: small, CompactRate: -1})
			b.ResetTimer()
			b.SetParallelism(8)
			var seq atomic.Int64
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := seq.Add(1) - 1
					if err := s.Delete(fmt.Appendf(nil, "d/%d", n), 1); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
