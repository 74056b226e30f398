package node

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/kvdb/kvdb/node/client"
	"github.com/valyala/fasthttp"
)

// handleAdmin serves the admin endpoints; false when rest names none.
func (m *Master) handleAdmin(ctx *fasthttp.RequestCtx, rest []byte) bool {
	switch string(rest) {
	case "live":
		replyText(ctx, fasthttp.StatusOK, "ok")
	case "ready":
		view := m.view.Load()
		// A live volume whose index is not merged yet counts as being
		// merged: its merge may not have started when this is asked.
		leads := m.leads()
		m.mergeMu.Lock()
		merging := len(m.merging)
		if leads {
			for name := range view.vols {
				if !m.merged[name] && !m.merging[name] {
					merging++
				}
			}
		}
		m.mergeMu.Unlock()
		_, leader := m.leaderHTTP()
		switch {
		case !m.leads() && !leader:
			replyText(ctx, fasthttp.StatusServiceUnavailable, "no master leads the cluster now")
		case m.cat.isFull():
			replyText(ctx, fasthttp.StatusServiceUnavailable, "the master's disk is full")
		case view.ring.Len() < m.cfg.Replicas:
			replyText(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("%d live volumes, %d replicas needed", view.ring.Len(), m.cfg.Replicas))
		case merging > 0:
			replyText(ctx, fasthttp.StatusServiceUnavailable, fmt.Sprintf("merging the index of %d volumes", merging))
		default:
			replyText(ctx, fasthttp.StatusOK, "ok")
		}
	case "cluster":
		m.serveCluster(ctx)
	case "metrics":
		m.serveMetrics(ctx)
	case "status":
		m.serveStatus(ctx)
	default:
		if m.cfg.Pprof && bytes.HasPrefix(rest, []byte("debug/pprof/")) {
			servePprof(ctx, rest)
			return true
		}
		return false
	}
	return true
}

func (m *Master) clusterState() client.ClusterInfo {
	view := m.view.Load()
	c := client.ClusterInfo{
		Node:     Member{Name: m.cfg.Name, Role: RoleMaster, HTTP: m.http.addr(), Gossip: m.gossip.addr(), State: "alive"},
		Replicas: m.cfg.Replicas,
		Members:  m.gossip.snapshot(),
		Masters:  m.mastersInfo(),
		Departed: m.gossip.departed(),
		Ring: client.RingInfo{
			Partitions: view.ring.Config().Partitions, Load: view.ring.Config().Load,
			MaxPartitions: view.ring.MaxPartitions(), Owned: view.ring.PartitionsOf(),
		},
		Merging:        []string{},
		PendingDeletes: map[string]int{},
		RepairStartsIn: map[string]float64{},
	}
	c.UnderReplicated, c.RepairCopies = m.repairStatus()
	c.Rebalance = m.rebalanceStatus()
	loads := *m.loads.Load()
	now := time.Now()
	m.repairMu.Lock()
	for name, since := range m.repair.missingSince {
		// A volume back in the view is forgotten at the next pass.
		if _, live := view.vols[name]; live {
			continue
		}
		if left := m.cfg.RepairDelay - now.Sub(since); left > 0 {
			c.RepairStartsIn[name] = math.Ceil(left.Seconds()*10) / 10
		}
	}
	for i, mem := range c.Members {
		// The index's count (values whose record names the volume) rather
		// than the volume's own, which includes versions awaiting deletion.
		if n, ok := m.repair.keysOn[mem.Name]; ok {
			c.Members[i].Keys = n
		}
		if contains(view.draining, mem.Name) {
			c.Members[i].Draining = true
		}
		c.Members[i].Partitions = c.Ring.Owned[mem.Name]
		if l := loads[mem.Name]; l != nil {
			c.Members[i].Load = l.probed.Load()
		}
	}
	m.repairMu.Unlock()
	sort.Slice(c.Members, func(i, j int) bool { return c.Members[i].Name < c.Members[j].Name })
	sort.Slice(c.Departed, func(i, j int) bool { return c.Departed[i].Name < c.Departed[j].Name })
	m.mergeMu.Lock()
	for name := range m.merging {
		c.Merging = append(c.Merging, name)
	}
	m.mergeMu.Unlock()
	_ = m.cat.garbage(func(vol string, key []byte, version uint64) bool {
		c.PendingDeletes[vol]++
		return true
	})
	return c
}

func (m *Master) serveCluster(ctx *fasthttp.RequestCtx) {
	b, _ := json.Marshal(m.clusterState())
	replyJSON(ctx, fasthttp.StatusOK, b)
}
