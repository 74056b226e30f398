package main

import (
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestWriteToPausedVolume SIGSTOPs a volume that is receiving a PUT. The
// master's probes find it unreachable within a second or two; the write
// in flight to it is then cut and its replica replaced by a copy to the
// spare volume, so the PUT succeeds within seconds, not at the 60 s idle
// timeout (before the fix it hung until the volume resumed or the client
// gave up).
func TestWriteToPausedVolume(t *testing.T) {
	c := startProcCluster(t, 3, 2)
	const key, size = "paused/k", 64 << 20
	body := &throttledStream{crashStream: newCrashStream(7, size), pauseAt: 4 << 20,
		reached: make(chan struct{}), full: make(chan struct{})}
	type answer struct {
		status int
		err    error
		at     time.Time
	}
	done := make(chan answer, 1)
	go func() {
		req, _ := http.NewRequest("PUT", c.url+"/"+key, body)
		req.ContentLength = size
		resp, err := (&http.Client{Timeout: 50 * time.Second}).Do(req)
		a := answer{err: err, at: time.Now()}
		if err == nil {
			a.status = resp.StatusCode
			resp.Body.Close()
		}
		done <- a
	}()
	<-body.reached
	// Pause one of the volumes the value is streaming to.
	var paused *proc
	deadline := time.Now().Add(10 * time.Second)
	for paused == nil && time.Now().Before(deadline) {
		for _, v := range c.vols {
			if tmp, _, _ := crashFiles(t, crashDir(t, v), key); len(tmp) > 0 {
				paused = v
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	if paused == nil {
		t.Fatal("no volume is receiving the value")
	}
	if err := paused.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = paused.cmd.Process.Signal(syscall.SIGCONT) })
	stopped := time.Now()
	close(body.full)
	a := <-done
	if a.err != nil || a.status != 201 {
		t.Fatalf("PUT with a replica paused: got %d, %v, want 201", a.status, a.err)
	}
	took := a.at.Sub(stopped)
	t.Logf("PUT answered %v after the volume was paused", took.Round(time.Millisecond))
	if took > 30*time.Second {
		t.Errorf("the PUT waited %v for the paused volume; the probes should have failed it over", took)
	}
	st, n, sum := crashGetSum(t, &http.Client{Timeout: time.Minute}, c.url+"/"+key)
	if st != 200 || n != size || sum != crashSum(7, size) {
		t.Fatalf("GET: got %d, %d bytes, sum %x; want 200 and the value whole", st, n, sum)
	}
}

// TestMasterRestartGap SIGKILLs the master and starts it again: it dials
// the volumes it saw last (DIR/peers) at once, so writes work again within
// a second or two (before the fix, about 16 s: "0 live volumes" until the
// volumes happened to re-dial it).
func TestMasterRestartGap(t *testing.T) {
	c := startProcCluster(t, 3, 2)
	hc := &http.Client{Timeout: 10 * time.Second}
	put := func() int {
		req, _ := http.NewRequest("PUT", c.url+"/gap/k", strings.NewReader("v"))
		resp, err := hc.Do(req)
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := put(); st != 201 {
		t.Fatalf("PUT: got %d", st)
	}
	crashKill(t, c.master)
	killed := time.Now()
	c.restartMaster(t)
	for put() != 200 {
		if time.Since(killed) > 30*time.Second {
			t.Fatal("no write succeeded 30 s after the master restarted")
		}
		time.Sleep(20 * time.Millisecond)
	}
	gap := time.Since(killed)
	t.Logf("first write acknowledged %v after the master was killed", gap.Round(time.Millisecond))
	if gap > 8*time.Second {
		t.Errorf("writes failed for %v after a master restart; the master should dial the volumes it knew", gap)
	}
}
