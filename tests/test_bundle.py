"""Tests of swarmctl.bundle: deterministic builds, safe extraction and the bundle cache."""

from __future__ import annotations

import hashlib
import io
import logging
import multiprocessing
import os
import stat
import tarfile
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmctl.bundle import (
    EXCLUDED_NAMES,
    EXCLUDED_SUFFIXES,
    Bundle,
    BundleCache,
    BundleLimits,
    build_bundle,
    extract_bundle,
    iter_chunks,
)
from swarmctl.errors import BundleError


def _make_suite(folder: Path) -> Path:
    (folder / "tests" / "data").mkdir(parents=True)
    (folder / "tests" / "test_a.py").write_text("def test_a():\n    assert True\n")
    (folder / "tests" / "data" / "input.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "empty_dir").mkdir()
    script = folder / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    (folder / "conftest.py").write_text("")
    return folder


def _tree(folder: Path) -> dict[str, object]:
    """Return the names, contents, exec bits and link targets under ``folder``."""
    found: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = Path(dirpath, name)
            relative = path.relative_to(folder).as_posix()
            if path.is_symlink():
                found[relative] = ("symlink", os.readlink(path))
            elif path.is_dir():
                found[relative] = ("dir",)
            else:
                executable = bool(path.stat().st_mode & stat.S_IXUSR)
                found[relative] = ("file", path.read_bytes(), executable)
    return found


def _archive_names(archive: Path) -> list[str]:
    with tarfile.open(archive, "r:gz") as tar:
        return tar.getnames()


def _hash_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- build_bundle -------------------------------------------------------------------------


def test_build_returns_bundle_fields(tmp_path):
    suite = _make_suite(tmp_path / "suite")

    bundle = build_bundle(suite, tmp_path / "out")

    assert isinstance(bundle, Bundle)
    assert bundle.path == tmp_path / "out" / f"{bundle.digest}.tar.gz"
    assert bundle.digest == _hash_file(bundle.path)
    assert bundle.size == bundle.path.stat().st_size
    assert bundle.files == 4
    assert list((tmp_path / "out").iterdir()) == [bundle.path]


def test_build_twice_same_digest(tmp_path):
    suite = _make_suite(tmp_path / "suite")

    first = build_bundle(suite, tmp_path / "out1")
    second = build_bundle(suite, tmp_path / "out2")

    assert first.digest == second.digest
    assert first.path.read_bytes() == second.path.read_bytes()


def test_build_ignores_mtime(tmp_path):
    suite = _make_suite(tmp_path / "suite")
    before = build_bundle(suite, tmp_path / "out1")

    for path in [suite, *suite.rglob("*")]:
        os.utime(path, (1_700_000_000, 1_700_000_000))
    after = build_bundle(suite, tmp_path / "out2")

    assert after.digest == before.digest


def test_build_ignores_umask_bits(tmp_path):
    suite = _make_suite(tmp_path / "suite")
    before = build_bundle(suite, tmp_path / "out1")

    (suite / "conftest.py").chmod(0o664)
    (suite / "run.sh").chmod(0o775)
    (suite / "tests").chmod(0o775)
    after = build_bundle(suite, tmp_path / "out2")

    assert after.digest == before.digest


def test_build_content_change_new_digest(tmp_path):
    suite = _make_suite(tmp_path / "suite")
    before = build_bundle(suite, tmp_path / "out1")

    (suite / "tests" / "test_a.py").write_text("def test_a():\n    assert False\n")
    after = build_bundle(suite, tmp_path / "out2")

    assert after.digest != before.digest


def test_build_exec_bit_change_new_digest(tmp_path):
    suite = _make_suite(tmp_path / "suite")
    before = build_bundle(suite, tmp_path / "out1")

    (suite / "run.sh").chmod(0o644)
    after = build_bundle(suite, tmp_path / "out2")

    assert after.digest != before.digest


def test_build_gzip_header_fixed(tmp_path):
    suite = _make_suite(tmp_path / "suite")

    data = build_bundle(suite, tmp_path / "out").path.read_bytes()

    flags = data[3]
    assert data[4:8] == b"\0\0\0\0", "gzip mtime must be 0"
    assert not flags & 0x08, "gzip header must not carry a file name"


def test_build_entry_metadata_fixed(tmp_path):
    suite = _make_suite(tmp_path / "suite")

    bundle = build_bundle(suite, tmp_path / "out")

    with tarfile.open(bundle.path, "r:gz") as tar:
        members = tar.getmembers()
    assert {member.mtime for member in members} == {946684800}
    assert {(member.uid, member.gid, member.uname, member.gname) for member in members} == {
        (0, 0, "", "")
    }
    names = [member.name for member in members]
    assert names == sorted(names, key=lambda name: name.split("/"))


def test_exec_bit_survives_round_trip(tmp_path):
    suite = _make_suite(tmp_path / "suite")
    bundle = build_bundle(suite, tmp_path / "out")

    extract_bundle(bundle.path, tmp_path / "dest")

    script_mode = (tmp_path / "dest" / "run.sh").stat().st_mode
    plain_mode = (tmp_path / "dest" / "conftest.py").stat().st_mode
    assert script_mode & 0o111 == 0o111
    assert plain_mode & 0o111 == 0
    assert _tree(tmp_path / "dest") == _tree(suite)


def test_build_skips_excluded_names(tmp_path):
    suite = _make_suite(tmp_path / "suite")
    for name in EXCLUDED_NAMES:
        (suite / name).mkdir()
        (suite / name / "junk.txt").write_text("junk")
    (suite / "tests" / "__pycache__").mkdir()
    (suite / "tests" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    (suite / "stray.pyc").write_bytes(b"\0")
    (suite / "tests" / ".git").write_text("gitdir: ../.git/modules/tests\n")
    (suite / "env" / "lib").mkdir(parents=True)
    (suite / "env" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (suite / "env" / "lib" / "site.py").write_text("")

    bundle = build_bundle(suite, tmp_path / "out")

    names = _archive_names(bundle.path)
    clean = build_bundle(_make_suite(tmp_path / "clean"), tmp_path / "out_clean")
    assert names == _archive_names(clean.path)
    for name in names:
        parts = name.split("/")
        assert not EXCLUDED_NAMES.intersection(parts), name
        assert not name.endswith(EXCLUDED_SUFFIXES), name
        assert parts[0] != "env", name


def test_build_skips_dest_dir_inside_folder(tmp_path):
    suite = _make_suite(tmp_path / "suite")

    first = build_bundle(suite, suite / "bundles")
    second = build_bundle(suite, suite / "bundles")

    assert second.digest == first.digest
    assert not any(name.startswith("bundles") for name in _archive_names(second.path))


def test_build_dest_dir_is_folder_rejected(tmp_path):
    suite = _make_suite(tmp_path / "suite")

    with pytest.raises(BundleError, match="into the folder itself"):
        build_bundle(suite, suite)


def test_symlink_inside_kept_relative(tmp_path):
    suite = _make_suite(tmp_path / "suite")
    (suite / "link_rel").symlink_to("tests/test_a.py")
    (suite / "tests" / "link_abs").symlink_to(suite / "conftest.py")
    (suite / "link_dir").symlink_to(suite / "tests" / "data")

    bundle = build_bundle(suite, tmp_path / "out")
    extract_bundle(bundle.path, tmp_path / "dest")

    dest = tmp_path / "dest"
    assert os.readlink(dest / "link_rel") == "tests/test_a.py"
    assert os.readlink(dest / "tests" / "link_abs") == "../conftest.py"
    assert os.readlink(dest / "link_dir") == "tests/data"
    assert (dest / "link_rel").read_text() == (suite / "tests" / "test_a.py").read_text()
    assert (dest / "link_dir" / "input.bin").is_file()


def test_symlink_outside_rejected(tmp_path):
    suite = _make_suite(tmp_path / "suite")
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (suite / "tests" / "escape").symlink_to(outside)

    with pytest.raises(BundleError) as raised:
        build_bundle(suite, tmp_path / "out")

    message = str(raised.value)
    assert "tests/escape" in message
    assert str(outside) in message
    assert "copy" in message
    assert "remove" in message
    assert not list((tmp_path / "out").iterdir())


def test_symlink_relative_escape_rejected(tmp_path):
    suite = _make_suite(tmp_path / "suite")
    (suite / "up").symlink_to("../..")

    with pytest.raises(BundleError, match=r"up -> \.\./\.\."):
        build_bundle(suite, tmp_path / "out")


def test_fifo_skipped_with_warning(tmp_path, caplog):
    suite = _make_suite(tmp_path / "suite")
    os.mkfifo(suite / "pipe")

    with caplog.at_level(logging.WARNING, logger="swarmctl.bundle"):
        bundle = build_bundle(suite, tmp_path / "out")

    assert "pipe" not in _archive_names(bundle.path)
    assert any("pipe" in record.getMessage() for record in caplog.records)


def test_build_over_limit_lists_largest(tmp_path):
    suite = _make_suite(tmp_path / "suite")
    (suite / "big.dat").write_bytes(b"x" * 50_000)
    (suite / "tests" / "bigger.dat").write_bytes(b"x" * 80_000)

    with pytest.raises(BundleError) as raised:
        build_bundle(suite, tmp_path / "out", max_bytes=100_000)

    message = str(raised.value)
    assert str(suite) in message
    assert "97.7 KiB" in message
    assert message.index("tests/bigger.dat") < message.index("big.dat (")
    assert "Remove them" in message
    assert not list((tmp_path / "out").iterdir())


def test_build_missing_folder(tmp_path):
    missing = tmp_path / "nope"

    with pytest.raises(BundleError, match="not found") as raised:
        build_bundle(missing, tmp_path / "out")

    assert str(missing) in str(raised.value)


def test_build_folder_is_file(tmp_path):
    file = tmp_path / "suite.py"
    file.write_text("")

    with pytest.raises(BundleError, match="not a directory") as raised:
        build_bundle(file, tmp_path / "out")

    assert str(file) in str(raised.value)


# --- extract_bundle: malicious archives ---------------------------------------------------


def _file(name: str, data: bytes = b"evil") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor = 1
        info.devminor = 3
    return info, None


def _dir(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE
    info.mode = 0o755
    return info, None


def _write_tar(path: Path, members) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


@pytest.fixture
def layout(tmp_path):
    """Return (area, dest, absolute victim path): dest lies in area, victims outside it."""
    area = tmp_path / "area"
    area.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    return area, area / "dest", victim


_MALICIOUS = {
    "absolute name": lambda victim: [_file("ok.txt"), _file(str(victim.parent / "abs_written"))],
    "dotdot name": lambda victim: [_file("ok.txt"), _file("../x")],
    "dotdot inside name": lambda victim: [_dir("a"), _file("a/../../x")],
    "symlink to etc": lambda victim: [_special("etc", tarfile.SYMTYPE, "/etc")],
    "symlink then write": lambda victim: [
        _special("etc", tarfile.SYMTYPE, "/etc"),
        _file("etc/evil.conf"),
    ],
    "symlink relative escape": lambda victim: [_special("up", tarfile.SYMTYPE, "../../..")],
    "write through inner symlink": lambda victim: [
        _dir("sub"),
        _special("here", tarfile.SYMTYPE, "."),
        _file("here/x"),
    ],
    "hardlink escaping": lambda victim: [_special("h", tarfile.LNKTYPE, "../../victim.txt")],
    "hardlink absolute": lambda victim: [_special("h", tarfile.LNKTYPE, str(victim))],
    "hardlink to missing": lambda victim: [_special("h", tarfile.LNKTYPE, "victim.txt")],
    "character device": lambda victim: [_special("null", tarfile.CHRTYPE)],
    "block device": lambda victim: [_special("disk", tarfile.BLKTYPE)],
    "fifo": lambda victim: [_special("pipe", tarfile.FIFOTYPE)],
    "duplicate name": lambda victim: [_file("a.txt", b"one"), _file("a.txt", b"two")],
    "duplicate after normalizing": lambda victim: [_file("a.txt"), _file("./a.txt")],
    "file under file": lambda victim: [_file("a"), _file("a/b")],
}

_EXPECTED_REASON = {
    "absolute name": "absolute name",
    "dotdot name": r"'\.\.' component",
    "dotdot inside name": r"'\.\.' component",
    "symlink to etc": "absolute path '/etc'",
    "symlink then write": "absolute path '/etc'",
    "symlink relative escape": "outside the destination",
    "write through inner symlink": "inside 'here', which is a symlink",
    "hardlink escaping": "outside the destination",
    "hardlink absolute": "absolute path",
    "hardlink to missing": "not a regular file before it",
    "character device": "character device",
    "block device": "block device",
    "fifo": "FIFO",
    "duplicate name": "more than once",
    "duplicate after normalizing": "more than once",
    "file under file": "which is a regular file",
}


@pytest.mark.parametrize("case", sorted(_MALICIOUS))
def test_extract_rejects_malicious(case, tmp_path, layout):
    area, dest, victim = layout
    archive = _write_tar(tmp_path / "evil.tar.gz", _MALICIOUS[case](victim))

    with pytest.raises(BundleError, match=_EXPECTED_REASON[case]) as raised:
        extract_bundle(archive, dest)

    assert "rejected" in str(raised.value)
    assert not dest.exists()
    assert list(area.iterdir()) == [], "nothing may be written beside dest"
    assert victim.read_text() == "original"
    assert not (tmp_path / "abs_written").exists()
    assert not (tmp_path / "x").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["area", "evil.tar.gz", "victim.txt"]


def test_extract_data_filter_backstop(tmp_path, monkeypatch, layout):
    area, dest, victim = layout
    archive = _write_tar(tmp_path / "evil.tar.gz", [_special("etc", tarfile.SYMTYPE, "/etc")])
    monkeypatch.setattr("swarmctl.bundle._validate_members", lambda *args: None)

    with pytest.raises(BundleError, match="data filter"):
        extract_bundle(archive, dest)

    assert list(area.iterdir()) == []


def test_extract_rejects_oversized(tmp_path):
    members = [_file("a", b"x" * 2000), _file("b", b"y" * 2000)]
    archive = _write_tar(tmp_path / "big.tar.gz", members)

    with pytest.raises(BundleError, match="over the limit"):
        extract_bundle(archive, tmp_path / "dest", max_bytes=3000)

    assert not (tmp_path / "dest").exists()


def test_extract_rejects_too_many_files(tmp_path):
    archive = _write_tar(tmp_path / "many.tar.gz", [_file(f"f{i}.txt", b"x") for i in range(51)])

    with pytest.raises(BundleError, match="more than 50 members"):
        extract_bundle(archive, tmp_path / "dest", max_files=50)

    assert not (tmp_path / "dest").exists()
    extract_bundle(archive, tmp_path / "dest", max_files=51)
    assert len(list((tmp_path / "dest").iterdir())) == 51


def test_extract_rejects_zip_bomb_ratio(tmp_path):
    # 4 MiB of zeros compress to about 4 KiB: a ratio near 1,000, under the size limit.
    archive = _write_tar(tmp_path / "bomb.tar.gz", [_file("zeros.bin", bytes(4 * 1024**2))])

    with pytest.raises(BundleError, match="more than 200 times its size"):
        extract_bundle(archive, tmp_path / "dest")

    assert not (tmp_path / "dest").exists()
    extract_bundle(archive, tmp_path / "dest", max_ratio=5000)
    assert (tmp_path / "dest" / "zeros.bin").stat().st_size == 4 * 1024**2


def test_cache_applies_its_limits(tmp_path):
    suite = tmp_path / "suite"
    suite.mkdir()
    for i in range(3):
        (suite / f"test_{i}.py").write_text("def test_ok():\n    pass\n")
    bundle = build_bundle(suite, tmp_path / "out")
    cache = BundleCache(tmp_path / "cache", BundleLimits(max_files=2))
    cache.write_archive(bundle.digest, [bundle.path.read_bytes()])

    with pytest.raises(BundleError, match="more than 2 members"):
        cache.extracted(bundle.digest)
    with pytest.raises(BundleError, match="larger than the limit of 10 bytes"):
        BundleCache(tmp_path / "small", BundleLimits(max_bytes=10)).write_archive(bundle.digest, [bundle.path.read_bytes()])


def test_extract_allows_inner_hardlink(tmp_path):
    archive = _write_tar(
        tmp_path / "ok.tar.gz",
        [_file("a.txt", b"shared"), _special("b.txt", tarfile.LNKTYPE, "a.txt")],
    )

    extract_bundle(archive, tmp_path / "dest")

    assert (tmp_path / "dest" / "b.txt").read_bytes() == b"shared"


def test_extract_not_an_archive(tmp_path):
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"this is not gzip")

    with pytest.raises(BundleError, match="not a valid bundle archive"):
        extract_bundle(junk, tmp_path / "dest")

    assert not (tmp_path / "dest").exists()


def test_extract_missing_archive(tmp_path):
    with pytest.raises(BundleError, match="not found"):
        extract_bundle(tmp_path / "nope.tar.gz", tmp_path / "dest")


def test_extract_dest_exists(tmp_path):
    bundle = build_bundle(_make_suite(tmp_path / "suite"), tmp_path / "out")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep.txt").write_text("keep")

    with pytest.raises(BundleError, match="already exists"):
        extract_bundle(bundle.path, tmp_path / "dest")

    assert [p.name for p in (tmp_path / "dest").iterdir()] == ["keep.txt"]


def test_extract_lost_race_keeps_winner(tmp_path, monkeypatch):
    bundle = build_bundle(_make_suite(tmp_path / "suite"), tmp_path / "out")
    dest = tmp_path / "area" / "dest"
    real_extractall = tarfile.TarFile.extractall

    def extract_then_lose_race(self, *args, **kwargs):
        real_extractall(self, *args, **kwargs)
        dest.mkdir()
        (dest / "winner.txt").write_text("other process")

    monkeypatch.setattr(tarfile.TarFile, "extractall", extract_then_lose_race)

    extract_bundle(bundle.path, dest)

    assert [p.name for p in dest.iterdir()] == ["winner.txt"]
    assert [p.name for p in dest.parent.iterdir()] == ["dest"]


# --- BundleCache --------------------------------------------------------------------------


def test_cache_write_and_extract(tmp_path):
    bundle = build_bundle(_make_suite(tmp_path / "suite"), tmp_path / "out")
    cache = BundleCache(tmp_path / "cache")

    assert not cache.has_archive(bundle.digest)
    stored = cache.write_archive(bundle.digest, iter_chunks(bundle.path, size=100))
    folder = cache.extracted(bundle.digest)

    assert stored == cache.archive_path(bundle.digest)
    assert cache.has_archive(bundle.digest)
    assert stored.read_bytes() == bundle.path.read_bytes()
    assert folder == tmp_path / "cache" / "suites" / bundle.digest
    assert _tree(folder) == _tree(tmp_path / "suite")
    assert cache.extracted(bundle.digest) == folder


def test_cache_corrupted_upload_rejected(tmp_path):
    bundle = build_bundle(_make_suite(tmp_path / "suite"), tmp_path / "out")
    data = bytearray(bundle.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    cache = BundleCache(tmp_path / "cache")

    with pytest.raises(BundleError) as raised:
        cache.write_archive(bundle.digest, [bytes(data)])

    actual = hashlib.sha256(bytes(data)).hexdigest()
    assert str(raised.value) == (
        f"bundle upload corrupted: expected sha256 {bundle.digest}, got {actual}"
    )
    assert not cache.has_archive(bundle.digest)
    assert list((tmp_path / "cache" / "archives").iterdir()) == []


def test_cache_writer_chunked_commit(tmp_path):
    bundle = build_bundle(_make_suite(tmp_path / "suite"), tmp_path / "out")
    cache = BundleCache(tmp_path / "cache")

    writer = cache.open_writer(bundle.digest)
    for chunk in iter_chunks(bundle.path, size=7):
        writer.write(chunk)
    path = writer.commit()

    assert path.read_bytes() == bundle.path.read_bytes()
    assert list(path.parent.iterdir()) == [path]


def test_cache_writer_abort_removes_temp(tmp_path):
    cache = BundleCache(tmp_path / "cache")
    digest = "a" * 64

    writer = cache.open_writer(digest)
    writer.write(b"partial")
    writer.abort()
    writer.abort()

    assert list((tmp_path / "cache" / "archives").iterdir()) == []
    with pytest.raises(ValueError):
        writer.write(b"more")


def test_cache_writer_over_limit(tmp_path):
    cache = BundleCache(tmp_path / "cache")

    with pytest.raises(BundleError, match="larger than the limit"):
        cache.write_archive("b" * 64, [b"x" * 10, b"x" * 10], max_bytes=15)

    assert list((tmp_path / "cache" / "archives").iterdir()) == []


@pytest.mark.parametrize(
    "digest",
    ["", "../" + "a" * 61, "A" * 64, "a" * 63, "a" * 65, "g" * 64, "a" * 63 + "\n"],
)
def test_cache_invalid_digest(tmp_path, digest):
    cache = BundleCache(tmp_path / "cache")

    with pytest.raises(BundleError, match="invalid bundle digest"):
        cache.archive_path(digest)
    with pytest.raises(BundleError, match="invalid bundle digest"):
        cache.extracted(digest)
    with pytest.raises(BundleError, match="invalid bundle digest"):
        cache.write_archive(digest, [b""])


def test_cache_extracted_without_archive(tmp_path):
    cache = BundleCache(tmp_path / "cache")

    with pytest.raises(BundleError, match="not found in the cache"):
        cache.extracted("c" * 64)


def test_cache_extracted_corrupted_archive(tmp_path):
    bundle = build_bundle(_make_suite(tmp_path / "suite"), tmp_path / "out")
    cache = BundleCache(tmp_path / "cache")
    stored = cache.write_archive(bundle.digest, iter_chunks(bundle.path))
    with open(stored, "ab") as file:
        file.write(b"garbage")

    with pytest.raises(BundleError, match="corrupted"):
        cache.extracted(bundle.digest)

    assert not cache.has_archive(bundle.digest)
    assert not (tmp_path / "cache" / "suites" / bundle.digest).exists()


def test_cache_removes_stale_temp_dir(tmp_path):
    bundle = build_bundle(_make_suite(tmp_path / "suite"), tmp_path / "out")
    cache = BundleCache(tmp_path / "cache")
    cache.write_archive(bundle.digest, iter_chunks(bundle.path))
    stale = tmp_path / "cache" / "suites" / f".{bundle.digest}.dead.tmp"
    stale.mkdir(parents=True)
    (stale / "half.py").write_text("")

    folder = cache.extracted(bundle.digest)

    assert not stale.exists()
    assert folder.is_dir()


def _extract_in_process(root: str, digest: str, barrier, results) -> None:
    barrier.wait()
    results.put(str(BundleCache(Path(root)).extracted(digest)))


def test_cache_concurrent_extracted(tmp_path):
    suite = tmp_path / "suite"
    for index in range(300):
        directory = suite / f"pkg{index % 10}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"test_{index}.py").write_text(f"def test_{index}():\n    pass\n" * 20)
    bundle = build_bundle(suite, tmp_path / "out")
    cache = BundleCache(tmp_path / "cache")
    cache.write_archive(bundle.digest, iter_chunks(bundle.path))

    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [
        context.Process(
            target=_extract_in_process, args=(str(cache.root), bundle.digest, barrier, results)
        )
        for _ in range(2)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=30)

    assert [process.exitcode for process in processes] == [0, 0]
    paths = {results.get(timeout=5), results.get(timeout=5)}
    folder = tmp_path / "cache" / "suites" / bundle.digest
    assert paths == {str(folder)}
    assert _tree(folder) == _tree(suite)
    leftovers = sorted(p.name for p in folder.parent.iterdir())
    assert leftovers == [bundle.digest, f"{bundle.digest}.lock"]


def test_iter_chunks_sizes(tmp_path):
    path = tmp_path / "data"
    path.write_bytes(b"0123456789")

    assert list(iter_chunks(path, size=4)) == [b"0123", b"4567", b"89"]
    with pytest.raises(ValueError):
        list(iter_chunks(path, size=0))


# --- round trip property ------------------------------------------------------------------

_NAME = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="/\x00"),
    min_size=1,
    max_size=12,
).filter(
    lambda name: name not in {".", ".."}
    and name not in EXCLUDED_NAMES
    and name != "pyvenv.cfg"  # would mark its directory as a virtualenv, which is skipped
    and not name.endswith(EXCLUDED_SUFFIXES)
    and len(name.encode("utf-8")) <= 255
)
_LEAF = st.tuples(st.binary(max_size=64), st.booleans())
_TREE = st.dictionaries(
    _NAME,
    st.recursive(
        _LEAF, lambda children: st.dictionaries(_NAME, children, max_size=4), max_leaves=10
    ),
    min_size=1,
    max_size=4,
)


def _materialize(folder: Path, tree: dict) -> None:
    folder.mkdir(exist_ok=True)
    for name, node in tree.items():
        path = folder / name
        if isinstance(node, dict):
            _materialize(path, node)
        else:
            data, executable = node
            path.write_bytes(data)
            path.chmod(0o755 if executable else 0o644)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_TREE)
def test_round_trip_arbitrary_tree(tree):
    with tempfile.TemporaryDirectory() as temp:
        base = Path(temp)
        _materialize(base / "suite", tree)

        bundle = build_bundle(base / "suite", base / "out")
        extract_bundle(bundle.path, base / "dest")

        assert _tree(base / "dest") == _tree(base / "suite")
