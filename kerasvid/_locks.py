"""Exclusive directory locks (stdlib only): one writer per model_dir or output directory.

`DirectoryLock(directory, what)` holds an advisory `flock` on `<directory>/.kerasvid.lock` for as long as it is
open; a second holder gets `DirectoryLockedError` naming the process that holds it. The kernel releases the lock
when its process ends, however it ends (kill -9 included), so a stale lock file never blocks a later run; a
released lock removes its file (and the folder, if the lock made it and it is still empty). On file systems
without local locks (a `gs://` path) nothing is locked.
"""
import errno
import json
import os
import sys
import time

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; the lock is a no-op there
    fcntl = None

_LOCK_FILE = ".kerasvid.lock"


def pid_alive(pid):
    """Whether process `pid` exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's
        return True
    return True


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
        self._created = not os.path.exists(self.directory)
        os.makedirs(self.directory, exist_ok=True)
        path = os.path.join(self.directory, _LOCK_FILE)
        while True:
            try:
                handle = open(path, "a+", encoding="utf-8")
            except PermissionError:  # another user's lock file: a read-only descriptor takes the lock as well
                handle = open(path, "r", encoding="utf-8")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):  # no locks on this file system
                    handle.close()
                    print(f"kerasvid: warning: cannot lock {self.directory!r} ({e.strerror}); going on without "
                          f"the one-writer guarantee", file=sys.stderr)
                    return self
                handle.seek(0)
                try:
                    holder = json.loads(handle.read() or "{}")
                except ValueError:
                    holder = {}
                handle.close()
                self._remove_created()
                who = f"{holder.get('what', 'another process')} (pid {holder.get('pid', '?')}, started " \
                      f"{holder.get('started', '?')})"
                raise DirectoryLockedError(f"{self.directory!r} is in use by {who}; wait for it to finish or use "
                                           f"another directory.") from None
            try:  # the holder before us may have removed the file as we opened it: lock the file that is there
                if os.fstat(handle.fileno()).st_ino == os.stat(path).st_ino:
                    break
            except FileNotFoundError:
                pass
            handle.close()
        if handle.writable():
            handle.seek(0)
            handle.truncate()
            handle.write(json.dumps({"what": self.what, "pid": os.getpid(), "argv": sys.argv,
                                     "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
            handle.flush()
        self._file = handle
        return self

    def release(self):
        """Removes the lock file (a folder holds none between commands) and unlocks; a folder that the lock
        created and that is still empty goes too."""
        if self._file is not None:
            try:
                os.remove(os.path.join(self.directory, _LOCK_FILE))
            except OSError:
                pass
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
            self._remove_created()

    def _remove_created(self):
        if getattr(self, "_created", False):
            try:
                os.rmdir(self.directory)  # only if empty
            except OSError:
                pass

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False
