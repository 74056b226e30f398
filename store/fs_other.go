//go:build !linux

package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// kvdb volumes run on Linux; elsewhere the store works without fallocate and
// without filesystem statistics (Stats relies on Capacity).

func fallocate(*os.File, int64) error { return nil }

func startWriteback(*os.File, int64, int64) {}

func fsSpace(string) (free, total int64, err error) {
	return 0, 0, errors.New("statfs: not supported on this platform")
}

func fsID(string) uint64 { return 0 }

func noSpace(err error) error {
	if err != nil && !errors.Is(err, ErrNoSpace) && errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// lockDir opens DIR/LOCK without locking it: directory locking is only
// implemented on Linux (goleveldb's own lock on the index still applies).
func lockDir(dir string) (*os.File, error) {
	return os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
}

func dropCache(*os.File) {}

func dropRange(*os.File, int64, int64) {}

func writevAt(f *os.File, iov [][]byte, off int64) error {
	for _, b := range iov {
		if _, err := f.WriteAt(b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

func fdatasync(f *os.File) error { return f.Sync() }
