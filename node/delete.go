package node

import (
	"encoding/json"
	"errors"
	"sync"

	"github.com/valyala/fasthttp"
)

// handleDelete removes key from the index (under the key lock, after its
// preconditions, if any, hold). Its blobs are deleted from the volumes
// once MoveGrace is over (laterLoop), as a replaced version's are: a reader
// redirected to the value just before still finds it, rather than being
// sent back and forth while the key churns.
func (m *Master) handleDelete(ctx *fasthttp.RequestCtx, key []byte) {
	cond, conditional := readConditions(&ctx.Request.Header)
	held := false
	check := func(rec *Record) error {
		if conditional {
			var b [24]byte
			if st := cond.check(false, true, rec.appendTag(b[:0]), rec.ModTime); st != 0 {
				return withStatus(st, errors.New(conditionReason(st)))
			}
		}
		// Held before the removal queues the deletions.
		m.holdGarbage(rec.Replicas, key, rec.Version)
		held = true
		return nil
	}
	rec, found, err := m.cat.removeKey(key, check)
	if err != nil {
		if held {
			m.releaseGarbage(rec.Replicas, key, rec.Version)
		}
		replyError(ctx, err)
		return
	}
	if !found {
		replyText(ctx, fasthttp.StatusNotFound, "key not found")
		return
	}
	b, _ := json.Marshal(map[string]string{"deleted": string(key)})
	replyJSON(ctx, fasthttp.StatusOK, b)
}

// deleteBlobs deletes one version of key from vols now, in parallel; each
// deletion that fails stays queued and is retried by the GC loop.
func (m *Master) deleteBlobs(key []byte, version uint64, vols []string) {
	view := m.view.Load()
	var wg sync.WaitGroup
	for _, name := range vols {
		vol, ok := view.vols[name]
		if !ok {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := m.deleteBlob(vol.HTTP, key, version); err != nil {
				m.log.Warn("delete on volume failed; will retry", "volume", name, "key", string(key), "err", err)
				return
			}
			if err := m.cat.doneGarbage(name, key, version); err != nil {
				m.log.Warn("index", "err", err)
			}
		}()
	}
	wg.Wait()
}
