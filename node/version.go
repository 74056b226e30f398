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
func (c *catalog) nextVersion() (uint64, error) {
	c.verMu.Lock()
	defer c.verMu.Unlock()
	v := max(uint64(c.now().UnixNano()), c.lastVersion+1)
	if v >= c.verCeiling {
		if err := c.setVersionCeiling(v + versionLease); err != nil {
			return 0, err
		}
		c.verCeiling = v + versionLease
	}
	c.lastVersion = v
	return v, nil
}

// observeVersion raises the version counter past v, a version that came
// from elsewhere (a volume's index being merged).
func (c *catalog) observeVersion(v uint64) error {
	c.verMu.Lock()
	defer c.verMu.Unlock()
	if v <= c.lastVersion {
		return nil
	}
	if v >= c.verCeiling {
		if err := c.setVersionCeiling(v + versionLease); err != nil {
			return err
		}
		c.verCeiling = v + versionLease
	}
	c.lastVersion = v
	return nil
}

// resetVersions seeds the counter from the ceiling in the catalog, which
// the log keeps the same on every master: a master that has just become
// the leader hands out versions above every one the previous leaders
// handed out, whatever its clock says.
func (c *catalog) resetVersions() error {
	ceil, err := c.versionCeiling()
	if err != nil {
		return err
	}
	c.verMu.Lock()
	defer c.verMu.Unlock()
	c.verCeiling = ceil
	c.lastVersion = max(c.lastVersion, ceil)
	return nil
}

// lastIssued is the highest version handed out so far (after
// resetVersions: by any master).
func (c *catalog) lastIssued() uint64 {
	c.verMu.Lock()
	defer c.verMu.Unlock()
	return c.lastVersion
}
