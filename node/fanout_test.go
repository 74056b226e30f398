package node

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"
	"time"
)

// TestFanoutCopies: every reader gets the whole stream, byte for byte, for
// sizes around the chunk boundaries.
func TestFanoutCopies(t *testing.T) {
	for _, size := range []int{0, 1, 1024, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 17} {
		src := bytes.Repeat([]byte("kvdb fanout "), size/12+1)[:size]
		f := newFanout(bytes.NewReader(src), 3)
		got := make([][]byte, 3)
		var wg sync.WaitGroup
		for i, out := range f.outs {
			wg.Go(func() {
				got[i], _ = io.ReadAll(out)
				out.abandon()
			})
		}
		if err := f.run(); err != nil {
			t.Fatalf("size %d: run: %v", size, err)
		}
		wg.Wait()
		for i := range got {
			if !bytes.Equal(got[i], src) {
				t.Fatalf("size %d: reader %d got %d bytes, want the %d sent", size, i, len(got[i]), size)
			}
		}
	}
}

// TestFanoutAbandonMidStream: a reader that gives up mid-stream blocks
// neither the producer nor the other reader, which still reads the whole
// stream (it is longer than the channels hold, so a reader that kept
// taking chunks without reading them would stall the producer).
func TestFanoutAbandonMidStream(t *testing.T) {
	src := bytes.Repeat([]byte{7}, (fanoutDepth+8)*chunkSize)
	f := newFanout(bytes.NewReader(src), 2)
	var quitter, stayer []byte
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 1000)
		n, _ := f.outs[0].Read(buf)
		quitter = buf[:n]
		f.outs[0].abandon()
	})
	wg.Go(func() {
		stayer, _ = io.ReadAll(f.outs[1])
		f.outs[1].abandon()
	})
	done := make(chan error, 1)
	go func() { done <- f.run() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("producer blocked by an abandoned reader")
	}
	wg.Wait()
	if len(quitter) == 0 || !bytes.Equal(stayer, src) {
		t.Fatalf("quitter read %d bytes, stayer %d of %d", len(quitter), len(stayer), len(src))
	}
}

// TestFanoutAllAbandoned: when every reader gives up the producer stops
// with errNoReplicaLeft instead of reading the rest of the body.
func TestFanoutAllAbandoned(t *testing.T) {
	src := &countingReader{r: bytes.NewReader(bytes.Repeat([]byte{1}, 64*chunkSize))}
	f := newFanout(src, 2)
	for _, out := range f.outs {
		out.abandon()
	}
	if err := f.run(); !errors.Is(err, errNoReplicaLeft) {
		t.Fatalf("run = %v, want errNoReplicaLeft", err)
	}
	if src.n > chunkSize {
		t.Fatalf("read %d bytes of a body no reader wanted", src.n)
	}
}

// TestFanoutAbandonEndedStream: a reader abandoned after the stream ended
// (every write that succeeds) returns the chunks still queued for it
// before abandon returns, without leaving a goroutine to do it.
func TestFanoutAbandonEndedStream(t *testing.T) {
	f := newFanout(bytes.NewReader(make([]byte, 2*chunkSize+1)), 2)
	if err := f.run(); err != nil { // buffered: the chunks wait in the channels
		t.Fatal(err)
	}
	for i, out := range f.outs {
		if len(out.ch) != 3 {
			t.Fatalf("reader %d: %d chunks queued, want 3", i, len(out.ch))
		}
		out.abandon()
		if n := len(out.ch); n != 0 {
			t.Fatalf("reader %d: %d chunks still queued after abandon", i, n)
		}
	}
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// BenchmarkFanoutSmall is the master's fan-out of one 1 KiB body to two
// replicas, as a small PUT through the master does it.
func BenchmarkFanoutSmall(b *testing.B) {
	body := make([]byte, 1024)
	b.ReportAllocs()
	for b.Loop() {
		f := newFanout(bytes.NewReader(body), 2)
		var wg sync.WaitGroup
		for _, out := range f.outs {
			wg.Go(func() {
				_, _ = io.Copy(io.Discard, out)
				out.abandon()
			})
		}
		_ = f.run()
		wg.Wait()
	}
}
