"""The files of a SQLite store: identity, modes, the owner's lock, the check before writing.

Theory of operation
-------------------
Opening a store (:func:`open_files`) runs, in this order, before SQLite may
write anything:

1. The path is resolved (``os.path.realpath``): every symlink to a file
   leads to the same real path, the one SQLite is given, so its ``-wal``
   and ``-shm`` files always sit beside the real file.
2. An existing file is inspected through a read-only connection
   (``immutable=1``, or ``mode=ro`` when its ``-wal`` and ``-shm`` already
   exist, so that no side file is created): it must be empty, or a SQLite
   database whose ``application_id`` is 0 or :data:`APPLICATION_ID`, whose
   tables are suricate's, and whose schema version this release knows.
   A refused file is left byte-for-byte untouched, with no side file.
   A missing file is created empty with the store's mode (umask ignored);
   SQLite gives the ``-wal`` and ``-shm`` files the database's mode.
3. The owner's lock is taken.  It is keyed on the file's identity, not its
   name: within the process, a registry keyed by ``(st_dev, st_ino)``;
   across processes, a lock file in the real file's directory named after
   the inode (``.suricate-<ino>.<generation>.lock``), so that symlinks and
   hard links in that directory meet at the same lock.  A hard link in
   another directory cannot be found from here: a file with more than one
   link is refused unless its lock is held (then :class:`StoreLocked`
   names the holder), so two owners never both see a single-link file.

The lock is an open-file-description write lock (``F_OFD_SETLK``) on the
whole lock file: a write lock needs a descriptor opened for writing, and
``flock`` does not interact with it.  A process that can only read the lock
file can still place a *read* lock, which would block the write lock; the
owner then steps over it to the next generation.  The rule that keeps one
owner is: a runtime owns the store while it holds the write lock on
generation ``g``, and it checked, after locking, that the file is still
linked under its name, that no generation above ``g`` exists, and that no
generation below ``g`` is write-locked.  Two owners ``g1 < g2`` would need
``g2`` created after the first owner's check and ``g1`` seen unlocked
after that, while it was held: impossible.  Lower generations are removed
once owned; the owner unlinks its own lock file before unlocking it on
release, and a lock taken on an unlinked file fails the name check, so
removal never opens a window.  A killed owner's lock file stays behind,
unlocked: the next runtime takes it over.

Lock files are opened with ``O_NOFOLLOW`` and never truncated unless they
are regular, single-link, small, and locked by us.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import socket
import sqlite3
import stat
import struct
import sys
import threading
from pathlib import Path
from typing import Final

import attrs

from .._errors import StoreError, StoreLocked
from ._schema import SCHEMA_VERSION

__all__ = [
    "APPLICATION_ID",
    "DEFAULT_MODE",
    "OwnerLock",
    "StoreFiles",
    "check_connection",
    "claim",
    "lock_file_name",
    "open_files",
]

APPLICATION_ID: Final = 0x53555249  # b"SURI", in SQLite's header at offset 68
DEFAULT_MODE: Final = 0o600
MAX_LOCK_BYTES: Final = 4096  # a lock file holds one line; anything bigger is not ours
_ATTEMPTS: Final = 16

_OFD_SETLK: Final[int | None] = getattr(fcntl, "F_OFD_SETLK", None)
_OFD_GETLK: Final[int | None] = getattr(fcntl, "F_OFD_GETLK", None)
# struct flock on 64-bit Linux: short l_type, short l_whence, off_t l_start,
# off_t l_len, pid_t l_pid (padded to 32 bytes).
_FLOCK: Final = "hhqqi4x"
_USE_OFD: Final = (
    sys.platform == "linux"
    and _OFD_SETLK is not None
    and _OFD_GETLK is not None
    and struct.calcsize("l") == 8
)

_GENERATION: Final = re.compile(r"\.suricate-(\d+)\.(\d+)\.lock\Z")


def lock_file_name(inode: int, generation: int = 0) -> str:
    """The name of a lock file, in the directory of the database's real path."""
    return f".suricate-{inode}.{generation}.lock"


def check_mode(mode: object) -> int:
    """Validate a store's file mode: permission bits that let the owner read and write."""
    if not isinstance(mode, int) or isinstance(mode, bool) or not 0 <= mode <= 0o777:
        raise ValueError("mode must be permission bits between 0o000 and 0o777, like 0o600")
    if mode & 0o600 != 0o600:
        raise ValueError("mode must let the owner read and write (0o600 at least)")
    return mode


# -- what the file holds --------------------------------------------------------------


def check_connection(conn: sqlite3.Connection, path: Path) -> None:
    """Check, reading only, that ``conn`` is on a file suricate may write.

    Accepted: a database with no tables, or with suricate's tables at a
    schema version this release knows, and an ``application_id`` that is 0
    (a file from before the id was set) or :data:`APPLICATION_ID`.

    Raises:
        StoreError: the file belongs to another application, or was written
            by a newer release.  sqlite3.DatabaseError: not a database.
    """
    (app,) = conn.execute("PRAGMA application_id").fetchone()
    if app not in (0, APPLICATION_ID):
        raise StoreError(
            f"cannot open {path}: it belongs to another application "
            f"(application_id 0x{app & 0xFFFFFFFF:08x}, suricate's is 0x{APPLICATION_ID:08x}); "
            "it was left untouched"
        )
    tables = {
        name
        for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if not name.startswith("sqlite_")
    }
    if "suricate_schema" not in tables:
        if tables:
            raise StoreError(
                f"cannot open {path}: the database holds tables but no suricate schema: "
                "not a suricate store; it was left untouched"
            )
        return
    row = conn.execute("SELECT version FROM suricate_schema").fetchone()
    version = 0 if row is None else row[0]
    if not isinstance(version, int):
        raise StoreError(f"cannot open {path}: its schema version {version!r} is not a number")
    if version > SCHEMA_VERSION:
        raise StoreError(
            f"cannot open {path}: the database has schema version {version}; this release "
            f"knows up to {SCHEMA_VERSION}: upgrade suricate to open it (it was left untouched)"
        )


def claim(conn: sqlite3.Connection) -> None:
    """Mark a database as suricate's (``PRAGMA application_id``) if it is not yet."""
    (app,) = conn.execute("PRAGMA application_id").fetchone()
    if app == 0:
        conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")


def _inspect(path: Path) -> None:
    """Check an existing file through a connection that cannot write or create files."""
    if os.lstat(path).st_size == 0:
        return  # created, never written: SQLite makes it a database
    sides = all(os.path.lexists(f"{path}{suffix}") for suffix in ("-wal", "-shm"))
    # ``mode=ro`` on a WAL database creates -wal and -shm when they are missing;
    # ``immutable=1`` opens nothing beside the file (and ignores a lone -wal).
    uri = f"{path.as_uri()}?{'mode=ro' if sides else 'immutable=1'}"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {exc}") from None
    try:
        check_connection(conn, path)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path}: {type(exc).__name__}: {exc}") from None
    finally:
        conn.close()


def _create(path: Path, mode: int) -> bool:
    """Create an empty database file with ``mode``; False if it exists."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, mode)  # the umask narrowed what open() gave
    finally:
        os.close(fd)
    return True


# -- locks on a descriptor ------------------------------------------------------------


def _flock(kind: int) -> bytes:
    return struct.pack(_FLOCK, kind, os.SEEK_SET, 0, 0, 0)


def _try_write_lock(fd: int) -> int | None:
    """Take a write lock on all of ``fd``'s file (None), or say what was in the way.

    ``F_WRLCK``: an owner.  ``F_RDLCK``: a reader.  ``F_UNLCK``: a lock that
    went away meanwhile.
    """
    if not _USE_OFD:  # pragma: no cover - non-Linux: process-wide POSIX locks
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                return fcntl.F_WRLCK
            raise
        return None
    assert _OFD_SETLK is not None
    try:
        fcntl.fcntl(fd, _OFD_SETLK, _flock(fcntl.F_WRLCK))
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        held = _lock_in_the_way(fd)
        return fcntl.F_UNLCK if held is None else held  # F_UNLCK: released meanwhile
    return None


def _lock_in_the_way(fd: int) -> int | None:
    """The type of a lock that would block a write lock on ``fd``'s file, if any."""
    if not _USE_OFD:  # pragma: no cover
        return None
    assert _OFD_GETLK is not None
    answer = fcntl.fcntl(fd, _OFD_GETLK, _flock(fcntl.F_WRLCK))
    kind = int(struct.unpack(_FLOCK, answer)[0])
    return None if kind == fcntl.F_UNLCK else kind


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
    except OSError:
        text = ""
    return text or "holder unknown"


# -- the process-wide registry --------------------------------------------------------

_registry_lock = threading.Lock()
_owned: dict[tuple[int, int], str] = {}


def _register(identity: tuple[int, int], path: Path, holder: str) -> None:
    with _registry_lock:
        other = _owned.get(identity)
        if other is not None:
            raise StoreLocked(
                f"{path} is owned by another runtime ({holder}, this process, through {other}); "
                "other processes can still read it"
            )
        _owned[identity] = str(path)


def _unregister(identity: tuple[int, int]) -> None:
    with _registry_lock:
        _owned.pop(identity, None)


# -- the lock file --------------------------------------------------------------------


class OwnerLock:
    """The cross-process owner's lock of one database (see the module's theory)."""

    def __init__(self, directory: Path, inode: int, *, mode: int, database: Path) -> None:
        self.directory = directory
        self.inode = inode
        self.mode = mode
        self.database = database
        self.fd: int | None = None
        self.path: Path | None = None

    def _path(self, generation: int) -> Path:
        return self.directory / lock_file_name(self.inode, generation)

    def _generations(self) -> list[int]:
        found = []
        prefix = f".suricate-{self.inode}."
        for name in os.listdir(self.directory):
            if name.startswith(prefix):
                match = _GENERATION.match(name)
                if match and int(match.group(1)) == self.inode:
                    found.append(int(match.group(2)))
        return sorted(found)

    def _refuse(self, path: Path, why: str) -> StoreError:
        return StoreError(f"cannot open {self.database}: the lock file {path} {why}; it was left untouched")

    def _open_existing(self, path: Path, flags: int) -> int | None:
        """Open a lock file that exists: never through a symlink, never a non-file."""
        try:
            fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._refuse(path, "is a symbolic link (not followed)") from None
            raise StoreError(f"cannot open {self.database}: the lock file {path}: {exc.strerror}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise self._refuse(path, "is not a regular file")
        return fd

    def _new(self, generation: int) -> int | None:
        path = self._path(generation)
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, self.mode)
        except FileExistsError:
            return None
        os.fchmod(fd, self.mode)
        return fd

    def _named(self, fd: int, path: Path) -> bool:
        try:
            there = os.lstat(path)
        except FileNotFoundError:
            return False
        here = os.fstat(fd)
        return (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino)

    def _locked_by_owner(self, generation: int) -> str | None:
        """The holder named in a lower generation, if that file is write-locked."""
        path = self._path(generation)
        try:
            fd = self._open_existing(path, os.O_RDONLY)
        except StoreError:
            return None  # a symlink or a non-file is nobody's lock
        if fd is None:
            return None
        try:
            return _holder(fd) if _lock_in_the_way(fd) == fcntl.F_WRLCK else None
        finally:
            os.close(fd)

    def _locked(self, path: Path, holder: str) -> StoreLocked:
        return StoreLocked(
            f"{self.database} is owned by another runtime ({holder}; lock file {path}); "
            "other processes can still read it"
        )

    def _drop(self, fd: int, path: Path) -> None:
        try:
            if self._named(fd, path):
                os.unlink(path)  # before unlocking: a late locker fails the name check
        except OSError:
            pass
        finally:
            os.close(fd)

    def acquire(self, holder: str) -> None:
        """Become the owner, or raise :class:`StoreLocked` naming the one there is."""
        line = f"{holder}\n".encode()
        for _ in range(_ATTEMPTS):
            if self._attempt(line):
                return
        raise StoreError(f"cannot open {self.database}: its lock stayed contended; try again")

    def _attempt(self, line: bytes) -> bool:
        """One try: True when owned; False to look again; raises a refusal."""
        generations = self._generations()
        generation = generations[-1] if generations else 0
        path = self._path(generation)
        ours = not generations
        fd = self._new(0) if ours else self._open_existing(path, os.O_RDWR)
        if fd is None:
            return False  # raced with another opener
        try:
            in_the_way = _try_write_lock(fd)
            if in_the_way == fcntl.F_WRLCK:
                raise self._locked(path, _holder(fd))
            if in_the_way == fcntl.F_UNLCK:
                return False  # released meanwhile: look again
            if in_the_way is not None:
                # A read lock: someone who can only read the file.  Owners
                # hold write locks, so this file has no owner: step over it.
                os.close(fd)
                fd = None
                generation += 1
                path = self._path(generation)
                fd = self._new(generation)
                if fd is None:
                    return False
                ours = True
                if _try_write_lock(fd) is not None:
                    return False  # another opener was quicker: its file now
            if not ours:
                st = os.fstat(fd)
                if st.st_nlink == 0:
                    return False  # released and unlinked meanwhile
                if st.st_nlink > 1 or st.st_size > MAX_LOCK_BYTES:
                    raise self._refuse(path, "does not look like a lock file (other links, or large)")
            verdict = self._verify(fd, generation)
            if verdict is True:
                os.ftruncate(fd, 0)  # ours, or a dead owner's: locked, regular, one link, small
                os.pwrite(fd, line, 0)
                self.fd, self.path, fd = fd, path, None
                self._sweep(generation)
                return True
            self._drop(fd, path)  # unlinks it only if it is still under its name
            fd = None
            if isinstance(verdict, StoreLocked):
                raise verdict
            return False
        finally:
            if fd is not None:
                os.close(fd)

    def _verify(self, fd: int, generation: int) -> bool | None | StoreLocked:
        """True: we own it.  False: our file was replaced.  None: look again."""
        path = self._path(generation)
        if not self._named(fd, path):
            return False
        generations = self._generations()
        if generations and generations[-1] > generation:
            return None
        for lower in generations:
            if lower < generation:
                found = self._locked_by_owner(lower)
                if found is not None:
                    return self._locked(self._path(lower), found)
        return True

    def _sweep(self, generation: int) -> None:
        for lower in self._generations():
            if lower < generation:
                try:
                    os.unlink(self._path(lower))
                except OSError:
                    pass

    def release(self) -> None:
        """Give the lock up (idempotent): unlink the lock file, then unlock it."""
        fd, path, self.fd, self.path = self.fd, self.path, None, None
        if fd is not None and path is not None:
            self._drop(fd, path)


# -- opening --------------------------------------------------------------------------


@attrs.define
class StoreFiles:
    """What :func:`open_files` holds for an open store: release it with :meth:`release`."""

    path: Path  # the real path, given to SQLite
    identity: tuple[int, int]
    lock: OwnerLock
    released: bool = False

    def release(self) -> None:
        """Release the owner's lock (idempotent)."""
        if not self.released:
            self.released = True
            try:
                self.lock.release()
            finally:
                _unregister(self.identity)


def _holder_line() -> str:
    return f"pid {os.getpid()} on host {socket.gethostname()}"


def open_files(path: Path, mode: int = DEFAULT_MODE) -> StoreFiles:
    """Check, create if missing, and lock the database at ``path`` (blocking).

    Raises:
        StoreError: a missing directory, a read-only or refused file, a file
            with several hard links, a planted lock file.
        StoreLocked: another runtime owns the file.
    """
    directory = path.parent
    if not directory.is_dir():
        raise StoreError(f"cannot open {path}: directory {directory} does not exist")
    real = Path(os.path.realpath(path))
    for _ in range(2):
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            if _create(real, mode):
                break
            continue  # created by someone else meanwhile: check it
        if not stat.S_ISREG(st.st_mode):
            raise StoreError(f"cannot open {path}: {real} is not a regular file")
        # Root passes os.access on any file: the mode bits say what was meant.
        if not os.access(real, os.R_OK | os.W_OK) or not st.st_mode & 0o222:
            raise StoreError(f"cannot open {path}: the file is read-only")
        _inspect(real)
        break
    st = os.lstat(real)
    identity = (st.st_dev, st.st_ino)
    holder = _holder_line()
    _register(identity, real, holder)
    lock = OwnerLock(real.parent, st.st_ino, mode=mode, database=real)
    try:
        lock.acquire(holder)
        try:
            now = os.lstat(real)
            if (now.st_dev, now.st_ino) != identity:
                raise StoreError(f"cannot open {path}: the file was replaced while it was opened")
            if now.st_nlink > 1:
                raise StoreError(
                    f"cannot open {path}: the file has {now.st_nlink} hard links; single "
                    "ownership is keyed on the file's directory and inode, and SQLite names its "
                    "-wal and -shm files after the name used, so a store must have one name "
                    "(remove the other links)"
                )
        except BaseException:
            lock.release()
            raise
    except BaseException:
        _unregister(identity)
        raise
    return StoreFiles(path=real, identity=identity, lock=lock)
