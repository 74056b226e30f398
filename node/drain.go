package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/kvdb/kvdb/node/client"
	"github.com/valyala/fasthttp"
)

// Draining empties a volume before it leaves: an operator asks for it
// (handleDrain, persisted in the index) or the volume announces it in its
// gossip metadata (on SIGTERM). Either way the view lists the volume as
// draining and the ring leaves it out, so the placement loop finds every
// key on it misplaced and moves it (rebalance.go).

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
	if err := m.cat.setDrain(name, on); err != nil {
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
