"""Output directories that never lose what is already written.

- ``claim_output`` refuses a directory that already holds outputs unless the user asked to
  overwrite (or resume) it, before any work starts;
- ``publish`` fills a hidden sibling directory and swaps it into place in one atomic
  rename, so a crash or a full disk mid-write leaves the previous result whole and
  readable, and a reader never finds the destination missing or half-written;
- ``new_run_name`` is unique even for two jobs started in the same second (Ray resumes a
  run whose storage path and name it has seen before);
- a full disk is reported as ``DiskFullError``, which says so and where;
- ``storage_filesystem`` gives Ray Train a local storage path through
  ``AtomicLocalFileSystem``, on which every file appears whole or not at all.
"""

from __future__ import annotations

import ctypes
import errno
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow
import pyarrow.fs

PARTIAL, OLD = ".partial-", ".old-"  # hidden siblings: .<name>.partial-<host>-<pid>-<token>
_DISK_FULL_TEXT = ("no space left on device", "errno 28", "storagefull", "disk quota exceeded")


class OutputExistsError(FileExistsError):
    """The output directory holds another run's results and overwriting was not asked for."""


class DiskFullError(OSError):
    """A write failed because the disk (or quota) is full; nothing already published was touched."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)

    def __str__(self) -> str:
        return self.strerror


def is_disk_full(error: BaseException | None) -> bool:
    """Whether ``error`` (or what caused it, or a Ray worker failure inside it) is ENOSPC/EDQUOT.

    Ray Train and pyarrow hand errors on as their own types or as text, so the message is
    read as well as the errno."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(t in str(error).lower() for t in _DISK_FULL_TEXT):
            return True
        for inner in (getattr(error, "worker_failures", None) or {}).values():  # ray.train.WorkerGroupError
            if is_disk_full(inner):
                return True
        if getattr(error, "cause", None) is not None and is_disk_full(error.cause):  # ray.exceptions.RayTaskError
            return True
        error = error.__cause__ or error.__context__
    return False


def disk_full_error(path: str | Path, what: str, kept: str = "") -> DiskFullError:
    """A ``DiskFullError`` that names the path, the file system's free space and what was kept."""
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        usage = shutil.disk_usage(where)
        space = f" ({_size(usage.free)} free of {_size(usage.total)} on the file system of {where})"
    except OSError:
        space = ""
    return DiskFullError(f"the disk is full: no space left on device while {what} at {path}{space}" + (f"; {kept}" if kept else ""))


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.0f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def new_run_name(prefix: str) -> str:
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def claim_output(output: str | Path, overwrite: bool = False, resume: bool = False) -> Path:
    """The resolved output directory, created; an existing non-empty one only if
    ``overwrite`` (its outputs will be replaced) or ``resume`` (an interrupted run in it
    will be continued)."""
    output = Path(output).resolve()
    if output.is_dir() and any(output.iterdir()) and not (overwrite or resume):
        held = ", ".join(sorted(p.name for p in output.iterdir())[:6])
        raise OutputExistsError(
            f"{output} already holds a run's outputs ({held}); pass --overwrite to replace them, "
            "--resume to continue an interrupted run, or choose another --output"
        )
    output.mkdir(parents=True, exist_ok=True)
    return output


def publish(write: Callable[[Path], object], dest: str | Path) -> Path:
    """Call ``write(tmp)`` to fill a fresh hidden sibling directory, then swap it into ``dest``.

    The swap is one ``renameat2(RENAME_EXCHANGE)`` where the file system has it (Linux), so
    ``dest`` is always either the whole old result or the whole new one; elsewhere two
    renames (a reader may find ``dest`` missing for an instant, never half-written). The
    files are fsynced first, so a full disk fails here, not later. If ``write`` fails the
    old ``dest`` is untouched; ``DiskFullError`` says when the disk was full. Leftovers of
    publishers on this host that were killed mid-write are removed.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_dead_partials(dest.parent, dest.name)
    tmp = partial_path(dest)
    try:
        write(tmp)
        _fsync_tree(tmp)
    except BaseException as error:
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(error, Exception) and is_disk_full(error):
            raise disk_full_error(dest, f"writing {dest.name}", f"the previous {dest.name} is kept" if dest.exists() else "") from error
        raise
    if dest.exists() and _exchange(tmp, dest):
        shutil.rmtree(tmp, ignore_errors=True)  # it holds the old result now
        return dest
    old = partial_path(dest, marker=OLD)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)
    return dest


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV):  # the file system cannot exchange
        return False
    raise OSError(code, f"exchanging {a} and {b}: {os.strerror(code)}")


def _fsync_tree(root: Path) -> None:
    """Flush every file under ``root`` to disk: some file systems report a full disk only here."""
    if root.is_file():
        paths = [root]
    else:
        paths = [Path(d) / f for d, _, files in os.walk(root) for f in files] + [root]
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        except OSError as error:
            if error.errno in (errno.EINVAL, errno.EBADF):  # not fsync-able here (e.g. a directory on some file systems)
                continue
            raise
        finally:
            os.close(fd)


def partial_path(dest: str | Path, directory: str | Path | None = None, marker: str = PARTIAL) -> Path:
    """A hidden name for ``dest`` while it is written (in ``directory``, default beside it):
    ``.<name>.partial-<host>-<pid>-<token>``, so leftovers of dead writers can be told apart."""
    dest = Path(dest)
    tag = f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
    return Path(directory or dest.parent) / f".{dest.name}{marker}{tag}"


def remove_dead_partials(directory: str | Path, name: str | None = None) -> int:
    """Remove the hidden partial/old files and directories in ``directory`` (of ``name``
    only, when given) whose writer ran on this host and is gone; never those of a live
    writer or of another host. Returns how many were removed."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    host, removed = socket.gethostname(), 0
    for path in directory.iterdir():
        for marker in (PARTIAL, OLD):
            base, sep, tag = path.name.partition(marker)
            if not sep or not base.startswith(".") or (name is not None and base != f".{name}"):
                continue
            tag_host, _, pid = tag.rpartition("-")[0].rpartition("-")  # <host>-<pid>-<token>
            if tag_host == host and pid.isdigit() and not _alive(int(pid)):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
                removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- Ray Train storage ----------------------------------------------------------------------
class _AtomicOutput:
    """A file written under a hidden name and renamed into place only when it was closed
    after writes that all succeeded: a killed writer or a full disk leaves the old file."""

    def __init__(self, path: str, staging: Path):
        self.final, self.tmp = Path(path), partial_path(path, staging)
        self.file, self.failed = open(self.tmp, "wb"), False

    @property
    def closed(self) -> bool:
        return self.file.closed

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self.file.tell()

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except BaseException:
            self.failed = True
            raise

    def flush(self) -> None:
        try:
            self.file.flush()
        except BaseException:
            self.failed = True
            raise

    def close(self) -> None:
        if self.file.closed:
            return
        try:
            if not self.failed:
                self.flush()
                os.fsync(self.file.fileno())
        except BaseException:
            self.failed = True
            raise
        finally:
            self.file.close()
            if self.failed:
                self.tmp.unlink(missing_ok=True)
            else:
                os.replace(self.tmp, self.final)  # one file system: staging lies in the storage path


class AtomicLocalFileSystem(pyarrow.fs.FileSystemHandler):
    """The local file system, except that every file is written atomically.

    Ray Train writes its ``checkpoint_manager_snapshot.json`` (which checkpoints exist,
    and which is the latest) by truncating it and writing it again in place, and copies
    checkpoint files into place: a process killed then, or a disk that fills then, leaves
    a truncated snapshot, and the run can no longer be resumed from any checkpoint. Given
    as Ray's ``storage_filesystem`` for a local (or NFS) storage path, every file appears
    whole or not at all. Object stores (S3, GCS) need nothing: an object appears whole.

    Files are written in ``staging`` (``<storage>/.partial``, the same file system) and
    renamed into place, so a killed writer's leftovers never sit inside a checkpoint.
    """

    def __init__(self, staging: str | Path):
        self.fs = pyarrow.fs.LocalFileSystem()
        self.staging = Path(staging)

    def __eq__(self, other):
        return isinstance(other, AtomicLocalFileSystem)

    def __ne__(self, other):
        return not self == other

    def get_type_name(self):
        return "affectlab-atomic-local"

    def normalize_path(self, path):
        return self.fs.normalize_path(path)

    def get_file_info(self, paths):
        return self.fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self.fs.get_file_info(selector)

    def create_dir(self, path, recursive):
        self.fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path):
        self.fs.delete_dir(path)

    def delete_dir_contents(self, path, missing_dir_ok=False):
        self.fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self):
        raise OSError("refusing to delete the contents of the root directory")

    def delete_file(self, path):
        self.fs.delete_file(path)

    def move(self, src, dest):
        self.fs.move(src, dest)

    def copy_file(self, src, dest):
        with self.fs.open_input_stream(src) as source, self.open_output_stream(dest, None) as out:
            while chunk := source.read(16 << 20):
                out.write(chunk)

    def open_input_stream(self, path):
        return self.fs.open_input_stream(path)

    def open_input_file(self, path):
        return self.fs.open_input_file(path)

    def open_output_stream(self, path, metadata):
        self.staging.mkdir(parents=True, exist_ok=True)
        return pyarrow.PythonFile(_AtomicOutput(path, self.staging), mode="w")

    def open_append_stream(self, path, metadata):
        return self.fs.open_append_stream(path, metadata=metadata)


STAGING_DIR = ".partial"


def storage_filesystem(storage_path: str) -> tuple[str, pyarrow.fs.FileSystem | None]:
    """``(storage_path, storage_filesystem)`` for Ray's ``RunConfig``: a local path gets the
    atomic local file system (and the leftovers of this host's dead writers are removed);
    a URI (``s3://…``) is left to Ray (``None``)."""
    if "://" in str(storage_path):
        return str(storage_path), None
    path = Path(storage_path).expanduser().resolve()
    remove_dead_partials(path / STAGING_DIR)
    return str(path), pyarrow.fs.PyFileSystem(AtomicLocalFileSystem(path / STAGING_DIR))
