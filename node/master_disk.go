package node

import (
	"time"
)

// catalogMinFree is the free space the master's disk must have again before
// a full catalog is reopened for writes.
const catalogMinFree = 16 << 20

// catalogLoop watches for the catalog running out of disk: it logs it, and
// reopens the catalog once there is room again (writes are answered 507,
// and the master reports not ready, meanwhile).
func (m *Master) catalogLoop() {
	defer m.wg.Done()
	wasFull := false
	runEvery(m.stop, time.Second, nil, func() {
		if !m.cat.isFull() {
			return
		}
		if !wasFull {
			wasFull = true
			m.log.Error("the master's disk is full: writes and deletes are refused (507) until space is freed", "dir", m.cfg.Dir)
		}
		ok, err := m.cat.reopen(catalogMinFree)
		switch {
		case err != nil:
			m.log.Error("reopening the catalog after the disk was full", "err", err)
		case ok:
			wasFull = false
			m.log.Info("the master's disk has room again: writes are accepted")
		}
	})
}
