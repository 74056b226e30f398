package node

import "slices"

// Repair: a key with fewer live replicas than the replica count gets
// copies on further live volumes. The placement loop repairs once a
// volume has been gone for RepairDelay; verify restores a copy a volume
// reported lost at once (restoreKey).

// repairKey copies one key's current version from a live replica to live
// volumes until it has Replicas of them, then records the new replica set
// (queueing the lost replicas' copies for deletion when they come back).
// It ignores RepairDelay, and reports whether the key has its replica
// count now.
func (m *Master) repairKey(view *clusterView, key []byte, rec *Record) bool {
	plan := planRepair(m.newPlacementView(view), rec.Replicas, view.ring.Order(key))
	return m.applyRepair(view, key, rec, &plan)
}

// applyRepair carries out plan, a repair decision for rec (see
// placeRepair): it copies to plan's targets in order until Need of them
// hold the key, skipping those whose copy fails. It reports whether the
// key has its replica count now.
func (m *Master) applyRepair(view *clusterView, key []byte, rec *Record, plan *placement) bool {
	if plan.Action != placeRepair {
		return false
	}
	src := view.vols[plan.source(*m.unreachable.Load())]
	var added []string
	for _, name := range plan.Targets {
		if len(added) >= plan.Need {
			break
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
	if m.switchReplicas(key, rec, slices.Concat(plan.Sources, added), added, plan.Gone) {
		m.repairMu.Lock()
		m.repair.copied += int64(len(added))
		m.repairMu.Unlock()
		m.log.Info("repaired", "key", string(key), "added", added, "lost", plan.Gone)
		return len(added) >= plan.Need
	}
	return false
}

// repairStatus reports the last pass's count of under-replicated keys and
// how many replica copies repair has made.
func (m *Master) repairStatus() (under int, copied int64) {
	m.repairMu.Lock()
	defer m.repairMu.Unlock()
	return m.repair.underReplicated, m.repair.copied
}
