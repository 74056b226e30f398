package node

import (
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"
)

func (m *Master) kickGC() {
	select {
	case m.gcKick <- struct{}{}:
	default:
	}
}

// gcLoop deletes queued blob versions (old versions after an overwrite,
// deleted keys, abandoned writes) from volumes that are alive, retrying the
// rest later.
func (m *Master) gcLoop() {
	defer m.wg.Done()
	runEvery(m.stop, m.cfg.GCInterval, m.gcKick, func() {
		if !m.leads() {
			return
		}
		m.sweepTickets()
		m.collectGarbage()
		m.sweepUploads()
	})
}

type garbageItem struct {
	vol     string
	key     []byte
	version uint64
}

func (m *Master) collectGarbage() {
	view := m.view.Load()
	var batch []garbageItem
	err := m.cat.garbage(func(vol string, key []byte, version uint64) bool {
		if _, ok := view.vols[vol]; ok {
			batch = append(batch, garbageItem{vol, key, version})
		}
		return len(batch) < 512
	})
	if err != nil {
		m.log.Error("gc scan", "err", err)
		return
	}
	m.sweepGrace()
	var todo []garbageItem
	for _, g := range batch {
		if !m.inGrace(g.vol, g.key, g.version) && !m.settler.underWay(g) {
			todo = append(todo, g)
		}
	}
	m.collectAll(view, todo)
}

// collectAll deletes the queued versions in items, gcWorkers at a time
// (the deletions on the volumes overlap), then clears their catalog
// entries in one write.
func (m *Master) collectAll(view *clusterView, items []garbageItem) {
	if len(items) == 0 {
		return
	}
	work := make(chan garbageItem)
	var (
		wg     sync.WaitGroup
		doneMu sync.Mutex
		done   []garbageItem
	)
	for range min(gcWorkers, len(items)) {
		wg.Go(func() {
			for g := range work {
				if m.collectOne(view, g) {
					doneMu.Lock()
					done = append(done, g)
					doneMu.Unlock()
				}
			}
		})
	}
feed:
	for _, g := range items {
		select {
		case <-m.stop:
			break feed
		case work <- g:
		}
	}
	close(work)
	wg.Wait()
	if err := m.cat.doneGarbageAll(done); err != nil {
		m.log.Warn("clearing collected garbage entries; they are collected again", "err", err)
	}
}

// gcWorkers is how many queued deletions run at once.
const gcWorkers = 16

// collectOne deletes one queued blob version, unless it is in use after
// all, and reports whether its catalog entry is to be cleared (the caller
// clears many in one write). The checks and the deletion hold the key's
// copy lock, which every copy (repair, move) takes to record its intent:
// so either the copy's intent is seen here and the version kept, or the
// copy starts after the deletion and lands whole. An entry cleared late,
// after such a copy took it back, is cleared twice: no harm.
func (m *Master) collectOne(view *clusterView, g garbageItem) bool {
	mu := m.lockCopies(g.key)
	defer mu.Unlock()
	// A copy may have taken this entry back since the scan.
	if has, err := m.cat.db().Has(garbageKey(g.vol, g.key, g.version), nil); err != nil || !has {
		return false
	}
	// A copy of this very version may be on its way to the volume
	// (repair, rebalance): its intent keeps it.
	if pending, err := m.cat.isPending(g.version, g.vol, g.key); err != nil || pending {
		return false
	}
	// Never delete the version the catalog points at (a blob that was
	// abandoned on a volume may have been copied back there since).
	var rec Record
	if found, err := m.cat.get(g.key, &rec); err == nil && found && rec.Version == g.version && contains(rec.Replicas, g.vol) {
		return true
	}
	if err := m.deleteBlob(view.vols[g.vol].HTTP, g.key, g.version); err != nil {
		m.log.Debug("gc delete failed; will retry", "volume", g.vol, "key", string(g.key), "err", err)
		return false
	}
	return true
}

// lockCopies locks the stripe of key that orders copies against the
// deletion of queued versions (see collectOne).
func (m *Master) lockCopies(key []byte) *sync.Mutex {
	mu := &m.copyLocks[xxhash.Sum64(key)%uint64(len(m.copyLocks))]
	mu.Lock()
	return mu
}

// laterDeletion is a copy held by holdGarbage, to be deleted at due.
type laterDeletion struct {
	due time.Time
	garbageItem
}

// laterLoop deletes the copies holdGarbage held (a replaced or deleted
// value's, a moved one's) as soon as their grace is over, a batch at a
// time and several at once, off the request path and without scanning the
// catalog's queue. On a master that does not lead they are left to the
// leader's GC passes, as is any that fails here.
func (m *Master) laterLoop() {
	defer m.wg.Done()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case <-m.stop:
			return
		default:
		}
		now := time.Now()
		m.graceMu.Lock()
		n := 0
		for n < len(m.later) && !m.later[n].due.After(now) {
			n++
		}
		due := m.later[:n:n]
		m.later = m.later[n:]
		if len(m.later) == 0 {
			m.later = nil // let the drained array go
		}
		wait := time.Hour
		if len(m.later) > 0 {
			wait = m.later[0].due.Sub(now)
		}
		m.graceMu.Unlock()
		if len(due) > 0 && m.leads() {
			m.collectDue(due)
			continue // more may be due by now
		}
		timer.Reset(wait)
		select {
		case <-m.stop:
			return
		case <-m.laterKick:
		case <-timer.C:
		}
	}
}

// collectDue deletes the held copies whose grace is over (collectOne
// checks each is still garbage).
func (m *Master) collectDue(due []laterDeletion) {
	view := m.view.Load()
	items := make([]garbageItem, 0, len(due))
	for _, d := range due {
		if _, ok := view.vols[d.vol]; ok && !m.inGrace(d.vol, d.key, d.version) {
			items = append(items, d.garbageItem)
		} // else not live (a GC pass retries it), or held again since
	}
	m.collectAll(view, items)
}
