package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Baseline row names.
const (
	RowWriteFsync  = "write+fsync"
	RowSendfileGet = "sendfile get"
)

// RunBaseline measures this machine's ceilings for cfg's workload, so that
// a run's figures can be read as fractions of them:
//
//   - "write+fsync", the ceiling for PUT: the same values (sizes,
//     generator, concurrency, count or duration) written to files under
//     dir, each to a temporary file, fsynced, closed and renamed, as a
//     store does it.
//   - "sendfile get", the ceiling for GET: a plain net/http file server on
//     127.0.0.1 serves those files by sendfile, and the same HTTP client
//     and workers GET them (verifying them when cfg.Verify).
//
// dir should be on the disk the server under test writes to; it is created
// if missing and removed again if it was. The files are always removed.
// cfg.URL is not used.
func RunBaseline(ctx context.Context, cfg Config, dir string) ([]OpStats, error) {
	cfg = cfg.withDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if dir == "" {
		dir = os.TempDir()
	}
	created, err := mkdirs(dir)
	defer func() {
		// Deepest first; os.Remove leaves a directory someone filled.
		for _, d := range created {
			_ = os.Remove(d)
		}
	}()
	if err != nil {
		return nil, fmt.Errorf("bench: baseline: %w", err)
	}
	work, err := os.MkdirTemp(dir, "kvdb-bench-")
	if err != nil {
		return nil, fmt.Errorf("bench: baseline: %w", err)
	}
	defer os.RemoveAll(work)

	client := newClient(cfg.Concurrency, cfg.Timeout)
	defer client.CloseIdleConnections()
	prog := &progress{w: cfg.Progress}
	ws := make([]*worker, cfg.Concurrency)
	for i := range ws {
		// Keys are bare file names: "<worker>-<n>".
		ws[i] = newWorker(ctx, &cfg, client, prog, i, nil, work, "")
	}
	defer func() {
		for _, w := range ws {
			w.release()
		}
	}()

	b := newBudget(ctx, cfg.Count, cfg.Duration)
	out := runPhase(RowWriteFsync, prog, ws, nil, func(w *worker) {
		for b.take() {
			k := w.newKey()
			if w.do(RowWriteFsync, opWriteFile, k) == nil {
				w.live.add(k)
			}
		}
	})
	if err := ctx.Err(); err != nil {
		return out, err
	}

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return out, fmt.Errorf("bench: baseline: %w", err)
	}
	srv := &http.Server{Handler: fileServer(work), ReadHeaderTimeout: cfg.Timeout, IdleTimeout: cfg.Timeout}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln)
	}()
	defer func() {
		_ = srv.Close()
		<-served
	}()
	for _, w := range ws {
		w.base = "http://" + ln.Addr().String()
	}
	b = newBudget(ctx, cfg.Count, cfg.Duration)
	out = append(out, runPhase(RowSendfileGet, prog, ws, nil, func(w *worker) {
		for i := 0; w.live.len() > 0 && b.take(); i++ {
			w.do(RowSendfileGet, OpGet, w.live.nums[i%w.live.len()])
		}
	})...)
	return out, ctx.Err()
}

// mkdirs creates dir and its missing parents, and returns those it
// created, deepest first.
func mkdirs(dir string) ([]string, error) {
	var missing []string
	for d := filepath.Clean(dir); ; {
		if _, err := os.Stat(d); !errors.Is(err, fs.ErrNotExist) {
			break
		}
		missing = append(missing, d)
		parent := filepath.Dir(d)
		if parent == d {
			break
		}
		d = parent
	}
	return missing, os.MkdirAll(dir, 0o755)
}

// fileServer serves the files of dir by name, the body going out by
// sendfile: io.Copy from an *os.File to net/http's ResponseWriter uses it
// on Linux when the length is known.
func fileServer(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name := strings.TrimPrefix(r.URL.Path, "/")
		if name == "" || strings.ContainsAny(name, `/\`) || strings.HasPrefix(name, ".") {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		h := w.Header()
		h.Set("Content-Type", "application/octet-stream")
		h.Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		h.Set("Last-Modified", fi.ModTime().UTC().Format(http.TimeFormat))
		if r.Method == http.MethodHead {
			return
		}
		_, _ = io.Copy(w, f)
	})
}
