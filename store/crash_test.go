package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Crash tests: a child process (this test binary, re-executed) writes and
// deletes packed and file values, and compacts, while reporting on stdout
// each operation before it starts ("p"/"d") and once it is acknowledged
// ("P"/"D"; a DeleteNoSync, "L", once a Sync begun after it returned). The parent SIGKILLs it at a random moment, reopens the store
// and checks that every acknowledged value is there whole, every
// acknowledged delete stuck, and an operation in flight left the value
// either old-whole or new-whole. Several kills hit the same directory.

const (
	envCrashDir  = "KVDB_STORE_CRASH_DIR"
	envCrashMode = "KVDB_STORE_CRASH_MODE"
	envCrashRun  = "KVDB_STORE_CRASH_RUN"
)

// crashCfg packs values up to 4 KiB, or in mode "large" up to 256 KiB
// (staged in the large buffers, committed without zeros ahead).
func crashCfg(dir, mode string) Config {
	if mode == "large" {
		return Config{Dir: dir, SmallValueMax: 256 << 10, SegmentSize: 4 << 20, CompactRate: -1}
	}
	return Config{Dir: dir, SmallValueMax: 4 << 10, SegmentSize: 1 << 20, CompactRate: -1}
}

func crashValue(key string, size int) []byte {
	h := fnv.New64a()
	h.Write([]byte(key))
	return value(int(h.Sum64()>>2), size)
}

// crashChild is the child's side; it never returns.
func crashChild(dir, mode, run string) {
	s, err := Open(crashCfg(dir, mode))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	var outMu sync.Mutex
	say := func(format string, a ...any) {
		outMu.Lock()
		fmt.Fprintf(os.Stdout, format+"\n", a...)
		outMu.Unlock()
	}
	fail := func(what string, err error) {
		fmt.Fprintln(os.Stderr, what, err)
		os.Exit(2)
	}
	say("O") // open: the kill timer starts
	ctx := context.Background()
	if mode == "compact" {
		// Fill, delete most, then compact slowly while writing on.
		var keys []string
		for i := range 1500 {
			k := fmt.Sprintf("r%s/f%d", run, i)
			size := 500 + i%3000
			say("p %s %d", k, size)
			if _, err := s.Put([]byte(k), 1, bytes.NewReader(crashValue(k, size)), int64(size)); err != nil {
				fail("put", err)
			}
			say("P %s %d", k, size)
			keys = append(keys, k)
		}
		for i, k := range keys {
			if i%5 != 0 {
				say("d %s", k)
				if err := s.Delete([]byte(k), 1); err != nil {
					fail("delete", err)
				}
				say("D %s", k)
			}
		}
		say("C")
		// Slow or fast, so that kills land in copies, switches and removals.
		rate := []int64{4 << 20, 16 << 20, 64 << 20}[int(run[0]-'0')%3]
		go func() {
			for {
				if err := s.compact(ctx, newLimiter(rate, realClock{})); err != nil {
					fail("compact", err)
				}
				say("K") // a pass is over
				time.Sleep(5 * time.Millisecond)
			}
		}()
	} else {
		go func() {
			for {
				if err := s.compact(ctx, nil); err != nil {
					fail("compact", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
		// Lazy deletes ("L") count as acknowledged once a Sync that began
		// after them has returned ("s" ... "S").
		go func() {
			for {
				time.Sleep(time.Duration(rand.IntN(20)) * time.Millisecond)
				say("s")
				if err := s.Sync(); err != nil {
					fail("sync", err)
				}
				say("S")
			}
		}()
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(w), uint64(len(run))))
			var mine []string
			for i := 0; ; i++ {
				if len(mine) > 0 && rnd.IntN(2) == 0 {
					j := rnd.IntN(len(mine))
					k := mine[j]
					mine = append(mine[:j], mine[j+1:]...)
					say("d %s", k)
					if rnd.IntN(2) == 0 {
						if err := s.DeleteNoSync([]byte(k), 1); err != nil {
							fail("delete", err)
						}
						say("L %s", k)
						continue
					}
					if err := s.Delete([]byte(k), 1); err != nil {
						fail("delete", err)
					}
					say("D %s", k)
					continue
				}
				k := fmt.Sprintf("r%s/w%d/%d", run, w, i)
				size := rnd.IntN(6000) // packed up to 4 KiB, files above
				if mode == "large" {
					size = rnd.IntN(400 << 10) // packed up to 256 KiB
				}
				say("p %s %d", k, size)
				if _, err := s.Put([]byte(k), 1, bytes.NewReader(crashValue(k, size)), int64(size)); err != nil {
					fail("put", err)
				}
				say("P %s %d", k, size)
				mine = append(mine, k)
			}
		})
	}
	wg.Wait()
	os.Exit(0)
}

type crashKey struct {
	size           int
	acked, deleted bool // put acknowledged; delete acknowledged
	putting        bool // put issued, not acknowledged
	deleting       bool // delete issued, not acknowledged
}

func TestKilledWhilePacking(t *testing.T)      { testKilled(t, "mixed", 4) }
func TestKilledDuringCompaction(t *testing.T)  { testKilled(t, "compact", 4) }
func TestKilledWhilePackingLarge(t *testing.T) { testKilled(t, "large", 4) }

func testKilled(t *testing.T, mode string, kills int) {
	if dir := os.Getenv(envCrashDir); dir != "" {
		if os.Getenv(envCrashMode) == mode {
			crashChild(dir, mode, os.Getenv(envCrashRun))
		}
		t.Skip("child of another crash test")
	}
	if testing.Short() {
		t.Skip("kills child processes")
	}
	dir := t.TempDir()
	model := make(map[string]*crashKey)
	for run := range kills {
		cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.v=false")
		cmd.Env = append(os.Environ(), envCrashDir+"="+dir, envCrashMode+"="+mode, envCrashRun+"="+strconv.Itoa(run))
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(50+rand.IntN(400)) * time.Millisecond
		timer := time.AfterFunc(time.Hour, func() { cmd.Process.Signal(syscall.SIGKILL) })
		sc := bufio.NewScanner(out)
		lines, passes := 0, 0
		var lazy, syncing []string // lazily deleted; covered by the Sync in progress
		for sc.Scan() {
			lines++
			f := strings.Fields(sc.Text())
			switch f[0] {
			case "K":
				passes++
				continue
			case "O", "C": // the store is open / compaction starts: kill a while after
				if f[0] == "C" || mode != "compact" {
					timer.Reset(delay)
				}
				continue
			case "p", "P":
				size, _ := strconv.Atoi(f[2])
				k := model[f[1]]
				if k == nil {
					k = &crashKey{size: size}
					model[f[1]] = k
				}
				k.putting = f[0] == "p"
				k.acked = k.acked || f[0] == "P"
			case "d", "D":
				k := model[f[1]]
				k.deleting = f[0] == "d"
				k.deleted = k.deleted || f[0] == "D"
			case "L": // gone from the index, maybe not yet durably: still "deleting"
				lazy = append(lazy, f[1])
			case "s":
				syncing, lazy = append(syncing, lazy...), nil
			case "S":
				for _, key := range syncing {
					k := model[key]
					k.deleting, k.deleted = false, true
				}
				syncing = nil
			}
		}
		err = cmd.Wait()
		timer.Stop()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("run %d: child: got %v, want killed by SIGKILL; stderr:\n%s", run, err, stderr.String())
		}

		var log syncBuffer
		cfg := crashCfg(dir, mode)
		cfg.Logger = testLogger(&log)
		s, err := Open(cfg)
		if err != nil {
			t.Fatalf("run %d: reopen: %v", run, err)
		}
		if strings.Contains(log.String(), "rebuild") {
			t.Errorf("run %d: reopen after a kill rebuilt the index:\n%s", run, log.String())
		}
		checkCrashModel(t, s, model, fmt.Sprintf("run %d (%d lines, killed after %v)", run, lines, delay), false)
		// Rebuilding from the segments and files must agree (an operation
		// in flight may land differently: a put durable in the log but not
		// indexed yet is indexed by Rebuild, a delete whose tombstone is
		// durable is applied by it).
		if err := s.Rebuild(); err != nil {
			t.Fatal(err)
		}
		checkCrashModel(t, s, model, fmt.Sprintf("run %d after Rebuild", run), true)
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if t.Failed() {
			return
		}
		t.Logf("run %d: %d lines, killed %v in (after %d compaction passes); %d keys known", run, lines, delay, passes, len(model))
	}
}

// checkCrashModel checks s against what the child acknowledged and, with
// settle, settles the operations that were in flight to what s shows.
func checkCrashModel(t *testing.T, s *Store, model map[string]*crashKey, when string, settle bool) {
	t.Helper()
	bad := 0
	for key, k := range model {
		m, err := s.Get([]byte(key), 1)
		held := err == nil
		if err != nil && !errors.Is(err, ErrNotFound) {
			t.Fatalf("%s: Get %s: %v", when, key, err)
		}
		mustHold := k.acked && !k.deleted && !k.deleting
		mayHold := (k.acked || k.putting) && !k.deleted
		switch {
		case mustHold && !held:
			t.Errorf("%s: acknowledged %s (%d bytes) is gone", when, key, k.size)
			bad++
		case held && !mayHold:
			t.Errorf("%s: %s is held, deleted: %v, acked: %v", when, key, k.deleted, k.acked)
			bad++
		case held:
			if got, _ := readValue(t, s, key, 1); !bytes.Equal(got, crashValue(key, k.size)) || m.Size != int64(k.size) {
				t.Errorf("%s: %s is not whole: %d bytes, want %d", when, key, len(got), k.size)
				bad++
			}
			if err := s.Verify([]byte(key), 1); err != nil {
				t.Errorf("%s: Verify %s: %v", when, key, err)
				bad++
			}
		}
		if bad > 10 {
			t.Fatalf("%s: too many errors", when)
		}
		if !settle {
			continue
		}
		if k.putting {
			k.putting, k.acked = false, held
		}
		if k.deleting {
			k.deleting, k.deleted = false, !held
		}
	}
	if o := collectOrphans(t, s); len(o) > 0 {
		// An unacknowledged put can be durable in the log and not yet
		// indexed, and a deleted blob file can outlive a crash before its
		// removal: Rebuild indexes the one and removes the other.
		for _, x := range o {
			k := model[string(x.Meta.Key)]
			inFlight := k != nil && !k.acked
			deletedFile := k != nil && (k.deleted || k.deleting) && strings.HasPrefix(x.Path, s.blobsDir)
			if settle || x.Meta.Key == nil || !(inFlight || deletedFile) {
				t.Errorf("%s: orphan %s", when, orphanKey(x))
			}
		}
	}
}
