package node

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
)

// replicator writes one value to several volumes: it streams the body to
// every target in parallel through a bounded fan-out (the body is read once
// and never held whole; small values written through the master go through
// the put queues instead, putq.go, and join at complete), then replaces
// each target that failed by having the next spare copy the value from a
// target that succeeded. The master uses it for writes that stream through
// it, and a volume for the writes it coordinates (coordinate.go); each
// brings its own ways to write, copy and record an intent.
type replicator struct {
	log *slog.Logger
	// put streams body into the volume named name.
	put func(name string, body io.Reader) putResult
	// copy has volume dst copy the value from volume src.
	copy func(dst, src string) putResult
	// intent records, before anything is written there, that the value is
	// about to land on vol (so that a crash leaves no orphan behind).
	intent func(vol string) error
}

// run writes body (size bytes, -1: unknown) to targets, whose intents the
// caller has recorded, replacing failed ones from spares. It returns one
// result per replica that holds the value and every volume it wrote to or
// tried to.
func (r *replicator) run(key []byte, size int64, body io.Reader, targets, spares []string) ([]putResult, []string, error) {
	n := len(targets)
	tried := append([]string(nil), targets...)
	fan := newFanout(body, n)
	results := make([]putResult, n)
	var wg sync.WaitGroup
	for i, name := range targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out := fan.outs[i]
			results[i] = r.put(name, out)
			out.abandon()
		}()
	}
	srcErr := fan.run()
	wg.Wait()
	if srcErr == nil && size >= 0 && fan.read < size {
		// fasthttp ends a request body the client cut short with a plain
		// io.EOF: it is the client's fault (400), not the volumes' (503).
		srcErr = io.ErrUnexpectedEOF
	}
	if srcErr != nil && !errors.Is(srcErr, errNoReplicaLeft) {
		return nil, tried, bodyError(srcErr, fan.read, size)
	}
	return r.complete(key, results, tried, spares)
}

// complete takes the targets' results of a write (tried: the volumes
// written to so far), checks that the replicas agree, and replaces each
// that failed by having the next spare copy the value from one that
// succeeded. It returns what run returns.
func (r *replicator) complete(key []byte, results []putResult, tried, spares []string) ([]putResult, []string, error) {
	n := len(results)
	var ok, failed []putResult
	for _, res := range results {
		if res.err == nil {
			ok = append(ok, res)
		} else {
			failed = append(failed, res)
			r.log.Warn("replica write failed", "volume", res.vol, "key", string(key), "err", res.err)
		}
	}
	if len(ok) == 0 {
		return nil, tried, replicaError(failed)
	}
	for i := 1; i < len(ok); i++ {
		if ok[i].checksum != ok[0].checksum || ok[i].size != ok[0].size {
			return nil, tried, fmt.Errorf("replicas of %q disagree: %s has %x, %s has %x", key, ok[0].vol, ok[0].checksum, ok[i].vol, ok[i].checksum)
		}
	}
	// Replace each failed replica by copying from a good one.
	for len(ok) < n && len(spares) > 0 {
		spare := spares[0]
		spares = spares[1:]
		if err := r.intent(spare); err != nil {
			return nil, tried, err
		}
		tried = append(tried, spare)
		res := r.copy(spare, ok[0].vol)
		if res.err != nil {
			r.log.Warn("replica copy failed", "volume", spare, "key", string(key), "err", res.err)
			failed = append(failed, res)
			continue
		}
		if res.checksum != ok[0].checksum {
			failed = append(failed, putResult{vol: spare, err: fmt.Errorf("copy to %s has checksum %x, want %x", spare, res.checksum, ok[0].checksum)})
			continue
		}
		ok = append(ok, res)
	}
	if len(ok) < n {
		return nil, tried, replicaError(failed)
	}
	return ok, tried, nil
}
