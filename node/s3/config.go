package s3

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/kvdb/kvdb/node"
)

// Config configures a gateway.
type Config struct {
	// Addr is the listen address for S3 clients. Default ":9000".
	Addr string
	// Master returns the HTTP address (HOST:PORT) of the master to talk to;
	// it is asked again for every request, so it may follow a master that
	// moves (a volume finds it by gossip). An error is answered 503
	// ServiceUnavailable. Required.
	Master func() (string, error)
	// Keys are the API keys file's keys. Those with S3 set are the
	// credentials S3 requests must be signed with; the gateway calls the
	// master with the bearer token of the key that signed the request, so a
	// read-only key stays read-only. With no key at all the gateway is open
	// (kvdb dev's default): any credentials, or none, are accepted and no
	// signature is checked, though payload hashes and checksums still are.
	// With keys but none for S3, every S3 request is refused.
	Keys []node.APIKey
	// Region is the region reported by GetBucketLocation and in
	// x-amz-bucket-region. Requests signed for any region are accepted (the
	// signature covers the region the client chose). Default "us-east-1".
	Region string
	// Domain, when set, enables virtual-hosted-style requests: a Host of
	// "BUCKET.Domain" names the bucket. Path-style requests always work.
	Domain string
	// MaxObjectSize is the largest object a PutObject or CopyObject takes,
	// in bytes (EntityTooLarge above it); the master's own maximum value
	// size applies as well. Default 5 GiB, S3's single-PUT limit.
	MaxObjectSize int64
	// IdleTimeout cuts a connection, of a client or to a node, that moves
	// no byte for this long. Default 60 s.
	IdleTimeout time.Duration
	// MaxClockSkew is how far a signed request's date may be from the
	// gateway's clock (RequestTimeTooSkewed). Default 15 minutes, as S3.
	MaxClockSkew time.Duration
	// Logger receives the gateway's logs. Default: discard.
	Logger *slog.Logger
	// Local, when the gateway runs beside a volume (kvdb volume --s3), is
	// that volume: the master is asked to read from it first, and a copy
	// it holds goes to the client straight from its disk (sendfile), as
	// the native API's reads do, rather than over loopback HTTP.
	Local LocalVolume

	// now is the wall clock (time.Now); tests set it.
	now func() time.Time
}

// LocalVolume is the volume a gateway runs beside (*node.Volume).
type LocalVolume interface {
	// Name is the volume's name in the cluster.
	Name() string
	// OpenCopy opens the volume's copy of version of key, positioned at
	// the value's first byte, and reports the value's size. The caller
	// closes the file.
	OpenCopy(key []byte, version uint64) (*os.File, int64, error)
	// OpenParts streams length bytes from offset start of version of the
	// multipart value key: the parts the volume holds from its disk, the
	// others from their volumes.
	OpenParts(key []byte, version uint64, start, length int64) (io.ReadCloser, error)
}

// Validate reports whether the configuration can be used.
func (c Config) Validate() error {
	if c.Master == nil {
		return errors.New("s3: no master")
	}
	if c.MaxObjectSize < 0 {
		return errors.New("s3: max object size must not be negative")
	}
	if c.Domain != "" && (strings.HasPrefix(c.Domain, ".") || strings.Contains(c.Domain, ":")) {
		return fmt.Errorf("s3: domain %q: want a DNS name without a port", c.Domain)
	}
	seen := map[string]bool{}
	for _, k := range c.Keys {
		if k.S3 == nil {
			continue
		}
		if seen[k.S3.AccessKeyID] {
			return fmt.Errorf("s3: access key id %q is listed twice", k.S3.AccessKeyID)
		}
		seen[k.S3.AccessKeyID] = true
	}
	return nil
}

func (c Config) withDefaults() Config {
	if c.Addr == "" {
		c.Addr = ":9000"
	}
	if c.Region == "" {
		c.Region = "us-east-1"
	}
	if c.MaxObjectSize == 0 {
		c.MaxObjectSize = 5 << 30
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.MaxClockSkew <= 0 {
		c.MaxClockSkew = 15 * time.Minute
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	return c
}
