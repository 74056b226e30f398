package node

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"
)

// expectWrite sends only the headers of a write with Expect: 100-continue
// and returns the master's answer (status, Location, body).
func (c *testCluster) expectWrite(t *testing.T, method, key string, size int64, hdr ...string) (int, string, string) {
	t.Helper()
	return expectWriteTo(t, c.master.Addr(), method, key, size, hdr...)
}

// expectWriteTo is expectWrite to the master at addr.
func expectWriteTo(t *testing.T, addr, method, key string, size int64, hdr ...string) (int, string, string) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	var extra strings.Builder
	for i := 0; i+1 < len(hdr); i += 2 {
		fmt.Fprintf(&extra, "%s: %s\r\n", hdr[i], hdr[i+1])
	}
	fmt.Fprintf(conn, "%s /%s HTTP/1.1\r\nHost: kvdb\r\nContent-Length: %d\r\nExpect: 100-continue\r\n%s\r\n", method, key, size, extra.String())
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header.Get("Location"), string(b)
}

// ticketURL is the Location of the master's 307 for a write of size bytes.
func (c *testCluster) ticketURL(t *testing.T, method, key string, size int64, hdr ...string) string {
	t.Helper()
	st, loc, body := c.expectWrite(t, method, key, size, hdr...)
	if st != 307 || loc == "" {
		t.Fatalf("%s %s with Expect: got %d (%s), want 307 with a Location", method, key, st, body)
	}
	return loc
}

// TestRedirectedWrite: a write with Expect: 100-continue is sent to a
// volume, which stores it on every replica and commits it; the master's
// request counters show no value byte went through it.
func TestRedirectedWrite(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	value := strings.Repeat("redirected ", 1000)
	loc := c.ticketURL(t, "PUT", "rw/k", int64(len(value)))
	if !strings.Contains(loc, "/_kvdb/write/rw/k?") {
		t.Fatalf("Location %q is not a volume's write endpoint", loc)
	}
	st, hdr, body := send(t, "PUT", loc, value)
	if st != 201 {
		t.Fatalf("PUT to the ticket: got %d (%s), want 201", st, body)
	}
	rec := c.record("rw/k")
	if got := hdr.Get("ETag"); got != rec.ETag() {
		t.Errorf("ETag: got %s, want the catalog's %s", got, rec.ETag())
	}
	if len(rec.Replicas) != 2 {
		t.Fatalf("replicas: got %v, want 2", rec.Replicas)
	}
	if st, got := c.get("rw/k"); st != 200 || got != value {
		t.Fatalf("GET: got %d and %d bytes, want the value", st, len(got))
	}
	if c.healthyReplicas("rw/k") != 2 {
		t.Fatal("not every replica holds the value")
	}
	// An overwrite (200) and a create-only POST on the existing key (409).
	loc = c.ticketURL(t, "PUT", "rw/k", 3)
	if st, _, body := send(t, "PUT", loc, "new"); st != 200 {
		t.Fatalf("redirected overwrite: got %d (%s), want 200", st, body)
	}
	if st, _, body := c.expectWrite(t, "POST", "rw/k", 3); st != 409 {
		t.Fatalf("redirected POST to an existing key: got %d (%s), want 409 before the body", st, body)
	}
	if st, got := c.get("rw/k"); st != 200 || got != "new" {
		t.Fatalf("GET after the overwrite: got %d %q", st, got)
	}
}

// TestRedirectedWriteTickets: a ticket that is tampered with, used twice,
// sent more bytes than it names, expired, or sent to another volume is
// refused, and nothing is stored.
func TestRedirectedWriteTickets(t *testing.T) {
	c := newTestClusterWith(t, 3, 2, withSecret)
	loc := c.ticketURL(t, "PUT", "tk/k", 5)
	u, _ := url.Parse(loc)
	q := u.Query()

	tampered := *u
	tq := url.Values{"t": {q.Get("t")[:len(q.Get("t"))-2] + "AA"}, "s": {q.Get("s")}}
	tampered.RawQuery = tq.Encode()
	otherKey := strings.Replace(loc, "/_kvdb/write/tk/k?", "/_kvdb/write/tk/other?", 1)
	unsigned := *u
	unsigned.RawQuery = url.Values{"t": {q.Get("t")}}.Encode()

	for _, tc := range []struct {
		name, url, body string
		want            int
	}{
		{"tampered", tampered.String(), "hello", 403},
		{"moved to another key", otherKey, "hello", 403},
		{"signature cut", unsigned.String(), "hello", 403},
		{"more bytes than named", loc, "hello, and more", 413},
	} {
		if st, _, body := send(t, "PUT", tc.url, tc.body); st != tc.want {
			t.Errorf("%s: got %d (%s), want %d", tc.name, st, body, tc.want)
		}
	}
	if st, _, body := send(t, "PUT", loc, "hello"); st != 201 {
		t.Fatalf("the ticket as issued: got %d (%s), want 201", st, body)
	}
	if st, _, body := send(t, "PUT", loc, "again"); st != 403 {
		t.Errorf("the ticket used twice: got %d (%s), want 403", st, body)
	}
	if st, got := c.get("tk/k"); st != 200 || got != "hello" {
		t.Fatalf("GET: got %d %q, want \"hello\"", st, got)
	}
	if st, _ := c.get("tk/other"); st != 404 {
		t.Errorf("tk/other: got %d, want 404", st)
	}

	// Expired: a ticket the master signed, an hour old.
	first := c.master.view.Load().vols[c.vcfgs[0].Name]
	exp := ticket{Version: uint64(time.Now().UnixNano()), Size: 5, Max: 1 << 30, Expiry: time.Now().Add(-time.Hour).Unix(), Replicas: []string{first.Name, c.vcfgs[1].Name}}
	expired := "http://" + first.HTTP + "/_kvdb/write/tk/exp?" + c.master.sec.ticketQuery([]byte("tk/exp"), &exp)
	if st, _, body := send(t, "PUT", expired, "hello"); st != 403 {
		t.Errorf("expired ticket: got %d (%s), want 403", st, body)
	}
	// A ticket for one volume sent to another.
	wrong := ticket{Version: uint64(time.Now().UnixNano()), Size: 5, Max: 1 << 30, Expiry: time.Now().Add(time.Minute).Unix(), Replicas: []string{c.vcfgs[1].Name, first.Name}}
	elsewhere := "http://" + first.HTTP + "/_kvdb/write/tk/wrong?" + c.master.sec.ticketQuery([]byte("tk/wrong"), &wrong)
	if st, _, body := send(t, "PUT", elsewhere, "hello"); st != 403 {
		t.Errorf("ticket for another volume: got %d (%s), want 403", st, body)
	}
	// A ticket the master never issued (no intent): stored nowhere.
	forged := ticket{Version: uint64(time.Now().UnixNano()), Size: 5, Max: 1 << 30, Expiry: time.Now().Add(time.Minute).Unix(), Replicas: []string{first.Name, c.vcfgs[1].Name}}
	never := "http://" + first.HTTP + "/_kvdb/write/tk/never?" + c.master.sec.ticketQuery([]byte("tk/never"), &forged)
	if st, _, body := send(t, "PUT", never, "hello"); st != 403 {
		t.Errorf("ticket never issued: got %d (%s), want 403", st, body)
	}
	for _, k := range []string{"tk/exp", "tk/wrong", "tk/never"} {
		if st, _ := c.get(k); st != 404 {
			t.Errorf("%s: got %d, want 404", k, st)
		}
	}
	relWaitQuiet(t, c)
	waitFor(t, 10*time.Second, "the refused writes' blobs deleted", func() bool {
		for i := range c.vols {
			if c.staleCopies(i) != 0 {
				return false
			}
		}
		return true
	})
}

// TestRedirectedRacingPosts: 32 POSTs to one new key, all redirected, give
// exactly one 201; the others 409, and the key holds the winner's value.
func TestRedirectedRacingPosts(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	const n = 32
	locs := make([]string, n)
	for i := range locs {
		locs[i] = c.ticketURL(t, "POST", "race/post", 8)
	}
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			statuses[i], _, _ = send(t, "POST", locs[i], fmt.Sprintf("value%03d", i))
		})
	}
	wg.Wait()
	created, winner := 0, -1
	for i, st := range statuses {
		switch st {
		case 201:
			created++
			winner = i
		case 409:
		default:
			t.Errorf("POST %d: got %d, want 201 or 409", i, st)
		}
	}
	if created != 1 {
		t.Fatalf("got %d POSTs answered 201, want exactly 1 (%v)", created, statuses)
	}
	if st, got := c.get("race/post"); st != 200 || got != fmt.Sprintf("value%03d", winner) {
		t.Fatalf("GET: got %d %q, want the winner's value%03d", st, got, winner)
	}
}

// TestRedirectedWriteMasterRestart: the master restarts between its 307
// and the commit. The write fails with 503 (it was never acknowledged; a
// retry can succeed), and what the volume wrote is deleted: no orphan.
func TestRedirectedWriteMasterRestart(t *testing.T) {
	c := newTestCluster(t, 3, 2)
	loc := c.ticketURL(t, "PUT", "mr/k", 5)
	c.master.Kill()
	c.startMaster()
	c.waitVolumes(3)
	st, _, body := send(t, "PUT", loc, "hello")
	if st != 503 {
		t.Fatalf("PUT to a ticket issued before the master restarted: got %d (%s), want 503", st, body)
	}
	if st, _ := c.get("mr/k"); st != 404 {
		t.Fatalf("GET: got %d, want 404", st)
	}
	waitFor(t, 10*time.Second, "no orphan left", func() bool {
		for i := range c.vols {
			if c.staleCopies(i) != 0 {
				return false
			}
		}
		return true
	})
}

// slowBody yields size bytes of 'x', pausing at pauseAt until released.
type slowBody struct {
	size, off, pauseAt int64
	reached, release   chan struct{}
	once               sync.Once
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.off >= b.size {
		return 0, io.EOF
	}
	if b.off >= b.pauseAt {
		b.once.Do(func() { close(b.reached) })
		<-b.release
	}
	n := int64(len(p))
	if b.off < b.pauseAt {
		n = min(n, b.pauseAt-b.off)
	}
	n = min(n, b.size-b.off)
	for i := range p[:n] {
		p[i] = 'x'
	}
	b.off += n
	return int(n), nil
}

// startSlowPut sends size bytes to loc, pausing after 2 MiB until the
// returned body is released; the status (0: no answer) arrives on done.
// It returns once the pause is reached.
func startSlowPut(loc string, size int64) (*slowBody, <-chan int) {
	body := &slowBody{size: size, pauseAt: 2 << 20, reached: make(chan struct{}), release: make(chan struct{})}
	done := make(chan int, 1)
	go func() {
		req, _ := http.NewRequest("PUT", loc, body)
		req.ContentLength = size
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			done <- 0
			return
		}
		resp.Body.Close()
		done <- resp.StatusCode
	}()
	<-body.reached
	return body, done
}

// ticketOf decodes the ticket of a 307's Location for key.
func (c *testCluster) ticketOf(t *testing.T, key, loc string) ticket {
	t.Helper()
	u, _ := url.Parse(loc)
	tk, err := c.master.sec.parseTicket([]byte(key), []byte(u.Query().Get("t")), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return tk
}

// TestRedirectedWriteReplicaDies: the second replica dies while the value
// streams to it. The coordinator replaces it with a spare, copying from
// its own copy, and the write succeeds on two live replicas.
func TestRedirectedWriteReplicaDies(t *testing.T) {
	c := newTestCluster(t, 4, 2)
	const size = 8 << 20
	loc := c.ticketURL(t, "PUT", "rd/k", size)
	tk := c.ticketOf(t, "rd/k", loc)
	body, done := startSlowPut(loc, size)
	c.killVolume(c.volumeIndex(tk.Replicas[1]))
	close(body.release)
	if st := <-done; st != 201 {
		t.Fatalf("PUT with the second replica killed mid-stream: got %d, want 201", st)
	}
	rec := c.record("rd/k")
	if contains(rec.Replicas, tk.Replicas[1]) || len(rec.Replicas) != 2 {
		t.Fatalf("replicas %v: want 2, without the dead %s", rec.Replicas, tk.Replicas[1])
	}
	if c.healthyReplicas("rd/k") != 2 {
		t.Fatal("not every recorded replica holds the value")
	}
}

// TestRedirectedWriteCoordinatorDies: the coordinator dies mid-stream. The
// client's write fails; once the ticket times out the master deletes what
// reached the other replica.
func TestRedirectedWriteCoordinatorDies(t *testing.T) {
	c := newTestClusterWith(t, 3, 2, func(c *testCluster) { c.mcfg.RedirectedWriteTimeout = time.Second })
	const size = 8 << 20
	loc := c.ticketURL(t, "PUT", "cd/k", size)
	tk := c.ticketOf(t, "cd/k", loc)
	body, done := startSlowPut(loc, size)
	c.killVolume(c.volumeIndex(tk.Replicas[0]))
	close(body.release)
	if st := <-done; st >= 200 && st < 300 {
		t.Fatalf("PUT with its coordinator killed: got %d, want a failure", st)
	}
	if st, _ := c.get("cd/k"); st != 404 {
		t.Fatalf("GET: got %d, want 404", st)
	}
	other := c.volumeIndex(tk.Replicas[1])
	waitFor(t, 15*time.Second, "the ticket abandoned and the other replica's copy deleted", func() bool {
		n := 0
		_ = c.master.cat.tickets(func(uint64, []byte, writeIntent) bool { n++; return true })
		return n == 0 && c.staleCopies(other) == 0
	})
}
