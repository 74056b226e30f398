package main

import (
	"errors"
	"flag"
	"log/slog"
	"net"
	"syscall"

	"github.com/kvdb/kvdb/node"
	"github.com/kvdb/kvdb/node/s3"
)

// s3Flags is --s3 on a server role: also serve the S3-compatible API
// (package node/s3) on that address, as a gateway to the role's master.
type s3Flags struct {
	addr string
	// soft: the address is a default (kvdb dev's), so a busy port is
	// logged and skipped rather than fatal.
	soft bool
	fs   *flag.FlagSet
}

// registerS3 adds --s3 to fs, with def as its default (empty: off), and
// --api-keys-file where the role has none of its own (a volume): the S3
// credentials are its "s3 ID SECRET rw|ro" lines.
func registerS3(fs *flag.FlagSet, def string) *s3Flags {
	f := &s3Flags{fs: fs, soft: def != ""}
	fs.StringVar(&f.addr, "s3", def, "also serve the S3-compatible API on HOST:PORT (empty: off); S3 keys are the \"s3 ACCESS_KEY_ID SECRET rw|ro\" lines of --api-keys-file, and without a keys file any credentials are accepted")
	if fs.Lookup("api-keys-file") == nil {
		fs.String("api-keys-file", "", `API keys file; with --s3, its "s3 ACCESS_KEY_ID SECRET_ACCESS_KEY rw|ro" lines are the S3 credentials`)
	}
	return f
}

// start starts the gateway if --s3 is set; master finds the master's
// HTTP address; local, if not nil, is the volume beside it (see
// s3.Config.Local). The returned stop is never nil.
func (f *s3Flags) start(master func() (string, error), local *node.Volume, log *slog.Logger) (stop func(), err error) {
	stop = func() {}
	if f.addr == "" {
		return stop, nil
	}
	soft := f.soft
	f.fs.Visit(func(fl *flag.Flag) {
		if fl.Name == "s3" {
			soft = false
		}
	})
	keys, err := apiKeys(f.fs.Lookup("api-keys-file").Value.String())
	if err != nil {
		return stop, err
	}
	cfg := s3.Config{Addr: f.addr, Master: master, Keys: keys, Logger: log}
	if local != nil {
		cfg.Local = local
	}
	gw, err := s3.New(cfg)
	if err != nil {
		if soft && errors.Is(err, syscall.EADDRINUSE) {
			log.Error("S3 API not started: its default address is in use; give --s3 HOST:PORT (or --s3 '' to silence this)", "addr", f.addr)
			return stop, nil
		}
		return stop, err
	}
	return func() { _ = gw.Close() }, nil
}

// localMaster is the master of this process, at addr: a wildcard listen
// host is reached on loopback.
func localMaster(addr string) func() (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err == nil {
		if ip := net.ParseIP(host); host == "" || ip != nil && ip.IsUnspecified() {
			addr = net.JoinHostPort("127.0.0.1", port)
		}
	}
	return func() (string, error) { return addr, nil }
}

// devMasters finds the leader among the masters of kvdb dev (the first
// while none leads).
func devMasters(ms []*node.Master) func() (string, error) {
	locals := make([]func() (string, error), len(ms))
	for i, m := range ms {
		locals[i] = localMaster(m.Addr())
	}
	return func() (string, error) {
		for i, m := range ms {
			if m.Leads() {
				return locals[i]()
			}
		}
		return locals[0]()
	}
}

// volumeMaster finds the master through the volume's gossip.
func volumeMaster(v *node.Volume) func() (string, error) {
	return func() (string, error) {
		addr, ok := v.MasterAddr()
		if !ok {
			return "", errors.New("no master known to this volume yet")
		}
		return addr, nil
	}
}
