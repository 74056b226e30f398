package node

import (
	"bytes"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/store"
)

// Small writes through the master. A value whose declared length is at
// most smallWriteMax is read whole (it is smaller than one chunk of a
// streamed write, fanout.go) and queued for each of its replicas: the small
// writes waiting for a volume go in one request (POST /_kvdb/put, batchq.go),
// which the volume stores all at once, so they share its log commit, and the
// master and the volume exchange one request and one answer for them all
// instead of one each. A replica that fails one is replaced from a spare as
// for any write (replicator.complete).

const (
	// smallWriteMax is the largest value written through the put queues.
	smallWriteMax = 16 << 10
	// maxPutBatch is how many values one request to a volume takes.
	maxPutBatch = 64
	// maxPutInFlight is how many such requests a volume has at once.
	maxPutInFlight = 2
	// maxPutHeader bounds one value's header line in a put list (a
	// version, a size and an escaped key of at most 1024 bytes).
	maxPutHeader = 64 + 3*1024
)

// putItem is one value waiting in a volume's put queue.
type putItem struct {
	waiter
	key     []byte
	version uint64
	body    []byte
	res     putResult // the outcome, but for its vol
}

// putQueues batches the small writes for each volume.
type putQueues struct {
	batchQueues[*putItem]
}

func newPutQueues(vc *volumeClient) *putQueues {
	return &putQueues{batchQueues[*putItem]{send: vc.putMany, maxBatch: maxPutBatch, inFlight: maxPutInFlight}}
}

// putSmall writes body as version of key to each of targets through their
// put queues, and returns one result per target, in order.
func (m *Master) putSmall(view *clusterView, key []byte, version uint64, body []byte, targets []string) []putResult {
	items := make([]*putItem, len(targets))
	for i, name := range targets {
		items[i] = &putItem{waiter: newWaiter(), key: key, version: version, body: body}
		m.puts.add(view.vols[name].HTTP, items[i])
	}
	results := make([]putResult, len(targets))
	for i, it := range items {
		<-it.done
		results[i] = it.res
		results[i].vol = targets[i]
	}
	return results
}

// putMany stores items on the volume at addr in one request, setting each
// item's outcome. A volume that lacks the endpoint (an older build) gets
// them one by one.
func (vc *volumeClient) putMany(addr string, items []*putItem) {
	lines, err := vc.sendList(addr, "put", appendPutList(nil, items), len(items))
	for i, it := range items {
		switch {
		case errors.Is(err, errNoEndpoint):
			it.res = vc.putBlob(Member{HTTP: addr}, it.key, it.version, int64(len(it.body)), bytes.NewReader(it.body))
		case err != nil:
			it.res.err = err
		default:
			it.res = parsePutOutcome(lines[i])
		}
	}
}

// parsePutOutcome reads one line of a volume's answer to a put list:
// "201 SIZE CHECKSUM" (the checksum in hex) or "STATUS REASON".
func parsePutOutcome(l []byte) putResult {
	st, rest, _ := bytes.Cut(l, []byte(" "))
	if !bytes.Equal(st, []byte("201")) {
		status, _ := strconv.Atoi(string(st))
		return putResult{status: status, err: fmt.Errorf("status %s: %s", st, rest)}
	}
	sz, sum, _ := bytes.Cut(rest, []byte(" "))
	size, err1 := strconv.ParseInt(string(sz), 10, 64)
	checksum, err2 := strconv.ParseUint(string(sum), 16, 64)
	if err1 != nil || err2 != nil || size < 0 {
		return putResult{err: fmt.Errorf("bad outcome %q", l)}
	}
	return putResult{size: size, checksum: checksum}
}

// appendPutList encodes values as, for each, a line "VERSION SIZE
// /ESCAPED-KEY" (the key as in a URL path) followed by its SIZE bytes.
func appendPutList(dst []byte, items []*putItem) []byte {
	for _, it := range items {
		dst = appendVersion(dst, it.version)
		dst = append(dst, ' ')
		dst = strconv.AppendInt(dst, int64(len(it.body)), 10)
		dst = append(dst, " /"...)
		dst = AppendEscapedKey(dst, it.key)
		dst = append(dst, '\n')
		dst = append(dst, it.body...)
	}
	return dst
}

// parsePutList decodes appendPutList's values, calling fn with each; the
// key passed to fn is valid only during the call, the value as long as
// body. No value may be longer than smallWriteMax.
func parsePutList(body []byte, fn func(key []byte, version uint64, val []byte)) error {
	var key []byte
	for n := 1; len(body) > 0; n++ {
		end := bytes.IndexByte(body[:min(len(body), maxPutHeader)], '\n')
		if end < 0 {
			return fmt.Errorf("value %d: no header line", n)
		}
		line := body[:end]
		body = body[end+1:]
		v, rest, ok := bytes.Cut(line, []byte(" "))
		if !ok {
			return fmt.Errorf("value %d: no size", n)
		}
		sz, k, ok := bytes.Cut(rest, []byte(" "))
		if !ok {
			return fmt.Errorf("value %d: no key", n)
		}
		ver, err := parseVersion(v)
		if err != nil {
			return fmt.Errorf("value %d: %w", n, err)
		}
		size, err := strconv.Atoi(string(sz))
		if err != nil || size < 0 || size > smallWriteMax {
			return fmt.Errorf("value %d: bad size %q (at most %d)", n, sz, smallWriteMax)
		}
		if size > len(body) {
			return fmt.Errorf("value %d: %d bytes declared, %d left", n, size, len(body))
		}
		if key, err = parseStoredKey(key, k); err != nil {
			return fmt.Errorf("value %d: %w", n, err)
		}
		fn(key, ver, body[:size:size])
		body = body[size:]
	}
	return nil
}

// putMany is the volume's side: it stores every listed value, all at once
// (so that they share log commits), and answers one line per value, in
// order: "201 SIZE CHECKSUM", or the status and reason of a refusal.
func (v *Volume) putMany(ctx *fasthttp.RequestCtx) {
	body, ok := readList(ctx)
	if !ok {
		return
	}
	type put struct {
		key     []byte
		version uint64
		val     []byte
	}
	var puts []put
	err := parsePutList(body, func(key []byte, version uint64, val []byte) {
		puts = append(puts, put{bytes.Clone(key), version, val})
	})
	if err == nil && len(puts) > maxPutBatch {
		err = fmt.Errorf("%d values in one request; at most %d", len(puts), maxPutBatch)
	}
	if err != nil {
		replyText(ctx, fasthttp.StatusBadRequest, err.Error())
		return
	}
	metas := make([]store.Meta, len(puts))
	outcomes := make([]error, len(puts))
	var wg sync.WaitGroup
	for i, p := range puts {
		// A version already held is refused by the store itself (ErrExists,
		// 409): its body is read already, so no lookup ahead is worth it.
		if st, msg := v.freshVersion(p.version); st != 0 {
			outcomes[i] = withStatus(st, errors.New(msg))
			continue
		}
		wg.Go(func() {
			metas[i], outcomes[i] = v.store.Put(p.key, p.version, bytes.NewReader(p.val), int64(len(p.val)))
			if outcomes[i] != nil {
				v.log.Warn("write failed", "key", string(p.key), "err", outcomes[i])
			}
		})
	}
	wg.Wait()
	out := make([]byte, 0, 32*len(puts))
	for i, err := range outcomes {
		if err == nil {
			v.metrics.wroteBlob(metas[i].Size)
			out = append(out, "201 "...)
			out = strconv.AppendInt(out, metas[i].Size, 10)
			out = append(out, ' ')
			out = strconv.AppendUint(out, metas[i].Checksum, 16)
			out = append(out, '\n')
			continue
		}
		if errors.Is(err, store.ErrNoSpace) {
			// The master's view of the free space was stale: publish it.
			v.forceMeta.Store(true)
			v.kickMeta()
		}
		out = appendFailure(out, err)
	}
	replyList(ctx, out)
}
