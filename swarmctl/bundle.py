"""The suite as a content-addressed bundle.

A client packs a suite folder into a gzip'd tar with ``build_bundle`` and uploads it. The
coordinator stores it with ``BundleCache.write_archive`` or ``BundleCache.open_writer``, which
check the upload against its sha256. Each executor extracts a digest once, into
``<root>/suites/<digest>/``, with ``BundleCache.extracted``.

The archive bytes depend only on the names, contents, executable bits and symlink targets of
the files, so the same suite gives the same digest on every client. Permission bits are
reduced to 0o755 or 0o644, the way git stores them, so that a different umask does not
change the digest.

NOTE: the gzip stream is made by the zlib that Python is linked against. Two clients with
different zlib builds can produce different bytes, and so different digests, for the same
suite. That costs one extra upload and extraction, never a wrong result.

``extract_bundle`` passes ``filter="data"`` to tarfile, which needs Python 3.11.4 or later.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import logging
import os
import posixpath
import re
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from swarmctl.errors import BundleError

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "DEFAULT_MAX_RATIO",
    "BundleLimits",
    "EXCLUDED_NAMES",
    "Bundle",
    "BundleCache",
    "BundleWriter",
    "build_bundle",
    "extract_bundle",
    "iter_chunks",
]

# Default limit of the uncompressed size of a suite, in bytes.
DEFAULT_MAX_BYTES = 512 * 1024**2
# Members of one archive, and extracted bytes per archived byte. A suite of source files
# compresses about 3 to 10 times; far higher ratios come from padding, as in a zip bomb.
DEFAULT_MAX_FILES = 100_000
DEFAULT_MAX_RATIO = 200

# Files and directories left out of every bundle, at any depth: version control data,
# caches and virtualenvs, which executors rebuild and which would change the digest.
EXCLUDED_NAMES = frozenset(
    {
        ".git",
        ".hg",
        ".svn",
        "__pycache__",
        ".pytest_cache",
        ".mypy_cache",
        ".ruff_cache",
        ".tox",
        ".nox",
        ".venv",
        ".swarmctl",
    }
)
EXCLUDED_SUFFIXES = (".pyc",)

# Every entry gets this mtime (2000-01-01T00:00:00Z) so that touching a file does not
# change the digest. It is not 0 because some tools treat an mtime of 0 as missing.
_ENTRY_MTIME = 946684800
_DIR_MODE = 0o755
_EXEC_FILE_MODE = 0o755
_FILE_MODE = 0o644
_COMPRESS_LEVEL = 6

# The number of largest files that the size-limit error lists.
_LARGEST_FILES_SHOWN = 5

_DIGEST_PATTERN = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class BundleLimits:
    """Limits on the bundles a node accepts: archive and extracted bytes, members, and compression ratio."""

    max_bytes: int = DEFAULT_MAX_BYTES
    max_files: int = DEFAULT_MAX_FILES
    max_ratio: int = DEFAULT_MAX_RATIO


@dataclass(frozen=True)
class Bundle:
    """A suite archive written by ``build_bundle``.

    ``size`` is the size of the archive in bytes (what gets uploaded), and ``files`` is the
    number of regular files and symlinks in it, not counting directories.
    """

    digest: str  # sha256 hex of the archive bytes
    path: Path
    size: int
    files: int


@dataclass(frozen=True)
class _Entry:
    """One file, directory or symlink found under the suite folder."""

    name: str  # POSIX path relative to the suite folder, as stored in the archive
    path: str  # absolute path on disk
    kind: str  # "dir", "file" or "symlink"
    mode: int = 0
    size: int = 0
    link_target: str = ""


def _format_size(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _is_excluded(name: str) -> bool:
    return name in EXCLUDED_NAMES or name.endswith(EXCLUDED_SUFFIXES)


def _check_utf8(name: str, path: str) -> None:
    # Names that are not valid UTF-8 reach Python as lone surrogates, which the tar
    # headers cannot store.
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BundleError(
            f"cannot bundle {os.fsdecode(path)!r}: its name is not valid UTF-8. Rename it"
        ) from exc


def _scan_folder(root: str, skip_dir: str | None) -> tuple[list[_Entry], list[str]]:
    """Walk ``root`` and return its entries, sorted by path.

    Also returns one line per symlink whose target resolves outside ``root``, for the caller
    to report together.
    """
    entries: list[_Entry] = []
    outside_links: list[str] = []

    # A stack of (directory on disk, its name in the archive followed by "/").
    stack: list[tuple[str, str]] = [(root, "")]
    while stack:
        directory, prefix = stack.pop()
        try:
            with os.scandir(directory) as iterator:
                children = list(iterator)
        except OSError as exc:
            raise BundleError(f"cannot read directory {directory}: {exc}") from exc

        subdirectories: list[tuple[str, str]] = []
        for child in children:
            name = f"{prefix}{child.name}"
            _check_utf8(name, child.path)
            if _is_excluded(child.name):
                logger.debug("leaving %s out of the bundle", child.path)
                continue

            if child.is_symlink():
                entry = _symlink_entry(root, child.path, name, outside_links)
                if entry is not None:
                    entries.append(entry)
            elif child.is_dir(follow_symlinks=False):
                if child.path == skip_dir:
                    continue
                if os.path.lexists(os.path.join(child.path, "pyvenv.cfg")):
                    logger.debug("leaving virtualenv %s out of the bundle", child.path)
                    continue
                entries.append(_Entry(name=name, path=child.path, kind="dir", mode=_DIR_MODE))
                subdirectories.append((child.path, f"{name}/"))
            elif child.is_file(follow_symlinks=False):
                info = child.stat(follow_symlinks=False)
                mode = _EXEC_FILE_MODE if info.st_mode & 0o111 else _FILE_MODE
                entries.append(
                    _Entry(name=name, path=child.path, kind="file", mode=mode, size=info.st_size)
                )
            else:
                logger.warning(
                    "skipping %s: sockets, FIFOs and device files cannot be bundled", child.path
                )

        stack.extend(subdirectories)

    # Sorting by path components puts each directory right before its contents, in name
    # order, whatever order the walk visited them in.
    entries.sort(key=lambda entry: entry.name.split("/"))
    return entries, outside_links


def _symlink_entry(root: str, path: str, name: str, outside_links: list[str]) -> _Entry | None:
    target = os.readlink(path)
    resolved = os.path.realpath(path)
    if os.path.commonpath([root, resolved]) != root:
        outside_links.append(f"{name} -> {target}")
        return None

    # Store the target relative to the link, resolved through any intermediate links, so
    # the extracted link works wherever the bundle lands.
    relative = os.path.relpath(resolved, os.path.dirname(path))
    return _Entry(name=name, path=path, kind="symlink", link_target=relative)


def _check_size(folder: Path, entries: list[_Entry], max_bytes: int) -> None:
    total = sum(entry.size for entry in entries)
    if total <= max_bytes:
        return

    largest = sorted(
        (entry for entry in entries if entry.kind == "file"),
        key=lambda entry: entry.size,
        reverse=True,
    )[:_LARGEST_FILES_SHOWN]
    listing = ", ".join(f"{entry.name} ({_format_size(entry.size)})" for entry in largest)
    raise BundleError(
        f"suite folder {folder} is {_format_size(total)} uncompressed, over the limit of "
        f"{_format_size(max_bytes)}. The largest files are: {listing}. "
        "Remove them from the folder, or move them to a name that bundles skip "
        f"(such as .swarmctl/), and try again"
    )


class _HashingFile:
    """A write-only file wrapper that computes the sha256 and size of what passes through."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self._raw.write(data)
        self.sha256.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self._raw.flush()


def _tar_info(entry: _Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.name)
    info.mtime = _ENTRY_MTIME
    info.uid = 0
    info.gid = 0
    info.uname = ""
    info.gname = ""
    info.mode = entry.mode
    if entry.kind == "dir":
        info.type = tarfile.DIRTYPE
    elif entry.kind == "symlink":
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link_target
        info.mode = 0o777
    else:
        info.type = tarfile.REGTYPE
    return info


def _add_file(tar: tarfile.TarFile, entry: _Entry) -> None:
    info = _tar_info(entry)
    # O_NOFOLLOW makes a file that was swapped for a symlink since the scan fail instead
    # of pulling in the link's target.
    try:
        fd = os.open(entry.path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise BundleError(f"cannot read {entry.path}: {exc}") from exc
    with os.fdopen(fd, "rb") as file:
        info.size = os.fstat(fd).st_size
        try:
            tar.addfile(info, file)
        except OSError as exc:
            raise BundleError(
                f"cannot read {entry.path}: {exc}. Did the file change while it was being "
                "bundled? Try again once nothing writes to the suite folder"
            ) from exc


def _write_archive(entries: list[_Entry], dest_dir: Path) -> tuple[str, int, Path]:
    """Write the entries as a tar.gz into a temp file in ``dest_dir``.

    Returns the sha256 hex, the size and the path of the temp file.
    """
    fd, temp_name = tempfile.mkstemp(dir=dest_dir, prefix=".bundle-", suffix=".tar.gz.tmp")
    temp_path = Path(temp_name)
    try:
        with os.fdopen(fd, "wb") as raw:
            hashing = _HashingFile(raw)
            # filename="" keeps the temp file's name out of the gzip header, and mtime=0
            # keeps the time out of it.
            with gzip.GzipFile(
                filename="", mode="wb", fileobj=hashing, compresslevel=_COMPRESS_LEVEL, mtime=0
            ) as compressed:
                with tarfile.open(
                    fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8"
                ) as tar:
                    for entry in entries:
                        if entry.kind == "file":
                            _add_file(tar, entry)
                        else:
                            tar.addfile(_tar_info(entry))
            raw.flush()
            os.fsync(raw.fileno())
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise
    return hashing.sha256.hexdigest(), hashing.size, temp_path


def build_bundle(folder: Path, dest_dir: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Bundle:
    """Pack ``folder`` into ``dest_dir/<digest>.tar.gz`` and return the bundle.

    The same content gives the same bytes: entries are sorted, owners, times and gzip header
    fields are fixed, and modes are reduced to 0o755 or 0o644 (0o755 for directories). Names
    in ``EXCLUDED_NAMES``, ``*.pyc`` files and virtualenvs (directories containing
    ``pyvenv.cfg``) are left out, and so is ``dest_dir`` when it lies inside ``folder``.
    Symlinks that resolve inside the folder are stored as relative symlinks. Sockets, FIFOs
    and devices are skipped with a warning.

    Raises BundleError when the folder is missing or not a directory, a symlink leads
    outside the folder, the regular files add up to more than ``max_bytes``, or a file
    cannot be read.
    """
    folder = Path(folder)
    dest_dir = Path(dest_dir)
    if not folder.exists():
        raise BundleError(f"suite folder not found: {folder}")
    if not folder.is_dir():
        raise BundleError(f"suite folder {folder} is not a directory")

    root = os.path.realpath(folder)
    dest_dir.mkdir(parents=True, exist_ok=True)
    real_dest = os.path.realpath(dest_dir)
    if real_dest == root:
        raise BundleError(
            f"cannot write the bundle of {folder} into the folder itself. Choose a "
            f"directory outside it or under {folder / '.swarmctl'}"
        )

    entries, outside_links = _scan_folder(root, skip_dir=real_dest)
    if outside_links:
        raise BundleError(
            f"suite folder {folder} contains symlinks that point outside it: "
            f"{'; '.join(outside_links)}. Executors would not have the targets. "
            "Replace each link with a copy of its target, or remove it"
        )
    _check_size(folder, entries, max_bytes)

    digest, size, temp_path = _write_archive(entries, dest_dir)
    archive = dest_dir / f"{digest}.tar.gz"
    os.replace(temp_path, archive)

    file_count = sum(1 for entry in entries if entry.kind != "dir")
    logger.info(
        "built bundle %s from %s: %d files, %d bytes compressed", digest, folder, file_count, size
    )
    return Bundle(digest=digest, path=archive, size=size, files=file_count)


def _reject(archive: Path, member_name: str, reason: str) -> BundleError:
    return BundleError(f"bundle archive {archive} rejected: member {member_name!r} {reason}")


def _member_name(member: tarfile.TarInfo, archive: Path) -> str:
    """Return the normalized name of ``member``, or raise if it could land outside dest."""
    raw = member.name
    if not raw:
        raise _reject(archive, raw, "has an empty name")
    if raw.startswith("/"):
        raise _reject(archive, raw, "has an absolute name")
    if ".." in raw.split("/"):
        raise _reject(
            archive, raw, "has a '..' component, which could write outside the destination"
        )

    name = posixpath.normpath(raw)
    if name == "." and not member.isdir():
        raise _reject(archive, raw, "names the destination itself but is not a directory")
    return name


def _leaves_root(name: str) -> bool:
    return name == ".." or name.startswith("../")


def _check_link(
    member: tarfile.TarInfo, name: str, archive: Path, members_by_name: dict[str, tarfile.TarInfo]
) -> None:
    target = member.linkname
    if not target:
        raise _reject(archive, name, "is a link with an empty target")
    if target.startswith("/"):
        raise _reject(archive, name, f"is a link to the absolute path {target!r}")

    if member.issym():
        # A symlink target is relative to the directory that contains the link.
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), target))
        if _leaves_root(resolved):
            raise _reject(archive, name, f"is a symlink to {target!r}, outside the destination")
        return

    # A hardlink target is a name relative to the archive root, and tarfile links it to a
    # member extracted before it.
    resolved = posixpath.normpath(target)
    if _leaves_root(resolved):
        raise _reject(archive, name, f"is a hardlink to {target!r}, outside the destination")
    linked = members_by_name.get(resolved)
    if linked is None or not linked.isreg():
        raise _reject(
            archive, name, f"is a hardlink to {target!r}, which is not a regular file before it"
        )


def _kind(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "directory"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    if member.ischr():
        return "character device"
    if member.isblk():
        return "block device"
    if member.isfifo():
        return "FIFO"
    if member.isreg():
        return "regular file"
    return f"entry of tar type {member.type!r}"


def _read_members(tar: tarfile.TarFile, archive: Path, max_bytes: int, max_files: int, max_ratio: int) -> list[tarfile.TarInfo]:
    """Return the archive's members, reading header by header; raise BundleError past a limit."""
    budget = min(max_bytes, max_ratio * max(archive.stat().st_size, 1))
    members = []
    total = 0
    while (member := tar.next()) is not None:
        members.append(member)
        if len(members) > max_files:
            raise BundleError(
                f"bundle archive {archive} rejected: it has more than {max_files} members; "
                "raise bundle_max_files in [limits] of the nodes' swarm.toml (or swarmctl up --limit) if the suite needs more files"
            )
        if member.isreg():
            total += member.size
        if total > budget:
            if total > max_bytes:
                reason = f"it would extract to more than {_format_size(total)}, over the limit of {_format_size(max_bytes)}"
            else:
                reason = (
                    f"it would extract to more than {max_ratio} times its size of {_format_size(archive.stat().st_size)} "
                    "(the compression of a zip bomb); raise bundle_max_ratio in [limits] if the suite's files compress that well"
                )
            raise BundleError(f"bundle archive {archive} rejected: {reason}")
    return members


def _validate_members(members: list[tarfile.TarInfo], archive: Path, max_bytes: int) -> None:
    """Raise BundleError on the first member that is unsafe to extract.

    Checks names, link targets, entry types, duplicates, members nested under a
    non-directory (which would write through a symlink) and the total size.
    """
    members_by_name: dict[str, tarfile.TarInfo] = {}
    total = 0
    for member in members:
        name = _member_name(member, archive)
        if name in members_by_name:
            raise _reject(archive, name, "appears more than once")
        if member.issym() or member.islnk():
            _check_link(member, name, archive, members_by_name)
        elif not (member.isreg() or member.isdir()):
            raise _reject(
                archive,
                name,
                f"is a {_kind(member)}; bundles may contain only files, directories and links",
            )
        members_by_name[name] = member
        if member.isreg():
            total += member.size

    if total > max_bytes:
        raise BundleError(
            f"bundle archive {archive} rejected: it would extract to {_format_size(total)}, "
            f"over the limit of {_format_size(max_bytes)}"
        )

    # A member under a symlink would be written wherever the link points, so every parent
    # that is itself a member must be a directory.
    for name in members_by_name:
        parts = name.split("/")
        for depth in range(1, len(parts)):
            parent_name = "/".join(parts[:depth])
            parent = members_by_name.get(parent_name)
            if parent is not None and not parent.isdir():
                raise _reject(
                    archive, name, f"is inside {parent_name!r}, which is a {_kind(parent)}"
                )


def _move_into_place(temp_dir: Path, dest: Path) -> None:
    try:
        os.rename(temp_dir, dest)
    except OSError as exc:
        # Another process extracted the same bundle into dest while this one worked. Its
        # copy is complete because it was renamed in whole, so this copy is dropped.
        if not dest.is_dir():
            raise BundleError(f"cannot move the extracted bundle to {dest}: {exc}") from exc
        logger.debug("%s appeared during extraction; discarding %s", dest, temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def extract_bundle(
    archive: Path,
    dest: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_files: int = DEFAULT_MAX_FILES,
    max_ratio: int = DEFAULT_MAX_RATIO,
) -> None:
    """Extract ``archive`` into the new directory ``dest``.

    Every member is validated before anything is written; see ``_validate_members``. The
    files go into a temp directory beside ``dest``, which is then renamed to ``dest``, so
    ``dest`` is either missing or complete. If another process creates ``dest`` during the
    extraction, its copy wins and this one is deleted.

    Raises BundleError when ``dest`` already exists, the archive is missing, not a gzip'd
    tar, contains an unsafe member, has more than ``max_files`` members, or would extract to
    more than ``max_bytes`` or to more than ``max_ratio`` times its own size. The member list
    is read one header at a time and the count and sizes are checked as it grows, so a
    hostile archive costs at most that much decompression before it is rejected.
    """
    archive = Path(archive)
    dest = Path(dest)
    if os.path.lexists(dest):
        raise BundleError(
            f"cannot extract {archive}: {dest} already exists. Remove it or choose another "
            "destination"
        )

    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = _read_members(tar, archive, max_bytes, max_files, max_ratio)
            _validate_members(members, archive, max_bytes)

            dest.parent.mkdir(parents=True, exist_ok=True)
            temp_name = tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
            temp_dir = Path(temp_name)
            try:
                # errorlevel 2 turns failures that tarfile would only log (chmod, utime)
                # into errors, so a file never silently loses its executable bit.
                tar.errorlevel = 2
                # The data filter makes tarfile repeat similar checks, as a second defence
                # against a case that the checks above miss.
                tar.extractall(temp_dir, members=members, filter="data")
                # mkdtemp creates the directory with mode 0o700.
                os.chmod(temp_dir, _DIR_MODE)
                _move_into_place(temp_dir, dest)
            except BaseException:
                shutil.rmtree(temp_dir, ignore_errors=True)
                raise
    except FileNotFoundError as exc:
        if not archive.exists():
            raise BundleError(f"bundle archive not found: {archive}") from exc
        raise BundleError(f"cannot extract {archive} into {dest}: {exc}") from exc
    except tarfile.FilterError as exc:
        raise BundleError(
            f"bundle archive {archive} rejected by tarfile's data filter: {exc}"
        ) from exc
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
        raise BundleError(f"{archive} is not a valid bundle archive (gzip'd tar): {exc}") from exc
    except OSError as exc:
        raise BundleError(f"cannot extract {archive} into {dest}: {exc}") from exc

    logger.info("extracted bundle %s into %s (%d members)", archive, dest, len(members))


def iter_chunks(path: Path, size: int = 1024 * 1024) -> Iterator[bytes]:
    """Yield the contents of ``path`` in chunks of at most ``size`` bytes."""
    if size <= 0:
        raise ValueError(f"chunk size must be positive, got {size}")
    with open(path, "rb") as file:
        while chunk := file.read(size):
            yield chunk


def _check_digest(digest: str) -> None:
    # The digest becomes a file name, so anything but 64 lowercase hex digits could point
    # somewhere else.
    if not isinstance(digest, str) or not _DIGEST_PATTERN.fullmatch(digest):
        raise BundleError(
            f"invalid bundle digest {digest!r}: expected 64 lowercase hex digits (a sha256)"
        )


def _sha256_of(path: Path) -> str:
    sha256 = hashlib.sha256()
    for chunk in iter_chunks(path):
        sha256.update(chunk)
    return sha256.hexdigest()


class BundleWriter:
    """A chunked upload of one archive, written to a temp file until ``commit``.

    Use it as a context manager, or call ``abort`` on failure, so the temp file is removed.
    """

    def __init__(self, digest: str, final_path: Path, *, max_bytes: int | None = None) -> None:
        self.digest = digest
        self.final_path = final_path
        self._max_bytes = max_bytes
        self._sha256 = hashlib.sha256()
        self._size = 0
        fd, temp_name = tempfile.mkstemp(
            dir=final_path.parent, prefix=f".{digest}.", suffix=".upload.tmp"
        )
        self._temp_path = Path(temp_name)
        self._file = os.fdopen(fd, "wb")
        self._finished = False

    def write(self, chunk: bytes) -> None:
        """Append ``chunk`` to the upload."""
        if self._finished:
            raise ValueError(f"upload of bundle {self.digest} is already committed or aborted")
        self._size += len(chunk)
        if self._max_bytes is not None and self._size > self._max_bytes:
            self.abort()
            raise BundleError(
                f"bundle upload {self.digest} rejected: larger than the limit of "
                f"{_format_size(self._max_bytes)}; raise bundle_max_bytes in [limits] of the nodes' swarm.toml "
                "(or swarmctl up --limit) if the suite needs it"
            )
        self._sha256.update(chunk)
        try:
            self._file.write(chunk)
        except OSError as exc:
            self.abort()
            raise BundleError(f"cannot store bundle {self.digest}: {exc}") from exc

    def commit(self) -> Path:
        """Check the sha256 of the upload and move it to its final path, which it returns.

        Raises BundleError, and removes the temp file, when the sha256 differs from the
        digest.
        """
        if self._finished:
            raise ValueError(f"upload of bundle {self.digest} is already committed or aborted")
        try:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        except OSError as exc:
            self.abort()
            raise BundleError(f"cannot store bundle {self.digest}: {exc}") from exc

        actual = self._sha256.hexdigest()
        if actual != self.digest:
            self.abort()
            raise BundleError(
                f"bundle upload corrupted: expected sha256 {self.digest}, got {actual}"
            )

        os.replace(self._temp_path, self.final_path)
        self._finished = True
        logger.info("stored bundle %s (%d bytes)", self.digest, self._size)
        return self.final_path

    def abort(self) -> None:
        """Drop the upload and remove its temp file. Calling it again does nothing."""
        if self._finished:
            return
        self._finished = True
        self._file.close()
        self._temp_path.unlink(missing_ok=True)

    def __enter__(self) -> BundleWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()


class BundleCache:
    """Bundle archives and their extracted folders under one root directory.

    Layout: ``<root>/archives/<digest>.tar.gz`` and ``<root>/suites/<digest>/``, with the
    lock file ``<root>/suites/<digest>.lock`` next to each folder. Workers may cache
    compiled modules under ``<root>/bytecode/``.
    """

    def __init__(self, root: Path, limits: BundleLimits | None = None) -> None:
        self.root = Path(root)
        self.limits = limits or BundleLimits()
        self._archives = self.root / "archives"
        self._suites = self.root / "suites"
        self.bytecode_dir = self.root / "bytecode"

    def archive_path(self, digest: str) -> Path:
        """Return where the archive of ``digest`` is stored, whether or not it exists."""
        _check_digest(digest)
        return self._archives / f"{digest}.tar.gz"

    def has_archive(self, digest: str) -> bool:
        return self.archive_path(digest).is_file()

    def open_writer(self, digest: str, *, max_bytes: int | None = None) -> BundleWriter:
        """Start a chunked upload of ``digest``; ``max_bytes`` (default: the cache's limit) caps the archive size."""
        final_path = self.archive_path(digest)
        final_path.parent.mkdir(parents=True, exist_ok=True)
        return BundleWriter(digest, final_path, max_bytes=max_bytes if max_bytes is not None else self.limits.max_bytes)

    def write_archive(
        self, digest: str, chunks: Iterable[bytes], *, max_bytes: int | None = None
    ) -> Path:
        """Store the archive made of ``chunks`` under ``digest`` and return its path.

        Raises BundleError when the sha256 of the chunks is not ``digest``.
        """
        with self.open_writer(digest, max_bytes=max_bytes) as writer:
            for chunk in chunks:
                writer.write(chunk)
            return writer.commit()

    def extracted(self, digest: str) -> Path:
        """Return ``<root>/suites/<digest>/``, extracting the stored archive the first time.

        Several processes may call this at once: an flock on ``<digest>.lock`` lets one of
        them extract while the others wait, then find the folder. Raises BundleError when
        the archive is not stored or does not match its digest.
        """
        _check_digest(digest)
        folder = self._suites / digest
        # The folder appears by an atomic rename, so if it exists it is complete.
        if folder.is_dir():
            return folder

        self._suites.mkdir(parents=True, exist_ok=True)
        lock_path = self._suites / f"{digest}.lock"
        # The lock file stays in place: deleting it would let a process that opened the old
        # file and one that creates a new file both hold "the" lock.
        with open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX)
            if folder.is_dir():
                return folder
            self._remove_stale_temp_dirs(digest)
            archive = self._verified_archive(digest)
            limits = self.limits
            extract_bundle(archive, folder, max_bytes=limits.max_bytes, max_files=limits.max_files, max_ratio=limits.max_ratio)
        return folder

    def _verified_archive(self, digest: str) -> Path:
        archive = self.archive_path(digest)
        if not archive.is_file():
            raise BundleError(
                f"bundle {digest} not found in the cache at {archive}. Upload it before running"
            )
        actual = _sha256_of(archive)
        if actual != digest:
            # Removing the archive makes has_archive() false, so the next run uploads it again.
            archive.unlink(missing_ok=True)
            raise BundleError(
                f"stored bundle {archive} is corrupted: expected sha256 {digest}, got {actual}. "
                "It was removed, so upload the bundle again"
            )
        return archive

    def _remove_stale_temp_dirs(self, digest: str) -> None:
        # Called with the lock held. Every extraction of this digest through the cache holds
        # the lock, so a temp dir left for it belongs to a process that died mid-extraction.
        for stale in self._suites.glob(f".{digest}.*.tmp"):
            logger.warning("removing %s, left by an extraction that did not finish", stale)
            shutil.rmtree(stale, ignore_errors=True)
