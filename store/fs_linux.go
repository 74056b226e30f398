package store

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// fallocate reserves n bytes for f so that a full disk shows up before the
// body is read. Filesystems without fallocate are tolerated: the writes then
// find ENOSPC themselves.
func fallocate(f *os.File, n int64) error {
	if n <= 0 {
		return nil
	}
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var ferr error
	if err := sc.Control(func(fd uintptr) {
		for {
			ferr = unix.Fallocate(int(fd), 0, 0, n)
			if ferr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if errors.Is(ferr, unix.EOPNOTSUPP) || errors.Is(ferr, unix.ENOSYS) {
		return nil
	}
	if ferr != nil {
		return os.NewSyscallError("fallocate", ferr)
	}
	return nil
}

// fsSpace returns the bytes available to unprivileged users and the size of
// the filesystem holding path.
func fsSpace(path string) (free, total int64, err error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", path, err)
	}
	bs := int64(st.Bsize) // its type differs between architectures
	return int64(st.Bavail) * bs, int64(st.Blocks) * bs, nil
}

// fsID identifies the filesystem holding path among those mounted on this
// host: its device number, which every directory of one mount shares. 0
// when it cannot be read.
func fsID(path string) uint64 {
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		return 0
	}
	return uint64(st.Dev) // its type differs between architectures
}

// noSpace wraps err with ErrNoSpace if the filesystem is full or a quota is
// exhausted, keeping err in the chain.
func noSpace(err error) error {
	if err != nil && !errors.Is(err, ErrNoSpace) &&
		(errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)) {
		return fmt.Errorf("%w: %w", ErrNoSpace, err)
	}
	return err
}

// lockDir takes an exclusive lock on DIR/LOCK, held until the returned file
// is closed, so that two Stores (in one process or two) never share a
// directory: a second Open would otherwise empty the first one's DIR/tmp
// under its writes. flock locks belong to the open file, so they also
// exclude a second Open in the same process.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "LOCK"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, noSpace(err)
	}
	sc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, err
	}
	var lerr error
	if err := sc.Control(func(fd uintptr) {
		for {
			lerr = unix.Flock(int(fd), unix.LOCK_EX|unix.LOCK_NB)
			if lerr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		f.Close()
		return nil, err
	}
	if lerr == unix.EWOULDBLOCK {
		f.Close()
		return nil, fmt.Errorf("%s is in use by another store", dir)
	}
	if lerr != nil {
		f.Close()
		return nil, os.NewSyscallError("flock", lerr)
	}
	return f, nil
}

// dropCache asks the kernel to drop f's clean pages from the page cache, so
// that the next read comes from the disk. Best effort: a filesystem without
// fadvise (tmpfs, some network filesystems) just serves the cache.
func dropCache(f *os.File) {
	sc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = sc.Control(func(fd uintptr) {
		_ = unix.Fadvise(int(fd), 0, 0, unix.FADV_DONTNEED)
	})
}

// startWriteback asks the kernel to start writing [off, off+n) of f to disk
// now, without waiting: the final fsync then has little left to flush, and
// a large value does not pile up gigabytes of dirty pages first.
func startWriteback(f *os.File, off, n int64) {
	sc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = sc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), off, n, unix.SYNC_FILE_RANGE_WRITE)
	})
}

// writevAt writes the buffers one after another at off, with as few
// pwritev calls as the kernel allows.
func writevAt(f *os.File, iov [][]byte, off int64) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var werr error
	if err := sc.Write(func(fd uintptr) bool {
		for len(iov) > 0 {
			n, err := unix.Pwritev(int(fd), iov, off)
			if err == unix.EINTR {
				continue
			}
			if err != nil {
				werr = os.NewSyscallError("pwritev", err)
				return true
			}
			if n == 0 {
				werr = io.ErrShortWrite
				return true
			}
			off += int64(n)
			for n > 0 {
				if n >= len(iov[0]) {
					n -= len(iov[0])
					iov = iov[1:]
				} else {
					iov[0] = iov[0][n:]
					n = 0
				}
			}
		}
		return true
	}); err != nil {
		return err
	}
	return werr
}

// fdatasync flushes f's data, and its size if it changed, to the disk.
func fdatasync(f *os.File) error {
	sc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := sc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if serr != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return err
	}
	if serr != nil {
		return os.NewSyscallError("fdatasync", serr)
	}
	return nil
}

// dropRange asks the kernel to drop the clean cached pages of [off,
// off+n) of f, like dropCache for a part of a file.
func dropRange(f *os.File, off, n int64) {
	sc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = sc.Control(func(fd uintptr) {
		_ = unix.Fadvise(int(fd), off, n, unix.FADV_DONTNEED)
	})
}
