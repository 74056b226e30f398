package node

import (
	"errors"
	"time"
)

var errChecksumMismatch = errors.New("copy has a different checksum")

// repairState is what the repair loop knows between scans.
type repairState struct {
	// missingSince records when a scan first found a volume that records
	// name as a replica to be missing from the live set.
	missingSince map[string]time.Time
	// underReplicated is the count of keys found below the replica count
	// by the last complete scan.
	underReplicated int
	copied          int64
}

// repairLoop restores the replica count of keys that lost a replica: once a
// volume has been gone for RepairDelay (a flapping or restarting volume
// must not set off a storm of copies), every key it held is copied from a
// surviving replica to the next live volume on the ring.
func (m *Master) repairLoop() {
	defer m.wg.Done()
	runEvery(m.stop, m.cfg.RepairInterval, nil, m.repairScan)
}

type repairItem struct {
	key []byte
	rec Record
}

// repairScan walks the index once and repairs what it can.
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

	under := 0
	var start []byte
	for {
		var batch []repairItem
		var next []byte
		err := m.ix.scanFrom(start, func(key []byte, rec *Record) bool {
			if len(batch) == repairBatch {
				next = append([]byte(nil), key...)
				return false
			}
			live, due := 0, false
			for _, name := range rec.Replicas {
				if _, ok := view.vols[name]; ok {
					live++
				} else if m.missingLongEnough(name, now) {
					due = true
				}
			}
			if live >= m.cfg.Replicas {
				return true
			}
			under++
			if due && live > 0 {
				r := *rec
				r.Replicas = append([]string(nil), rec.Replicas...)
				batch = append(batch, repairItem{key: append([]byte(nil), key...), rec: r})
			}
			return true
		})
		if err != nil {
			m.log.Error("repair scan", "err", err)
			return
		}
		// The iterator is released before any copy starts.
		for _, it := range batch {
			select {
			case <-m.stop:
				return
			default:
			}
			m.repairKey(view, it.key, &it.rec)
		}
		if next == nil {
			break
		}
		start = next
	}
	m.repairMu.Lock()
	st.underReplicated = under
	m.repairMu.Unlock()
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
func (m *Master) repairKey(view *clusterView, key []byte, rec *Record) {
	var live, lost []string
	for _, name := range rec.Replicas {
		if _, ok := view.vols[name]; ok {
			live = append(live, name)
		} else {
			lost = append(lost, name)
		}
	}
	if len(live) == 0 {
		return
	}
	src := view.vols[live[0]]
	var added []string
	for _, name := range view.ring.Order(key) {
		if len(live)+len(added) >= m.cfg.Replicas {
			break
		}
		if contains(rec.Replicas, name) {
			continue
		}
		if err := m.ix.addPending(rec.Version, key, name); err != nil {
			m.log.Error("index", "err", err)
			return
		}
		r := m.pull(view.vols[name], src, key, rec.Version)
		if r.err == nil && r.checksum != rec.Checksum {
			r.err = errChecksumMismatch
		}
		if r.err != nil {
			m.log.Warn("repair copy failed", "key", string(key), "from", src.Name, "to", name, "err", r.err)
			_ = m.ix.abandon(rec.Version, key, []string{name})
			continue
		}
		added = append(added, name)
	}
	if len(added) == 0 {
		return
	}
	mu := m.lockKey(key)
	var cur Record
	found, err := m.ix.get(key, &cur)
	if err == nil && found && cur.Version == rec.Version {
		next := cur
		next.Replicas = append(append([]string(nil), live...), added...)
		err = m.ix.replaceReplicas(key, &next, added, lost)
		if err == nil {
			m.cache.set(key, &next)
		}
	} else if err == nil {
		// Overwritten or deleted meanwhile: the copies are garbage.
		err = m.ix.abandon(rec.Version, key, added)
		added = nil
	}
	mu.Unlock()
	if err != nil {
		m.log.Error("repair commit", "key", string(key), "err", err)
		return
	}
	if len(added) > 0 {
		m.repairMu.Lock()
		m.repair.copied += int64(len(added))
		m.repairMu.Unlock()
		m.log.Debug("repaired", "key", string(key), "added", added, "lost", lost)
	}
}

// repairStatus reports the last scan's count of under-replicated keys and
// how many replica copies repair has made.
func (m *Master) repairStatus() (under int, copied int64) {
	m.repairMu.Lock()
	defer m.repairMu.Unlock()
	return m.repair.underReplicated, m.repair.copied
}
