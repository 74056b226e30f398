package node

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

var errChecksumMismatch = errors.New("copy has a different checksum")

// repairState is what the placement loop knows between scans.
type repairState struct {
	// missingSince records when a scan first found a volume that records
	// name as a replica to be missing from the live set.
	missingSince map[string]time.Time
	// underReplicated is the count of keys found below the replica count
	// by the last complete scan.
	underReplicated int
	copied          int64
	// keysOn counts, per volume, the keys whose record names it as a
	// replica, at the last complete scan; scanned is when that scan began.
	keysOn  map[string]int64
	scanned time.Time
	reb     rebalanceState
}

// repairLoop converges stored placement to what it should be, one walk of
// the index at a time. It repairs keys that lost a replica: once a volume
// has been gone for RepairDelay (a flapping or restarting volume must not
// set off a storm of copies), every key it held is copied from a surviving
// replica to the next live volume on the ring. And once membership has been
// unchanged for RebalanceDelay, it moves keys whose replicas differ from the
// ring's placement (a volume joined, or is draining) to where the ring puts
// them, throttled; see moveKey.
func (m *Master) repairLoop() {
	defer m.wg.Done()
	runEvery(m.stop, m.cfg.RepairInterval, m.repairKick, m.repairScan)
}

type repairItem struct {
	key  []byte
	rec  Record
	move bool // a rebalance move, not a repair
}

// repairScan walks the index once and repairs and moves what it can. A
// walk is stateless: it works from the index alone, so a restarted master
// simply picks up where the placement still differs.
func (m *Master) repairScan() {
	view := m.view.Load()
	now := time.Now()
	m.repairMu.Lock()
	st := &m.repair
	for name := range st.missingSince {
		if _, live := view.vols[name]; live {
			delete(st.missingSince, name)
		}
	}
	m.repairMu.Unlock()

	n := m.cfg.Replicas
	settled := now.Sub(view.changed) >= m.cfg.RebalanceDelay
	canMove := settled && view.ring.Len() >= n
	under, misplaced := 0, 0
	keysOn := map[string]int64{}
	for name := range view.vols {
		keysOn[name] = 0
	}
	m.setRebalance(func(r *rebalanceState) {
		switch {
		case !settled:
			r.State = "settling"
		case view.ring.Len() < n:
			r.State = "blocked"
		default:
			r.State = "scanning"
		}
		r.PassMoved, r.PassBytes = 0, 0
	})
	var start []byte
	aborted := false
	m.repairedInPass.Store(0)
	for {
		var batch []repairItem
		var next []byte
		err := m.ix.scanFrom(start, func(key []byte, rec *Record) bool {
			if len(batch) == repairBatch {
				next = append([]byte(nil), key...)
				return false
			}
			live, due := 0, true
			for _, name := range rec.Replicas {
				keysOn[name]++
				if _, ok := view.vols[name]; ok {
					live++
				} else if !m.missingLongEnough(name, now) {
					due = false
				}
			}
			if live < n {
				under++
				if due && live > 0 {
					batch = append(batch, repairItem{key: append([]byte(nil), key...), rec: rec.clone()})
				}
				return true
			}
			// Enough live replicas. Is it where the ring puts it? A replica
			// on a volume missing for less than RepairDelay holds the key's
			// placement as it is until that volume is given up on.
			if !due {
				return true
			}
			want, err := view.ring.Locate(key, n)
			if err != nil || sameNames(want, rec.Replicas) {
				return true
			}
			misplaced++
			if canMove && !aborted {
				batch = append(batch, repairItem{key: append([]byte(nil), key...), rec: rec.clone(), move: true})
			}
			return true
		})
		if err != nil {
			m.log.Error("placement scan", "err", err)
			return
		}
		// The iterator is released before any copy starts.
		if !m.runBatch(view, batch) {
			// Membership changed under the moves (or the master stops):
			// count the rest, move nothing more until it settles again.
			aborted = true
		}
		select {
		case <-m.stop:
			return
		default:
		}
		if next == nil {
			break
		}
		start = next
	}
	m.repairMu.Lock()
	st.underReplicated = max(under-int(m.repairedInPass.Load()), 0)
	// Scan again as soon as the RepairDelay of a volume this pass found
	// missing is over, rather than at the next interval.
	for _, since := range st.missingSince {
		if since.Equal(now) {
			time.AfterFunc(m.cfg.RepairDelay+10*time.Millisecond, m.kickRepair)
		}
	}
	st.keysOn = keysOn
	st.scanned = now
	r := &st.reb
	wasMoving := r.Misplaced > 0
	r.Misplaced = misplaced
	switch {
	case r.State == "scanning" && misplaced == 0:
		r.State = "idle"
	case r.State == "scanning":
		r.State = "moving"
	}
	passMoved, passBytes := r.PassMoved, r.PassBytes
	m.repairMu.Unlock()
	if passMoved > 0 || misplaced > 0 && !wasMoving {
		m.log.Info("placement pass", "moved", passMoved, "bytes", passBytes, "misplaced_at_start", misplaced, "under_replicated", under, "aborted", aborted)
	}
}

// runBatch repairs (unthrottled: a key below its replica count is one
// failure from loss) and then moves (throttled) the batch's keys,
// RebalanceConcurrency at a time. It reports false, after stopping its
// moves, when the ring changed meanwhile or the master is stopping.
func (m *Master) runBatch(view *clusterView, batch []repairItem) bool {
	var repairs, moves []*repairItem
	for i := range batch {
		if batch[i].move {
			moves = append(moves, &batch[i])
		} else {
			repairs = append(repairs, &batch[i])
		}
	}
	ok := m.runPool(repairs, func(it *repairItem) bool {
		select {
		case <-m.stop:
			return false
		default:
		}
		if m.repairKey(view, it.key, &it.rec) {
			m.repairedInPass.Add(1)
		}
		return true
	})
	if !ok || len(moves) == 0 {
		return ok
	}
	ok = m.runPool(moves, func(it *repairItem) bool {
		if m.view.Load().ring != view.ring || !m.moves.wait(it.rec.Size) {
			return false
		}
		m.moveKey(view, it.key, &it.rec)
		return true
	})
	// Delete the moved-away copies as soon as their grace is over.
	time.AfterFunc(m.cfg.MoveGrace+10*time.Millisecond, m.kickGC)
	return ok
}

// runPool runs fn on items, RebalanceConcurrency at a time, until one
// returns false (then it starts no more) or all are done.
func (m *Master) runPool(items []*repairItem, fn func(*repairItem) bool) bool {
	if len(items) == 0 {
		return true
	}
	work := make(chan *repairItem)
	var stopped atomic.Bool
	var wg sync.WaitGroup
	for range min(m.cfg.RebalanceConcurrency, len(items)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for it := range work {
				if !stopped.Load() && !fn(it) {
					stopped.Store(true)
				}
			}
		}()
	}
	for _, it := range items {
		if stopped.Load() {
			break
		}
		work <- it
	}
	close(work)
	wg.Wait()
	return !stopped.Load()
}

const repairBatch = 256

// missingLongEnough reports whether volume name has been missing from the
// live set for RepairDelay, starting its clock if this is the first time.
func (m *Master) missingLongEnough(name string, now time.Time) bool {
	m.repairMu.Lock()
	defer m.repairMu.Unlock()
	since, ok := m.repair.missingSince[name]
	if !ok {
		m.repair.missingSince[name] = now
		since = now
	}
	return now.Sub(since) >= m.cfg.RepairDelay
}

// repairKey copies one key's current version from a live replica to live
// volumes until it has Replicas of them, then records the new replica set
// (queueing the lost replicas' copies for deletion when they come back).
func (m *Master) repairKey(view *clusterView, key []byte, rec *Record) bool {
	var live, lost []string
	for _, name := range rec.Replicas {
		if _, ok := view.vols[name]; ok {
			live = append(live, name)
		} else {
			lost = append(lost, name)
		}
	}
	if len(live) == 0 {
		return false
	}
	src := view.vols[m.reachableFirst(live)[0]]
	var added []string
	order := slices.Concat(view.ring.Order(key), view.draining)
	for _, name := range order {
		if len(live)+len(added) >= m.cfg.Replicas {
			break
		}
		if contains(rec.Replicas, name) {
			continue
		}
		if err := m.copyReplica(view, key, rec, src, name); err != nil {
			m.log.Warn("repair copy failed", "key", string(key), "from", src.Name, "to", name, "err", err)
			continue
		}
		added = append(added, name)
	}
	if len(added) == 0 {
		return false
	}
	if m.switchReplicas(key, rec, append(append([]string(nil), live...), added...), added, lost) {
		m.repairMu.Lock()
		m.repair.copied += int64(len(added))
		m.repairMu.Unlock()
		m.log.Info("repaired", "key", string(key), "added", added, "lost", lost)
		return len(live)+len(added) >= m.cfg.Replicas
	}
	return false
}

// copyReplica has volume dst pull rec's version of key from src and checks
// the copy's checksum. On failure the intent becomes garbage.
func (m *Master) copyReplica(view *clusterView, key []byte, rec *Record, src Member, dst string) error {
	if err := m.ix.addPending(rec.Version, key, dst); err != nil {
		return err
	}
	// An older deletion of this version from dst (an abandoned copy) must
	// not remove the copy about to be made.
	if err := m.ix.doneGarbage(dst, key, rec.Version); err != nil {
		return err
	}
	r := m.pull(view.vols[dst], src, key, rec.Version)
	if r.err == nil && r.checksum != rec.Checksum {
		r.err = errChecksumMismatch
	}
	if r.err != nil {
		_ = m.ix.abandon(rec.Version, key, []string{dst})
		return r.err
	}
	return nil
}

// switchReplicas records replicas as the holders of rec's version of key,
// provided the record is still rec (same version, same replicas): added
// lose their intents, dropped are queued for deletion. When the record
// changed meanwhile (an overwrite, a delete, another move), the copies on
// added are garbage instead. It reports whether the switch happened.
func (m *Master) switchReplicas(key []byte, rec *Record, replicas, added, dropped []string) bool {
	mu := m.lockKey(key)
	var cur Record
	found, err := m.ix.get(key, &cur)
	switched := false
	if err == nil && found && cur.Version == rec.Version && sameNames(cur.Replicas, rec.Replicas) {
		next := cur
		next.Replicas = replicas
		err = m.ix.replaceReplicas(key, &next, added, dropped)
		if err == nil {
			m.cache.set(key, &next)
			switched = true
		}
	} else if err == nil {
		err = m.ix.abandon(rec.Version, key, added)
	}
	mu.Unlock()
	if err != nil {
		m.log.Error("placement commit", "key", string(key), "err", err)
	}
	return switched
}

// repairStatus reports the last scan's count of under-replicated keys and
// how many replica copies repair has made.
func (m *Master) repairStatus() (under int, copied int64) {
	m.repairMu.Lock()
	defer m.repairMu.Unlock()
	return m.repair.underReplicated, m.repair.copied
}
