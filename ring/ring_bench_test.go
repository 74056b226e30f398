package ring

import (
	"fmt"
	"testing"
)

func BenchmarkLocate(b *testing.B) {
	for _, size := range []struct{ vols, weight int }{{5, 1}, {100, 1}, {10, 10}} {
		b.Run(fmt.Sprintf("%dx%d", size.vols, size.weight), func(b *testing.B) {
			r := mustNew(b, Config{}, vols("vol", size.vols, size.weight))
			keys := make([][]byte, 1024)
			for i := range keys {
				keys[i] = fmt.Appendf(nil, "/bucket/object-%d.bin", i)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := r.Locate(keys[i%len(keys)], 3); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

func BenchmarkDiff(b *testing.B) {
	prev := mustNew(b, Config{}, vols("vol", 4, 1))
	next := mustNew(b, Config{}, vols("vol", 5, 1))
	k := []byte("/bucket/object.bin")
	b.ReportAllocs()
	for b.Loop() {
		Diff(prev, next, k, 3)
	}
}

// BenchmarkNew measures building a ring with the default Config (1021
// partitions); New runs on every membership change.
func BenchmarkNew(b *testing.B) {
	for _, size := range []struct{ vols, weight int }{{5, 1}, {100, 1}, {10, 10}} {
		b.Run(fmt.Sprintf("%dx%d", size.vols, size.weight), func(b *testing.B) {
			ms := vols("vol", size.vols, size.weight)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := New(Config{}, ms); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
