"""Exclusive directory locks (stdlib only): one writer per model_dir or output directory.

`DirectoryLock(directory, what)` holds an advisory `flock` on `<directory>/.kerasvid.lock` for as long as it is
open; a second holder gets `DirectoryLockedError` naming the process that holds it. The kernel releases the lock
when its process ends, however it ends (kill -9 included), so a stale lock file never blocks a later run. On file
systems without local locks (a `gs://` path) nothing is locked.
"""
import json
import os
import sys
import time

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the lock is a no-op there
    fcntl = None

LOCK_FILE = ".kerasvid.lock"


class DirectoryLockedError(ValueError):
    """Raised when another process holds the lock of a directory."""


class DirectoryLock:
    """A context manager (or `acquire()` / `release()`) for the exclusive lock of `directory`.

    Args:
        directory: the directory to lock (created if missing).
        what: what the holder does, for the message of the process that is refused ("kerasvid train").
    """

    def __init__(self, directory, what):
        self.directory = directory
        self.what = what
        self._file = None

    def acquire(self):
        if fcntl is None or "://" in self.directory:
            return self
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, LOCK_FILE)
        handle = open(path, "a+", encoding="utf-8")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            handle.close()
            who = f"{holder.get('what', 'another process')} (pid {holder.get('pid', '?')}, started " \
                  f"{holder.get('started', '?')})"
            raise DirectoryLockedError(f"{self.directory!r} is in use by {who}; wait for it to finish or use "
                                       f"another directory.") from None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"what": self.what, "pid": os.getpid(), "argv": sys.argv,
                                 "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
        handle.flush()
        self._file = handle
        return self

    def release(self):
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
