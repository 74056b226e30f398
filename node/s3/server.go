package s3

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/kvdb/kvdb/node"
)

// Server is an S3 gateway: it listens for S3 clients and serves them from
// a kvdb cluster through its master.
type Server struct {
	cfg Config
	log *slog.Logger
	// creds are the S3 keys by access key ID; open is true when the keys
	// file is absent (no key of any kind): then nothing is signed-checked.
	creds  map[string]*credential
	open   bool
	client *fasthttp.Client
	// std asks the master for a redirected write (Expect: 100-continue,
	// which fasthttp's client does not wait on; net/http does).
	std  *http.Client
	srv  *fasthttp.Server
	ln   node.TrackedListener
	done chan struct{}
	// idPrefix and seq make request IDs: unique per process and request.
	idPrefix  string
	seq       atomic.Uint64
	closeOnce sync.Once
	closing   atomic.Bool
}

// New validates cfg, listens on cfg.Addr and starts serving.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	s := &Server{
		cfg:   cfg,
		log:   cfg.Logger.With("component", "s3"),
		creds: map[string]*credential{},
		open:  len(cfg.Keys) == 0,
		done:  make(chan struct{}),
	}
	for _, k := range cfg.Keys {
		if k.S3 != nil {
			s.creds[k.S3.AccessKeyID] = &credential{id: k.S3.AccessKeyID, secret: k.S3.SecretAccessKey, readOnly: k.ReadOnly, token: node.S3Token(k.S3.AccessKeyID, k.S3.SecretAccessKey)}
		}
	}
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	s.idPrefix = strings.ToUpper(hex.EncodeToString(rb[:]))
	s.client = node.NewPeerClient(cfg.IdleTimeout)
	s.std = newExpectClient(cfg.IdleTimeout)
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("s3: listen %s: %w", cfg.Addr, err)
	}
	s.ln = node.NewTrackedListener(ln, cfg.IdleTimeout, s.log)
	s.srv = &fasthttp.Server{
		Handler:       s.handle,
		ExpectHandler: s.expect,
		Name:          "kvdb",
		// Bodies stream (fasthttp would otherwise buffer them whole); with
		// streaming on, MaxRequestBodySize is only the prefetch.
		StreamRequestBody:            true,
		MaxRequestBodySize:           64 << 10,
		ReadBufferSize:               16 << 10,
		WriteBufferSize:              64 << 10,
		IdleTimeout:                  cfg.IdleTimeout,
		DisablePreParseMultipartForm: true,
		NoDefaultContentType:         true,
		CloseOnShutdown:              true,
		Logger:                       fasthttpLogger{s.log},
	}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(s.ln); err != nil && !s.closing.Load() {
			s.log.Error("s3 server stopped", "err", err)
		}
	}()
	mode := "signed (S3 keys from the API keys file)"
	if s.open {
		mode = "open: no API keys file, any credentials accepted"
	}
	s.log.Info("s3 gateway started", "addr", s.Addr(), "auth", mode, "keys", len(s.creds))
	return s, nil
}

// Addr is the address the gateway listens on.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Close stops the gateway: running requests get up to 10 s to finish, the
// rest are cut. Safe to call more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.closing.Store(true)
		_ = s.srv.ShutdownWithContext(ctx)
		// Also when Serve had not started yet (fasthttp's Shutdown then
		// leaves it to run on): it finds the listener closed.
		s.ln.CloseAll()
		<-s.done
		s.client.CloseIdleConnections()
		s.std.CloseIdleConnections()
		s.log.Info("s3 gateway stopped")
	})
	return nil
}

type fasthttpLogger struct{ log *slog.Logger }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.log.Debug("fasthttp", "msg", fmt.Sprintf(format, args...))
}

// request is one S3 request being served.
type request struct {
	ctx    *fasthttp.RequestCtx
	rid    string
	id     identity
	bucket string
	key    string
}

func (s *Server) requestID() string {
	return s.idPrefix + strconv.FormatUint(s.seq.Add(1), 16)
}

func (s *Server) handle(ctx *fasthttp.RequestCtx) {
	rid := s.requestID()
	h := &ctx.Response.Header
	h.Set("X-Amz-Request-Id", rid)
	h.Set("X-Amz-Id-2", rid)
	start := time.Now()
	r := &request{ctx: ctx, rid: rid}
	if aerr := s.serve(r); aerr != nil {
		writeError(ctx, aerr, string(ctx.URI().PathOriginal()), rid)
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("request", "method", string(ctx.Method()), "uri", string(ctx.RequestURI()),
			"status", ctx.Response.StatusCode(), "ms", float64(time.Since(start).Microseconds())/1000, "request_id", rid)
	}
}

// expect answers Expect: 100-continue: a request the gateway would refuse
// from its headers (signature, access, size) gets the S3 error before the
// client sends its body. (fasthttp's doc asks ExpectHandler not to modify
// the response; it then writes ctx's response as it is, status and all,
// which is what lets the XML error reach the client.)
func (s *Server) expect(ctx *fasthttp.RequestCtx) int {
	r := &request{ctx: ctx, rid: s.requestID()}
	aerr := s.admit(r)
	if aerr == nil && ctx.IsPut() && len(ctx.Request.Header.Peek("X-Amz-Copy-Source")) == 0 {
		if n := ctx.Request.Header.ContentLength(); int64(n) > s.cfg.MaxObjectSize+s.cfg.MaxObjectSize/8 {
			aerr = errTooLarge
		}
	}
	if aerr == nil {
		return fasthttp.StatusContinue
	}
	ctx.Response.Header.Set("X-Amz-Request-Id", r.rid)
	writeError(ctx, aerr, string(ctx.URI().PathOriginal()), r.rid)
	return aerr.status
}

// admit parses the path and authenticates the request: what can be
// decided from the headers alone.
func (s *Server) admit(r *request) *apiError {
	ctx := r.ctx
	var aerr *apiError
	if r.bucket, r.key, aerr = s.route(ctx); aerr != nil {
		return aerr
	}
	if r.id, aerr = s.authenticate(ctx); aerr != nil {
		return aerr
	}
	read := ctx.IsGet() || ctx.IsHead() || ctx.IsOptions()
	if !read && r.id.readOnly() {
		return errAccessDenied
	}
	return nil
}

func (s *Server) serve(r *request) *apiError {
	ctx := r.ctx
	switch string(ctx.URI().PathOriginal()) {
	case "/_kvdb/live", "/_kvdb/ready":
		// Probes for load balancers; no bucket name can start with '_'.
		ctx.SetStatusCode(fasthttp.StatusOK)
		ctx.SetBodyString("ok\n")
		return nil
	}
	if aerr := s.admit(r); aerr != nil {
		return aerr
	}
	switch {
	case r.bucket == "":
		if ctx.IsGet() || ctx.IsHead() {
			return s.listBuckets(r)
		}
		return errMethodNotAllowed
	case r.key == "":
		return s.serveBucket(r)
	}
	return s.serveObject(r)
}

// hostBucket returns the bucket a virtual-hosted-style request names in
// its Host ("BUCKET.Domain").
func (s *Server) hostBucket(ctx *fasthttp.RequestCtx) (string, bool) {
	if s.cfg.Domain == "" {
		return "", false
	}
	host := string(ctx.Request.Header.Host())
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	b, ok := strings.CutSuffix(strings.ToLower(host), "."+s.cfg.Domain)
	return b, ok && b != ""
}

// route splits the request's path into bucket and key (both decoded).
func (s *Server) route(ctx *fasthttp.RequestCtx) (bucket, key string, aerr *apiError) {
	raw := string(ctx.URI().PathOriginal())
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		raw = raw[:i]
	}
	raw = strings.TrimPrefix(raw, "/")
	if b, ok := s.hostBucket(ctx); ok {
		bucket = b
	} else {
		var bucketRaw string
		bucketRaw, raw, _ = strings.Cut(raw, "/")
		var err error
		if bucket, err = url.PathUnescape(bucketRaw); err != nil {
			return "", "", newError(fasthttp.StatusBadRequest, "InvalidURI", "Couldn't parse the specified URI.")
		}
	}
	key, err := url.PathUnescape(raw)
	if err != nil {
		return "", "", newError(fasthttp.StatusBadRequest, "InvalidURI", "Couldn't parse the specified URI.")
	}
	return bucket, key, nil
}

// kvdbKey is the kvdb key of an object, checked against kvdb's key rules.
func kvdbKey(bucket, key string) (string, *apiError) {
	if node.ValidateBucketName(bucket) != nil {
		return "", errNoSuchBucket
	}
	k := bucket + "/" + key
	switch err := node.ValidateKey([]byte(k)); {
	case err == nil:
		return k, nil
	case err == node.ErrKeyTooLong:
		return "", errKeyTooLong
	default:
		return "", errorf(fasthttp.StatusBadRequest, "InvalidArgument", "kvdb cannot store this key: %v", err)
	}
}
