package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// knownEnv is every KVDB_ variable something in kvdb reads: the variable
// of each flag of the commands that take their flags from the environment
// (master, volume, dev, bench), the client commands' KVDB_URL and
// KVDB_TOKEN, and those only the tests read.
func knownEnv() map[string]bool {
	known := map[string]bool{
		"KVDB_URL": true, "KVDB_TOKEN": true,
		// Tests: node logs (node/*_test.go), the store's crash helper
		// (store/*_test.go), the 1 GiB aws cli run (node/s3), and the
		// linearizability runs (cmd/kvdb).
		"KVDB_TEST_LOG": true, "KVDB_STORE_TEST_KILLED_DIR": true, "KVDB_TEST_1GIB": true,
		"KVDB_STORE_CRASH_DIR": true, "KVDB_STORE_CRASH_MODE": true, "KVDB_STORE_CRASH_RUN": true,
		"KVDB_LINZ_DURATION": true, "KVDB_LINZ_OPS": true, "KVDB_LINZ_SEED": true,
		"KVDB_LINZ_CLIENTS": true, "KVDB_LINZ_VOLUME_404": true,
		// The failover measurement (cmd/kvdb/masters_test.go).
		"KVDB_FAILOVER_PROFILES": true,
	}
	master, _ := masterFlags(io.Discard)
	volume, _ := volumeFlags(io.Discard)
	dev, _ := devFlags(io.Discard)
	bench, _ := benchFlags(io.Discard)
	for _, fs := range []*flag.FlagSet{master, volume, dev, bench} {
		fs.VisitAll(func(f *flag.Flag) { known[envName(f.Name)] = true })
	}
	return known
}

// warnUnknownEnv writes a warning to w for each KVDB_ variable in environ
// (os.Environ's form) that nothing reads: most likely a typo, such as
// KVDB_REPLICA for KVDB_REPLICAS, which would otherwise be ignored without
// a word.
func warnUnknownEnv(w io.Writer, cmd string, environ []string) {
	var known map[string]bool
	var unknown []string
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "KVDB_") {
			continue
		}
		if known == nil {
			known = knownEnv()
		}
		if !known[name] {
			unknown = append(unknown, name)
		}
	}
	slices.Sort(unknown)
	for _, name := range slices.Compact(unknown) {
		msg := fmt.Sprintf("kvdb %s: warning: environment variable %s is set, but no kvdb setting has that name: it is ignored", cmd, name)
		if s := closest(name, known); s != "" {
			msg += fmt.Sprintf(" (did you mean %s?)", s)
		}
		fmt.Fprintln(w, msg)
	}
}

// closest returns the name in known nearest to name by edit distance, if
// it is within 2 edits, else "".
func closest(name string, known map[string]bool) string {
	best, bestD := "", 3
	for k := range known {
		if d := editDistance(name, k); d < bestD || d == bestD && k < best {
			best, bestD = k, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
