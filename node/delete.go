package node

import (
	"encoding/json"
	"errors"

	"github.com/valyala/fasthttp"
)

// handleDelete removes key from the index (under the key lock, after its
// preconditions, if any, hold), then its blobs from the volumes, before it
// answers: a 200 means the value is gone from the index and from every
// live replica (a deletion that fails is retried by the GC loop).
func (m *Master) handleDelete(ctx *fasthttp.RequestCtx, key []byte) {
	cond, conditional := readConditions(&ctx.Request.Header)
	var check func(*Record) error
	if conditional {
		check = func(rec *Record) error {
			var b [24]byte
			if st := cond.check(false, true, rec.appendTag(b[:0]), rec.ModTime); st != 0 {
				return withStatus(st, errors.New(conditionReason(st)))
			}
			return nil
		}
	}
	rec, found, err := m.cat.removeKey(key, check)
	if err != nil {
		replyError(ctx, err)
		return
	}
	if !found {
		replyText(ctx, fasthttp.StatusNotFound, "key not found")
		return
	}
	m.deleteBlobs(key, rec.Version, rec.Replicas)
	b, _ := json.Marshal(map[string]string{"deleted": string(key)})
	replyJSON(ctx, fasthttp.StatusOK, b)
}

// deleteBlobs deletes one version of key from vols now, in parallel,
// through each volume's deletion queue (deleteq.go), and hands the copies
// deleted to the settler, which clears their catalog entries once their
// volumes have synced; each deletion that fails stays queued and is
// retried by the GC loop.
func (m *Master) deleteBlobs(key []byte, version uint64, vols []string) {
	view := m.view.Load()
	type queued struct {
		addr string
		g    garbageItem
		it   *deleteItem
	}
	qs := make([]queued, 0, len(vols))
	for _, name := range vols {
		vol, ok := view.vols[name]
		if !ok {
			continue
		}
		g := garbageItem{name, key, version}
		m.settler.track(g, true) // until its settling round is over
		qs = append(qs, queued{vol.HTTP, g, m.dels.enqueue(vol.HTTP, key, version)})
	}
	done := make([]settleItem, 0, len(qs))
	for _, q := range qs {
		<-q.it.done
		if q.it.err != nil {
			m.settler.track(q.g, false)
			m.log.Warn("delete on volume failed; will retry", "volume", q.g.vol, "key", string(key), "err", q.it.err)
			continue
		}
		done = append(done, settleItem{q.addr, q.g})
	}
	m.settle(done)
}
