package node

import (
	"sync"

	"github.com/cespare/xxhash/v2"
)

// recordCache keeps recently used index records in memory so that the
// redirect of a hot key costs a map lookup instead of a goleveldb read and
// decode (and allocates nothing). It is bounded by entry count; when a shard
// is full an arbitrary entry is dropped.
//
// Coherence: every change of a key's record happens under the master's
// per-key lock and updates the cache in the same critical section; a miss
// fills the cache under that lock too, so a stale record can never be put
// back after a newer one.
type recordCache struct {
	shards   [64]cacheShard
	perShard int
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[string]*Record
}

func newRecordCache(entries int) *recordCache {
	c := &recordCache{perShard: entries / 64}
	if c.perShard < 1 {
		c.perShard = 1
	}
	for i := range c.shards {
		c.shards[i].m = make(map[string]*Record)
	}
	return c
}

func (c *recordCache) shard(key []byte) *cacheShard {
	return &c.shards[xxhash.Sum64(key)%uint64(len(c.shards))]
}

// get returns the cached record; callers must not modify it.
func (c *recordCache) get(key []byte) (*Record, bool) {
	s := c.shard(key)
	s.mu.RLock()
	r, ok := s.m[string(key)]
	s.mu.RUnlock()
	return r, ok
}

// set caches a copy of rec. Absent keys are not cached: a scan of missing
// keys must not push the hot ones out.
func (c *recordCache) set(key []byte, rec *Record) {
	cp := *rec
	cp.Replicas = append([]string(nil), rec.Replicas...)
	s := c.shard(key)
	s.mu.Lock()
	if _, ok := s.m[string(key)]; !ok && len(s.m) >= c.perShard {
		for k := range s.m {
			delete(s.m, k)
			break
		}
	}
	s.m[string(key)] = &cp
	s.mu.Unlock()
}

func (c *recordCache) forget(key []byte) {
	s := c.shard(key)
	s.mu.Lock()
	delete(s.m, string(key))
	s.mu.Unlock()
}

// clear forgets every record: a master that becomes the leader starts with
// an empty cache, as records changed by the log while it followed may have
// been cached before they changed.
func (c *recordCache) clear() {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		clear(s.m)
		s.mu.Unlock()
	}
}
