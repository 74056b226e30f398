package node

import (
	"bytes"
	"slices"
	"sync"
	"time"

	"github.com/kvdb/kvdb/node/client"
)

// Rebalancing moves keys to the placement the ring gives them after the set
// of volumes changed: a volume joined (it takes its share), a volume is
// draining (it gives everything away), or repair put a copy off the ring's
// order. Each move is copy, verify, switch, and only then delete:
//
//  1. every volume the ring wants and that lacks the key pulls it from a
//     live replica; the copy's checksum must match the record's;
//  2. one synced index batch switches the record to the new replica set,
//     provided the key was not overwritten, deleted or moved meanwhile
//     (else the copies are garbage);
//  3. the copies on volumes the ring no longer wants are queued for
//     deletion, after MoveGrace, so a client redirected to one just
//     before the switch still reads it.
//
// So a key always has its full replica count of readable copies. Moves
// start only when membership has been unchanged for RebalanceDelay, stop
// as soon as the ring changes, and share a byte budget of RebalanceRate.

func (m *Master) setRebalance(f func(*client.RebalanceInfo)) {
	m.repairMu.Lock()
	f(&m.repair.reb)
	m.repairMu.Unlock()
}

// rebalanceStatus returns a copy of the progress.
func (m *Master) rebalanceStatus() client.RebalanceInfo {
	m.repairMu.Lock()
	r := m.repair.reb
	m.repairMu.Unlock()
	if r.State == "" {
		r.State = "settling"
	}
	r.Total = max(r.Misplaced, int(r.PassMoved))
	r.Rate = max(m.cfg.RebalanceRate, 0)
	r.Concurrency = m.cfg.RebalanceConcurrency
	r.Draining = append([]string{}, m.view.Load().draining...)
	return r
}

// moveKey carries out plan, a move or drop decision for rec (see
// placeMove): it copies the key to the volumes the ring wants (see the
// comment at the top of this file), then switches the record to them. A
// copy that fails leaves the key where it was, plus any copies that
// succeeded; the next pass tries again.
func (m *Master) moveKey(view *clusterView, key []byte, rec *Record, plan *placement) {
	src := view.vols[plan.source(*m.unreachable.Load())]
	var added []string
	failed := false
	for _, name := range plan.Add {
		if err := m.copyReplica(view, key, rec, src, name); err != nil {
			m.log.Warn("move copy failed", "key", string(key), "from", src.Name, "to", name, "err", err)
			failed = true
			continue
		}
		added = append(added, name)
	}
	replicas := slices.Clone(plan.Want)
	dropped := plan.Drop
	if failed {
		// Keep every copy the key has; the next pass finishes the move.
		replicas = slices.Concat(rec.Replicas, added)
		dropped = nil
	}
	if len(added) == 0 && len(dropped) == 0 {
		m.setRebalance(func(r *client.RebalanceInfo) { r.Failed++ })
		return
	}
	m.holdGarbage(dropped, key, rec.Version)
	if !m.switchReplicas(key, rec, replicas, added, dropped) {
		m.releaseGarbage(dropped, key, rec.Version)
		return
	}
	m.setRebalance(func(r *client.RebalanceInfo) {
		if failed {
			r.Failed++
			return
		}
		r.Moved++
		r.PassMoved++
		r.Bytes += rec.Size * int64(len(added))
		r.PassBytes += rec.Size * int64(len(added))
	})
	m.log.Debug("moved", "key", string(key), "added", added, "dropped", dropped)
}

// holdGarbage keeps the copies of version of key on vols (about to be
// queued for deletion) from being deleted for MoveGrace, and has them
// deleted as soon as it is over (laterLoop), rather than by a later GC
// pass.
func (m *Master) holdGarbage(vols []string, key []byte, version uint64) {
	if len(vols) == 0 {
		return
	}
	until := time.Now().Add(m.cfg.MoveGrace)
	key = bytes.Clone(key)
	m.graceMu.Lock()
	defer m.graceMu.Unlock()
	if len(m.later) == 0 {
		select {
		case m.laterKick <- struct{}{}:
		default:
		}
	}
	for _, vol := range vols {
		m.grace[string(garbageKey(vol, key, version))] = until
		m.later = append(m.later, laterDeletion{until, garbageItem{vol, key, version}})
	}
}

// releaseGarbage undoes holdGarbage (the copies were not queued after all).
func (m *Master) releaseGarbage(vols []string, key []byte, version uint64) {
	m.graceMu.Lock()
	defer m.graceMu.Unlock()
	for _, vol := range vols {
		delete(m.grace, string(garbageKey(vol, key, version)))
	}
}

// sweepGrace forgets the holds whose time is over: a hold whose garbage
// entry was never collected (dropped meanwhile) must not stay forever.
func (m *Master) sweepGrace() {
	now := time.Now()
	m.graceMu.Lock()
	defer m.graceMu.Unlock()
	for k, until := range m.grace {
		if now.After(until) {
			delete(m.grace, k)
		}
	}
}

// inGrace reports whether the garbage entry must wait, forgetting it once
// its grace is over.
func (m *Master) inGrace(vol string, key []byte, version uint64) bool {
	m.graceMu.Lock()
	defer m.graceMu.Unlock()
	if len(m.grace) == 0 {
		return false
	}
	k := string(garbageKey(vol, key, version))
	until, ok := m.grace[k]
	if !ok {
		return false
	}
	if time.Now().Before(until) {
		return true
	}
	delete(m.grace, k)
	return false
}

// rateLimiter paces transfers to rate bytes per second on average: each
// transfer starts when the bytes before it have been paid for.
type rateLimiter struct {
	rate float64 // bytes per second; 0 or less: no limit
	stop <-chan struct{}
	mu   sync.Mutex
	next time.Time
	// sleep waits for d or stop; tests replace it.
	sleep func(d time.Duration, stop <-chan struct{}) bool
}

func newRateLimiter(rate int64, stop <-chan struct{}) *rateLimiter {
	return &rateLimiter{rate: float64(rate), stop: stop, sleep: sleepOrStop}
}

func sleepOrStop(d time.Duration, stop <-chan struct{}) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-stop:
		return false
	}
}

// wait blocks until a transfer of n bytes may start; false when stopped.
func (l *rateLimiter) wait(n int64) bool {
	if l.rate <= 0 {
		select {
		case <-l.stop:
			return false
		default:
			return true
		}
	}
	l.mu.Lock()
	now := time.Now()
	start := l.next
	if start.Before(now) {
		start = now
	}
	l.next = start.Add(time.Duration(float64(n) / l.rate * float64(time.Second)))
	l.mu.Unlock()
	if d := start.Sub(now); d > 0 {
		return l.sleep(d, l.stop)
	}
	return true
}
