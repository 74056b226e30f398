package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/valyala/fasthttp"

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

// moveKey moves one key to the replicas the ring wants for it (see the
// comment at the top of this file). A copy that fails leaves the key where
// it was, plus any copies that succeeded; the next pass tries again.
func (m *Master) moveKey(view *clusterView, key []byte, rec *Record) {
	want, err := view.ring.Locate(key, m.cfg.Replicas)
	if err != nil {
		return
	}
	var live []string
	for _, name := range rec.Replicas {
		if _, ok := view.vols[name]; ok {
			live = append(live, name)
		}
	}
	if len(live) == 0 {
		return
	}
	// Read from a replica that stays if there is one: it is not busy
	// draining.
	src := view.vols[m.reachableFirst(live)[0]]
	for _, name := range m.reachableFirst(live) {
		if contains(want, name) {
			src = view.vols[name]
			break
		}
	}
	var added []string
	failed := false
	for _, name := range want {
		if contains(rec.Replicas, name) {
			continue
		}
		if err := m.copyReplica(view, key, rec, src, name); err != nil {
			m.log.Warn("move copy failed", "key", string(key), "from", src.Name, "to", name, "err", err)
			failed = true
			continue
		}
		added = append(added, name)
	}
	replicas := append([]string(nil), want...)
	var dropped []string
	if failed {
		// Keep every copy the key has; the next pass finishes the move.
		replicas = append(append([]string(nil), rec.Replicas...), added...)
	} else {
		for _, name := range rec.Replicas {
			if !contains(want, name) {
				dropped = append(dropped, name)
			}
		}
	}
	if len(added) == 0 && len(dropped) == 0 {
		m.setRebalance(func(r *client.RebalanceInfo) { r.Failed++ })
		return
	}
	m.holdGarbage(dropped, key, rec.Version)
	if !m.switchReplicas(key, rec, replicas, added, dropped) {
		return
	}
	m.kickGC()
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
// queued for deletion) from being deleted for MoveGrace.
func (m *Master) holdGarbage(vols []string, key []byte, version uint64) {
	if len(vols) == 0 {
		return
	}
	until := time.Now().Add(m.cfg.MoveGrace)
	m.graceMu.Lock()
	defer m.graceMu.Unlock()
	for _, vol := range vols {
		m.grace[string(garbageKey(vol, key, version))] = until
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

// drainSet returns the volumes an operator asked to drain.
func (m *Master) drainSet() map[string]bool {
	if p := m.drains.Load(); p != nil {
		return *p
	}
	return nil
}

// handleDrain serves /_kvdb/drain/VOLUME (a volume name or HTTP address):
// POST starts draining it, DELETE stops, GET reports progress.
func (m *Master) handleDrain(ctx *fasthttp.RequestCtx, target string) {
	name := m.resolveVolume(target)
	if name == "" {
		replyText(ctx, fasthttp.StatusNotFound, fmt.Sprintf("no volume named or at %q", target))
		return
	}
	switch {
	case ctx.IsPost() || ctx.IsPut():
		if err := m.setDrain(name, true); err != nil {
			replyError(ctx, err)
			return
		}
	case ctx.IsDelete():
		if err := m.setDrain(name, false); err != nil {
			replyError(ctx, err)
			return
		}
	case ctx.IsGet() || ctx.IsHead():
	default:
		ctx.Response.Header.Set("Allow", "GET, POST, DELETE")
		replyText(ctx, fasthttp.StatusMethodNotAllowed, "method "+string(ctx.Method())+" not allowed on drain")
		return
	}
	b, _ := json.Marshal(m.drainStatus(name))
	replyJSON(ctx, fasthttp.StatusOK, b)
}

func (m *Master) drainStatus(name string) client.DrainStatus {
	view := m.view.Load()
	d := client.DrainStatus{Volume: name, Draining: contains(view.draining, name) || m.drainSet()[name]}
	m.repairMu.Lock()
	keys := m.repair.keysOn[name]
	scanned := m.repair.scanned
	m.repairMu.Unlock()
	m.drainMu.Lock()
	since := m.drainSince[name]
	m.drainMu.Unlock()
	d.Keys = keys
	d.Done = d.Draining && keys == 0 && !scanned.IsZero() && scanned.After(since)
	if d.Draining && view.ring.Len() < m.cfg.Replicas {
		d.Blocked = fmt.Sprintf("%d volumes outside those draining, %d replicas needed", view.ring.Len(), m.cfg.Replicas)
	}
	return d
}

// resolveVolume finds a volume by name or HTTP address, among live and
// departed members.
func (m *Master) resolveVolume(target string) string {
	if target == "" {
		return ""
	}
	for _, mem := range append(m.gossip.snapshot(), m.gossip.departed()...) {
		if mem.Role == RoleVolume && (mem.Name == target || mem.HTTP == target) {
			return mem.Name
		}
	}
	if m.drainSet()[target] {
		return target
	}
	return ""
}

var errDrainName = errors.New("drain: bad volume name")

// setDrain records an operator's drain (or its end) durably and rebuilds
// the view so that placement follows at once.
func (m *Master) setDrain(name string, on bool) error {
	if !nameRE.MatchString(name) {
		return withStatus(fasthttp.StatusBadRequest, errDrainName)
	}
	m.drainMu.Lock()
	defer m.drainMu.Unlock()
	if err := m.ix.setDrain(name, on); err != nil {
		return err
	}
	next := map[string]bool{}
	for k := range m.drainSet() {
		next[k] = true
	}
	if on {
		next[name] = true
		if _, ok := m.drainSince[name]; !ok {
			m.drainSince[name] = time.Now()
		}
		m.log.Info("drain requested", "volume", name)
	} else {
		delete(next, name)
		delete(m.drainSince, name)
		m.log.Info("drain cancelled", "volume", name)
	}
	m.drains.Store(&next)
	m.refreshView()
	return nil
}
