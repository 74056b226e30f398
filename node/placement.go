package node

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/kvdb/kvdb/node/client"
)

// The placement loop converges stored placement on what it should be, one
// pass over the index at a time. For each key it asks decidePlacement
// (placement_decide.go) what the key needs, and carries that out: a repair
// (repairKey, repair.go) for a key that lost a replica, a move (moveKey,
// rebalance.go) for a key that is not where the ring puts it. Passes run
// every RepairInterval and whenever kickRepair asks for one.

var errChecksumMismatch = errors.New("copy has a different checksum")

// repairState is what the placement loop knows between passes.
type repairState struct {
	// missingSince records when a pass first found a volume that records
	// name as a replica to be missing from the live set.
	missingSince map[string]time.Time
	// underReplicated is the count of keys found below the replica count
	// by the last complete pass.
	underReplicated int
	copied          int64
	// keysOn counts, per volume, the keys whose record names it as a
	// replica, at the last complete pass; scanned is when that pass began.
	keysOn  map[string]int64
	scanned time.Time
	reb     client.RebalanceInfo
}

// placementLoop runs placement passes until the master stops. Repairs wait
// until a volume has been gone for RepairDelay (a flapping or restarting
// volume must not set off a storm of copies); moves wait until membership
// has been unchanged for RebalanceDelay, and are throttled (see moveKey).
func (m *Master) placementLoop() {
	defer m.wg.Done()
	runEvery(m.stop, m.cfg.RepairInterval, m.repairKick, func() {
		if m.leads() {
			m.placementPass()
		}
	})
}

// repairBatch is how many keys a pass decides on before it carries out
// their decisions, so that the index iterator is released before any copy
// starts. Verify walks the index in batches of the same size.
const repairBatch = 256

// placementItem is one key a pass will repair or move, with its decision.
type placementItem struct {
	key  []byte
	rec  Record
	plan placement
}

// placementPass walks the index once and repairs and moves what it can. A
// pass is stateless: it works from the index alone, so a restarted master
// simply picks up where the placement still differs.
func (m *Master) placementPass() {
	view := m.view.Load()
	now := time.Now()
	pv := m.startPass(view, now)

	n := m.cfg.Replicas
	under, misplaced := 0, 0
	keysOn := map[string]int64{}
	for name := range view.vols {
		keysOn[name] = 0
	}
	m.setRebalance(func(r *client.RebalanceInfo) {
		switch {
		case !pv.Settled:
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
		if !m.leads() {
			// Deposed mid-pass: the new leader runs its own.
			aborted = true
			break
		}
		var batch []placementItem
		var next []byte
		err := m.cat.scanFrom(start, func(key []byte, rec *Record) bool {
			if len(batch) == repairBatch {
				next = append([]byte(nil), key...)
				return false
			}
			if rec.Parts > 0 {
				return true // a multipart value: its parts are keys of their own
			}
			for _, name := range rec.Replicas {
				keysOn[name]++
				if !pv.Live[name] {
					m.noteMissing(name, now)
				}
			}
			plan := decidePlacement(pv, rec.Replicas, view.ring.Order(key))
			if plan.Action == placeMove && !roomFor(view, plan.Add, rec.Size) {
				// A volume the ring wants has no room for it (as its
				// gossip says; a copy refused for lack of room makes it
				// say so at once): the key stays, misplaced, rather than
				// being copied there and refused every pass.
				plan.Action = placeHold
			}
			if plan.Under {
				under++
			}
			if plan.misplaced() {
				misplaced++
			}
			// After an abort, misplaced keys are only counted.
			if plan.Action == placeRepair || plan.moves() && !aborted {
				batch = append(batch, placementItem{key: append([]byte(nil), key...), rec: rec.clone(), plan: plan})
			}
			return true
		})
		if err != nil {
			m.log.Error("placement scan", "err", err)
			return
		}
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
	m.endPass(now, under, misplaced, keysOn, aborted)
}

// startPass returns the placementView of a pass that begins now on view,
// after forgetting when the volumes live again went missing.
func (m *Master) startPass(view *clusterView, now time.Time) *placementView {
	pv := m.newPlacementView(view)
	pv.Settled = now.Sub(view.changed) >= m.cfg.RebalanceDelay
	pv.MissingFor = map[string]time.Duration{}
	m.repairMu.Lock()
	defer m.repairMu.Unlock()
	for name, since := range m.repair.missingSince {
		if pv.Live[name] {
			delete(m.repair.missingSince, name)
			continue
		}
		pv.MissingFor[name] = now.Sub(since)
	}
	return pv
}

// newPlacementView returns what the placement decision needs of view,
// leaving out what only a pass knows (Settled, MissingFor).
func (m *Master) newPlacementView(view *clusterView) *placementView {
	live := make(map[string]bool, len(view.vols))
	for name := range view.vols {
		live[name] = true
	}
	return &placementView{
		Replicas:    m.cfg.Replicas,
		Live:        live,
		Draining:    view.draining,
		RepairDelay: m.cfg.RepairDelay,
	}
}

// noteMissing starts the clock of volume name, which a record names but
// which is not live, unless it runs already. A volume first found missing
// by a pass is missing for 0 in that pass's view (see placementView).
func (m *Master) noteMissing(name string, now time.Time) {
	m.repairMu.Lock()
	defer m.repairMu.Unlock()
	if _, ok := m.repair.missingSince[name]; !ok {
		m.repair.missingSince[name] = now
	}
}

// endPass records what a complete pass that began at now found, and logs
// it if anything moved or is left to move.
func (m *Master) endPass(now time.Time, under, misplaced int, keysOn map[string]int64, aborted bool) {
	m.repairMu.Lock()
	st := &m.repair
	st.underReplicated = max(under-int(m.repairedInPass.Load()), 0)
	// Pass again as soon as the RepairDelay of a volume this pass found
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

// roomFor reports whether every volume of vols has room for size bytes,
// as far as the master knows (a volume with no known total has).
func roomFor(view *clusterView, vols []string, size int64) bool {
	for _, name := range vols {
		if vol, ok := view.vols[name]; ok && vol.Total > 0 && vol.Free < size {
			return false
		}
	}
	return true
}

// runBatch carries out the batch's decisions: repairs first (unthrottled:
// a key below its replica count is one failure from loss), then moves
// (throttled), RebalanceConcurrency at a time. It reports false, after
// stopping its moves, when the ring changed meanwhile or the master is
// stopping.
func (m *Master) runBatch(view *clusterView, batch []placementItem) bool {
	var repairs, moves []*placementItem
	for i := range batch {
		if batch[i].plan.Action == placeRepair {
			repairs = append(repairs, &batch[i])
		} else {
			moves = append(moves, &batch[i])
		}
	}
	ok := m.runPool(repairs, func(it *placementItem) bool {
		select {
		case <-m.stop:
			return false
		default:
		}
		if m.applyRepair(view, it.key, &it.rec, &it.plan) {
			m.repairedInPass.Add(1)
		}
		return true
	})
	if !ok || len(moves) == 0 {
		return ok
	}
	ok = m.runPool(moves, func(it *placementItem) bool {
		if m.view.Load().ring != view.ring || !m.moves.wait(it.rec.Size) {
			return false
		}
		m.moveKey(view, it.key, &it.rec, &it.plan)
		return true
	})
	return ok
}

// runPool runs fn on items, RebalanceConcurrency at a time, until one
// returns false (then it starts no more) or all are done.
func (m *Master) runPool(items []*placementItem, fn func(*placementItem) bool) bool {
	if len(items) == 0 {
		return true
	}
	work := make(chan *placementItem)
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

// copyReplica has volume dst pull rec's version of key from src and checks
// the copy's checksum. On failure the intent becomes garbage. Repairs and
// moves both copy with it.
func (m *Master) copyReplica(view *clusterView, key []byte, rec *Record, src Member, dst string) error {
	// The intent, and taking back an older deletion of this version from
	// dst (an abandoned copy), are ordered against the garbage collector's
	// checks: it must not remove the copy about to be made.
	mu := m.lockCopies(key)
	err := m.cat.addPending(rec.Version, key, dst)
	if err == nil {
		err = m.cat.doneGarbage(dst, key, rec.Version)
	}
	mu.Unlock()
	if err != nil {
		return err
	}
	r := m.pull(view.vols[dst], src, key, rec.Version)
	if r.err == nil && r.checksum != rec.Checksum {
		r.err = errChecksumMismatch
	}
	if r.err != nil {
		_ = m.cat.abandon(rec.Version, key, []string{dst})
		return r.err
	}
	return nil
}

// switchReplicas records replicas as the holders of rec's version of key,
// provided the record is still rec (same version, same replicas): added
// lose their intents, dropped are queued for deletion. When the record
// changed meanwhile (an overwrite, a delete, another move), the copies on
// added are garbage instead. It reports whether the switch happened.
// Repairs and moves both commit with it.
func (m *Master) switchReplicas(key []byte, rec *Record, replicas, added, dropped []string) bool {
	switched, err := m.cat.switchReplicas(key, rec, replicas, added, dropped)
	if err != nil {
		m.log.Error("placement commit", "key", string(key), "err", err)
	}
	return switched
}
