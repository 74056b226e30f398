package node

import (
	"time"
)

// versionLease is how far ahead of the versions handed out the persisted
// ceiling is moved: one synced write per lease, and after a restart versions
// (and so Last-Modified dates) may be this far ahead of the clock.
const versionLease = uint64(time.Second)

// nextVersion returns a version larger than any handed out or merged
// before: the wall clock in nanoseconds when it is ahead, else the last
// version plus one. Newer writes get larger versions, which is what lets a
// rebuild pick the newest copy of a key; the counter is seeded from the
// index at start, so a clock stepped back (or a new master host) cannot
// hand out a version below one already stored.
func (m *Master) nextVersion() (uint64, error) {
	m.verMu.Lock()
	defer m.verMu.Unlock()
	v := max(uint64(m.cfg.clock().UnixNano()), m.lastVersion+1)
	if v >= m.verCeiling {
		if err := m.cat.setVersionCeiling(v + versionLease); err != nil {
			return 0, err
		}
		m.verCeiling = v + versionLease
	}
	m.lastVersion = v
	return v, nil
}

// observeVersion raises the version counter past v, a version that came
// from elsewhere (a volume's index being merged).
func (m *Master) observeVersion(v uint64) error {
	m.verMu.Lock()
	defer m.verMu.Unlock()
	if v <= m.lastVersion {
		return nil
	}
	if v >= m.verCeiling {
		if err := m.cat.setVersionCeiling(v + versionLease); err != nil {
			return err
		}
		m.verCeiling = v + versionLease
	}
	m.lastVersion = v
	return nil
}
