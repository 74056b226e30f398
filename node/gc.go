package node

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
	runEvery(m.stop, m.cfg.GCInterval, m.gcKick, m.collectGarbage)
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
	var rec Record
	for _, g := range batch {
		select {
		case <-m.stop:
			return
		default:
		}
		if m.inGrace(g.vol, g.key, g.version) {
			continue
		}
		// A copy of this very version may be on its way to the volume
		// (repair, rebalance): its intent keeps it.
		if pending, err := m.cat.isPending(g.version, g.vol, g.key); err != nil || pending {
			continue
		}
		// Never delete the version the index points at (a blob that was
		// abandoned on a volume may have been copied back there since).
		if found, err := m.cat.get(g.key, &rec); err == nil && found && rec.Version == g.version && contains(rec.Replicas, g.vol) {
			_ = m.cat.doneGarbage(g.vol, g.key, g.version)
			continue
		}
		if err := m.deleteBlob(view.vols[g.vol].HTTP, g.key, g.version); err != nil {
			m.log.Debug("gc delete failed; will retry", "volume", g.vol, "key", string(g.key), "err", err)
			continue
		}
		_ = m.cat.doneGarbage(g.vol, g.key, g.version)
	}
}
