package node

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRequestLog checks that every request is logged, as one JSON line
// with method, path and status, at debug level only.
func TestRequestLog(t *testing.T) {
	for _, level := range []slog.Level{slog.LevelDebug, slog.LevelInfo} {
		var buf syncBuffer
		log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: level}))
		srv, err := startHTTP("127.0.0.1:0", func(ctx *fasthttp.RequestCtx) {
			ctx.SetStatusCode(fasthttp.StatusTeapot)
		}, nil, time.Minute, log)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get("http://" + srv.addr() + "/some/key")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		srv.shutdown(time.Second)
		var lines []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
			var rec map[string]any
			if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "request" {
				lines = append(lines, rec)
			}
		}
		if level == slog.LevelInfo {
			if len(lines) != 0 {
				t.Errorf("at info: %d request lines, want none", len(lines))
			}
			continue
		}
		if len(lines) != 1 {
			t.Fatalf("at debug: %d request lines, want 1:\n%s", len(lines), buf.String())
		}
		rec := lines[0]
		if rec["method"] != "GET" || rec["path"] != "/some/key" || rec["status"] != float64(418) {
			t.Errorf("request line %v", rec)
		}
	}
}
