package bench

import (
	"fmt"
	"strings"
	"sync"
)

// masterSet is the servers of Config.URL, which every worker shares:
// requests go to the one that answered last. A master that cannot be
// reached or answers 503 makes the workers move on to the next; a
// follower's redirect to the leader moves them there (a leader not in
// Config.URL is added, up to maxLearned of them).
type masterSet struct {
	mu   sync.Mutex
	urls []string // base URLs, no trailing '/'
	cur  int
	// configured is how many of urls come from Config.URL.
	configured int
}

// maxLearned bounds the leaders a masterSet adds to the configured URLs.
const maxLearned = 8

// splitURLs reads Config.URL: one base URL or several separated by
// commas, each without a trailing '/'.
func splitURLs(s string) []string {
	var out []string
	for part := range strings.SplitSeq(s, ",") {
		out = append(out, strings.TrimSuffix(strings.TrimSpace(part), "/"))
	}
	return out
}

func newMasterSet(url string) *masterSet {
	urls := splitURLs(url)
	return &masterSet{urls: urls, configured: len(urls)}
}

// current returns the master to send the next request to, and its index.
func (m *masterSet) current() (int, string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cur, m.urls[m.cur]
}

// failed moves the workers on from master i, unless another worker did.
func (m *masterSet) failed(i int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cur == i {
		m.cur = (i + 1) % len(m.urls)
	}
}

// answered makes base the master to use.
func (m *masterSet) answered(base string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.urls[m.cur] == base {
		return
	}
	for i, u := range m.urls {
		if u == base {
			m.cur = i
			return
		}
	}
	if len(m.urls) < m.configured+maxLearned {
		m.urls = append(m.urls, base)
		m.cur = len(m.urls) - 1
	}
}

// leaderOf reports whether loc, the absolute Location of the answer to
// target (a master's base URL followed by suffix), is a follower's
// redirect to the leader: the same path and query on another server. It
// returns the leader's base URL. A master sends a read to a volume with
// ?v=VER and a write to /_kvdb/write/, never to the same path and query.
func leaderOf(target, suffix, loc string) (string, bool) {
	if loc == target || !strings.HasSuffix(loc, suffix) {
		return "", false
	}
	base := loc[:len(loc)-len(suffix)]
	i := strings.Index(base, "://")
	if i <= 0 || len(base) == i+3 {
		return "", false
	}
	// The same path: /_blob/k on a volume is not /k.
	if basePath(base) != basePath(target[:len(target)-len(suffix)]) {
		return "", false
	}
	return base, true
}

// basePath is the path of a base URL: what follows its host.
func basePath(base string) string {
	rest := base[strings.Index(base, "://")+3:]
	if j := strings.IndexByte(rest, '/'); j >= 0 {
		return rest[j:]
	}
	return ""
}

// masterErr is a failure of a master itself: it could not be reached, or
// it answered 503 (no leader, or leadership lost). The workers move on to
// the next master.
type masterErr struct{ err error }

func (e masterErr) Error() string { return e.err.Error() }
func (e masterErr) Unwrap() error { return e.err }

// checkURLs checks Config.URL, one base URL or several separated by commas.
func checkURLs(s string) error {
	for _, u := range splitURLs(s) {
		if u == "" {
			return fmt.Errorf("bench: url %q: an empty URL between commas", s)
		}
		if err := checkURL(u); err != nil {
			return err
		}
	}
	return nil
}
