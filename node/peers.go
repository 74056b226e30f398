package node

import (
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// peersFile, in the master's directory, lists the gossip addresses of the
// volumes it saw last, one a line.
const peersFile = "peers"

// savePeers remembers the gossip addresses of vols for the next start.
func (m *Master) savePeers(vols map[string]Member) {
	if len(vols) == 0 {
		return // keep the last list: a master alone wants it most
	}
	var b strings.Builder
	for _, addr := range slices.Sorted(maps.Keys(gossipAddrs(vols))) {
		b.WriteString(addr)
		b.WriteByte('\n')
	}
	path := filepath.Join(m.cfg.Dir, peersFile)
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(b.String()), 0o644); err == nil {
		err = os.Rename(tmp, path)
		if err != nil {
			m.log.Warn("saving the volumes' addresses", "err", err)
		}
	}
}

func gossipAddrs(vols map[string]Member) map[string]bool {
	out := make(map[string]bool, len(vols))
	for _, v := range vols {
		if v.Gossip != "" {
			out[v.Gossip] = true
		}
	}
	return out
}

// loadPeers reads the addresses savePeers wrote (none if there is no file).
func loadPeers(dir string) []string {
	b, err := os.ReadFile(filepath.Join(dir, peersFile))
	if err != nil {
		return nil
	}
	return strings.Fields(string(b))
}

// appendNew appends the items of add that list lacks.
func appendNew(list []string, add ...string) []string {
	for _, a := range add {
		if !slices.Contains(list, a) {
			list = append(list, a)
		}
	}
	return list
}
