#!/usr/bin/env python3
"""A file system that forgets what was not fsynced, for power-cut tests (after Jepsen's LazyFS).

    python3 scripts/lazyfs.py BACKING MOUNTPOINT --report FILE

mounts BACKING at MOUNTPOINT through FUSE. Writes and truncations do not reach BACKING: they
stay in this process's memory, page by page, the way they stay in a kernel's page cache, and
reads see them. `fsync`/`fdatasync` of a file writes that file's pages to BACKING and fsyncs
it there. Opening the file `/.lazyfs-cut` on the mount is the power cut: every page not yet
fsynced is thrown away (or, with `--keep-torn SEED`, a seeded random half of them is kept, as
a disk that wrote some of its cache before the power went does), and a JSON line saying how
much was lost is appended to the report file. Unmount and mount again to come back up with an
empty cache, as a machine does after a cut.

Metadata (create, rename, unlink, mkdir, chmod) goes straight to BACKING, so it is durable at
once: a simplification that is kind to the program under test about directories, and strict
about data, which is what the test is for. A file renamed into place without an fsync keeps
its name and loses its content.
"""

import argparse
import errno
import json
import os
import random
import stat
import sys

import mfusepy as fuse

PAGE = 4096
CUT = "/.lazyfs-cut"


class Unsynced:
    """What a file holds beyond its last fsync: its logical size, the pages written since, and
    how much of the backing file is still valid (a truncation hides what lies beyond it)."""

    def __init__(self, size):
        self.size = size
        self.horizon = size
        self.pages = {}

    def truncate(self, length):
        self.size = length
        self.horizon = min(self.horizon, length)
        for index in [i for i in self.pages if i * PAGE >= length]:
            del self.pages[index]
        page = self.pages.get(length // PAGE)
        if page is not None:
            cut = length % PAGE
            page[cut:] = bytes(PAGE - cut)


class LazyFS(fuse.Operations):
    use_ns = True

    def __init__(self, backing, report, keep_torn):
        self.backing = os.path.realpath(backing)
        self.report = report
        self.keep_torn = keep_torn
        self.files = {}  # path -> Unsynced, only for files with writes since their fsync
        self.synced_bytes = 0
        self.cuts = 0

    def real(self, path):
        return os.path.join(self.backing, path.lstrip("/"))

    # What a file reads as, cache first.

    def unsynced(self, path):
        state = self.files.get(path)
        if state is None:
            state = Unsynced(os.stat(self.real(path)).st_size)
            self.files[path] = state
        return state

    def backing_page(self, path, state, index):
        page = bytearray(PAGE)
        start = index * PAGE
        if start < state.horizon:
            with open(self.real(path), "rb") as f:
                f.seek(start)
                data = f.read(min(PAGE, state.horizon - start))
            page[: len(data)] = data
        return page

    def page(self, path, state, index):
        page = state.pages.get(index)
        if page is None:
            page = self.backing_page(path, state, index)
        return page

    # The cut and the sync.

    def cut(self):
        pages = sum(len(s.pages) for s in self.files.values())
        kept = 0
        if self.keep_torn is not None:
            rng = random.Random(self.keep_torn + self.cuts)
            for path, state in self.files.items():
                for index in sorted(state.pages):
                    if rng.random() < 0.5:
                        self.write_pages(path, state, [index], resize=False)
                        kept += 1
        line = {"cut": self.cuts, "files": len(self.files), "pages_unsynced": pages,
                "pages_kept": kept, "pages_lost": pages - kept,
                "synced_bytes_before": self.synced_bytes}
        self.files.clear()
        self.cuts += 1
        with open(self.report, "a") as f:
            f.write(json.dumps(line) + "\n")

    def write_pages(self, path, state, indexes, resize=True):
        fd = os.open(self.real(path), os.O_WRONLY)
        try:
            if resize:
                os.ftruncate(fd, state.horizon)
            for index in indexes:
                start = index * PAGE
                if start >= state.size:
                    continue
                data = bytes(state.pages[index][: min(PAGE, state.size - start)])
                os.pwrite(fd, data, start)
                self.synced_bytes += len(data)
            if resize:
                os.ftruncate(fd, state.size)
            os.fsync(fd)
        finally:
            os.close(fd)

    def sync(self, path):
        state = self.files.pop(path, None)
        if state is not None:
            self.write_pages(path, state, sorted(state.pages))

    # FUSE operations.

    def getattr(self, path, fh=None):
        if path == CUT:
            return {"st_mode": stat.S_IFREG | 0o600, "st_nlink": 1, "st_size": 0}
        try:
            st = os.lstat(self.real(path))
        except FileNotFoundError:
            raise fuse.FuseOSError(errno.ENOENT)
        attrs = {key: getattr(st, key) for key in (
            "st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
            "st_atime_ns", "st_mtime_ns", "st_ctime_ns")}
        for key in ("atime", "mtime", "ctime"):
            attrs[f"st_{key}"] = attrs.pop(f"st_{key}_ns")
        state = self.files.get(path)
        if state is not None:
            attrs["st_size"] = state.size
            attrs["st_blocks"] = (state.size + 511) // 512
        return attrs

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self.real(path))

    def statfs(self, path):
        sv = os.statvfs(self.backing)
        return {key: getattr(sv, key) for key in (
            "f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
            "f_flag", "f_frsize", "f_namemax")}

    def open(self, path, flags):
        if path == CUT:
            self.cut()
            return 0
        if flags & os.O_TRUNC:
            self.truncate(path, 0)
        return 0

    def create(self, path, mode, fi=None):
        if path == CUT:
            self.cut()
            return 0
        fd = os.open(self.real(path), os.O_CREAT | os.O_WRONLY, mode)
        os.close(fd)
        self.files.pop(path, None)
        return 0

    def read(self, path, size, offset, fh):
        state = self.files.get(path)
        if state is None:
            with open(self.real(path), "rb") as f:
                f.seek(offset)
                return f.read(size)
        end = min(offset + size, state.size)
        out = bytearray()
        pos = offset
        while pos < end:
            index, within = divmod(pos, PAGE)
            take = min(PAGE - within, end - pos)
            out += self.page(path, state, index)[within: within + take]
            pos += take
        return bytes(out)

    def write(self, path, data, offset, fh):
        if path == CUT:
            return len(data)
        state = self.unsynced(path)
        pos, done = offset, 0
        while done < len(data):
            index, within = divmod(pos, PAGE)
            take = min(PAGE - within, len(data) - done)
            page = state.pages.get(index)
            if page is None:
                page = self.backing_page(path, state, index)
                state.pages[index] = page
            page[within: within + take] = data[done: done + take]
            pos += take
            done += take
        # Pages between the old end and this write read as zeros, not as stale backing bytes.
        state.size = max(state.size, offset + len(data))
        return len(data)

    def truncate(self, path, length, fh=None):
        if path == CUT:
            return 0
        self.unsynced(path).truncate(length)
        return 0

    def fsync(self, path, datasync, fh):
        self.sync(path)
        return 0

    def fsyncdir(self, path, datasync, fh):
        return 0

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        return 0

    def unlink(self, path):
        os.unlink(self.real(path))
        self.files.pop(path, None)

    def rename(self, old, new):
        os.rename(self.real(old), self.real(new))
        moved = {p: s for p, s in self.files.items() if p == old or p.startswith(old + "/")}
        self.files.pop(new, None)
        for p, s in moved.items():
            del self.files[p]
            self.files[new + p[len(old):]] = s
        return 0

    def mkdir(self, path, mode):
        os.mkdir(self.real(path), mode)

    def rmdir(self, path):
        os.rmdir(self.real(path))

    def chmod(self, path, mode):
        os.chmod(self.real(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self.real(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self.real(path), ns=times)
        return 0

    def access(self, path, amode):
        if path != CUT and not os.path.lexists(self.real(path)):
            raise fuse.FuseOSError(errno.ENOENT)
        return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("backing")
    parser.add_argument("mountpoint")
    parser.add_argument("--report", required=True, help="appends a JSON line per cut")
    parser.add_argument("--keep-torn", type=int, default=None, metavar="SEED",
                        help="at a cut, keep a random half of the unsynced pages")
    args = parser.parse_args()
    ops = LazyFS(args.backing, args.report, args.keep_torn)
    # One thread: operations are applied in the order they arrive, and the cut falls between
    # two of them. attr/entry caching off, so sizes the kernel shows are always ours.
    fuse.FUSE(ops, args.mountpoint, foreground=True, nothreads=True, fsname="lazyfs",
              attr_timeout=0, entry_timeout=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
