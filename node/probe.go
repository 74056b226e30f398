package node

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"
)

// Gossip takes seconds to declare a crashed volume dead (it must rule out a
// slow network first). Until then the master would keep redirecting reads
// to it and streaming writes at it. probeLoop closes that window for the
// master's own decisions: it asks every live volume's /_kvdb/live a few
// times a second and marks a volume that fails twice in a row as
// unreachable. An unreachable volume stays in the ring (membership is
// gossip's call) but redirects and new writes go to the other volumes
// first. One probe per volume per interval, never one per request.

// probeFailures is how many probes in a row must fail.
const probeFailures = 2

func (m *Master) probeLoop() {
	defer m.wg.Done()
	fails := map[string]int{}
	runEvery(m.stop, m.cfg.ProbeInterval, nil, func() {
		if !m.leads() {
			return
		}
		view := m.view.Load()
		var mu sync.Mutex
		var wg sync.WaitGroup
		ok := map[string]bool{}
		loads := *m.loads.Load()
		if !sameKeys(loads, view.vols) {
			next := make(map[string]*volumeLoad, len(view.vols))
			for name := range view.vols {
				if l := loads[name]; l != nil {
					next[name] = l
				} else {
					next[name] = &volumeLoad{}
				}
			}
			m.loads.Store(&next)
			loads = next
		}
		for name, vol := range view.vols {
			wg.Add(1)
			go func() {
				defer wg.Done()
				alive, load := m.probe(vol.HTTP)
				if alive {
					loads[name].probed.Store(load)
					loads[name].sent.Store(0)
				}
				mu.Lock()
				ok[name] = alive
				mu.Unlock()
			}()
		}
		wg.Wait()
		next := map[string]bool{}
		for name, alive := range ok {
			if alive {
				delete(fails, name)
				continue
			}
			fails[name]++
			if fails[name] >= probeFailures {
				next[name] = true
			}
		}
		for name := range fails {
			if _, live := view.vols[name]; !live {
				delete(fails, name)
			}
		}
		if prev := *m.unreachable.Load(); !sameKeys(prev, next) {
			for name := range next {
				if !prev[name] {
					// Writes and deletes in flight to it fail now and are
					// failed over, rather than at the idle timeout.
					cut := m.dialed.cut(view.vols[name].HTTP)
					m.log.Warn("volume does not answer; avoiding it until it does or gossip decides", "volume", name, "connections_cut", cut)
				}
			}
			for name := range prev {
				// A volume gossip has declared gone does not answer again:
				// it left the view.
				if _, live := view.vols[name]; !next[name] && live && ok[name] {
					m.log.Info("volume answers again", "volume", name)
				}
			}
			m.unreachable.Store(&next)
		}
	})
}

// probe asks a volume whether it answers, and how busy it is.
func (m *Master) probe(addr string) (alive bool, load int64) {
	req := fasthttp.AcquireRequest()
	resp := fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI("http://" + addr + "/" + ReservedPrefix + "live")
	timeout := m.cfg.ProbeInterval * 2
	if timeout < 500*time.Millisecond {
		timeout = 500 * time.Millisecond
	}
	if m.client.DoTimeout(req, resp, timeout) != nil || resp.StatusCode() != fasthttp.StatusOK {
		return false, 0
	}
	// The probe itself is one of the requests the volume counted.
	load, err := strconv.ParseInt(string(resp.Header.Peek(loadHeader)), 10, 64)
	if err != nil {
		return true, 0
	}
	return true, max(load-1, 0)
}

// loadHeader carries a volume's load in its answer to a probe.
const loadHeader = "X-Kvdb-Load"

// volumeLoad is what the master knows of a volume's load: the requests and
// transfers it reported at the last probe, plus the redirects the master
// has sent it since (so a burst between probes does not all go to the
// replica that was idle at the last one).
type volumeLoad struct {
	probed atomic.Int64
	sent   atomic.Int64
}

func (l *volumeLoad) estimate() int64 { return l.probed.Load() + l.sent.Load() }

func sameKeys[A, B any](a map[string]A, b map[string]B) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		if _, ok := b[k]; !ok {
			return false
		}
	}
	return true
}

// reachableFirst orders names with the volumes that answer probes first,
// keeping the ring's order within each group.
func (m *Master) reachableFirst(names []string) []string {
	bad := *m.unreachable.Load()
	if len(bad) == 0 {
		return names
	}
	out := make([]string, 0, len(names))
	for _, n := range names {
		if !bad[n] {
			out = append(out, n)
		}
	}
	for _, n := range names {
		if bad[n] {
			out = append(out, n)
		}
	}
	return out
}
