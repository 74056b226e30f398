//go:build race

package node

// raceEnabled: the race detector is on. It makes sync.Pool drop a share of
// what is put back on purpose, so pooled paths allocate now and then.
const raceEnabled = true
