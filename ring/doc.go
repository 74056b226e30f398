// Package ring decides where kvdb keeps a key: given the set of volumes and a
// key, it returns the volumes that should hold the key's replicas, in
// preference order, and it tells which volumes must gain or lose a replica when
// the set of volumes changes.
//
// Placement is a pure function of the Config, the member set and the key. It is
// built on github.com/buraksezer/consistent (consistent hashing with bounded
// loads): a key hashes to one of Config.Partitions partitions, fixed forever,
// and every partition has an owner volume followed by the other volumes in a
// fixed order. A volume of weight w enters the hash ring as w members, so it
// owns about w times the partitions of a volume of weight 1.
//
// The package must stay pure: no network, disk, clock, goroutines, logging or
// package-level mutable state. A Ring is immutable once built; when membership
// changes, build a new one with New and compare the two with Diff.
//
// The placement of a key must never change by accident: testdata/golden.json
// pins it (see TestGolden), and the library version is pinned in go.mod because
// consistent v1.0.0 places keys differently from earlier versions.
package ring
