"""``cachecore.Cache`` on a local directory and on a cache written by real Nix."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import random
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path
from typing import Any, List, Tuple

import pytest

import cachecore
from cachecore import nar

from conftest import NixCache, PushedCache, run


def test_add_then_read_everything_back(pushed: PushedCache, tree: Path) -> None:
    cache, path = pushed.cache, pushed.path
    h, size = nar.hash(tree)
    info = cache.narinfo(path)
    assert info is not None
    assert (info.store_path, info.nar_hash, info.nar_size) == (path, h, size)
    assert info.verify([pushed.key.public_key()])
    assert cache.has(path) and cache.has(str(path)) and cache.has(path.base_name)
    assert list(cache.paths()) == [path]
    i = cache.info()
    assert i.initialised and i.store_dir == "/nix/store" and i.priority == 40
    assert (i.paths, i.nar_bytes) == (1, size)
    assert cache.ls(path)["type"] == "directory"
    assert cache.ls(f"{path}/bin/hello")["executable"] is True
    assert cache.ls(f"{path}/link") == {"type": "symlink", "target": "share/greeting"}
    assert cache.cat(f"{path}/share/greeting") == b"hello, world\n"
    assert cache.cat(f"{path}/share/data.bin") == (tree / "share/data.bin").read_bytes()
    report = cache.verify(trusted_keys=[pushed.key.public_key()])
    assert report.ok and report.checked == 1 and report.unsigned == 0


def test_the_store_path_is_the_one_nix_store_add_gives(pushed: PushedCache, tree: Path) -> None:
    nix_path = run("nix-store", "--add", str(tree)).strip()
    assert str(pushed.path) == nix_path


def test_missing_paths(pushed: PushedCache) -> None:
    other = cachecore.StorePath("/nix/store/" + "a" * 32 + "-other")
    assert pushed.cache.narinfo(other) is None
    assert not pushed.cache.has(other)
    with pytest.raises(cachecore.NotFound) as e:
        pushed.cache.cat(f"{other}/x")
    assert isinstance(e.value, FileNotFoundError) and "other" in str(e.value)
    with pytest.raises(cachecore.NotFound, match="nope"):
        pushed.cache.ls(f"{pushed.path}/nope")
    with pytest.raises(cachecore.NotFound, match="nope"):
        pushed.cache.open(f"{pushed.path}/nope")


def test_open_reads_seeks_and_feeds_zipfile_tarfile_and_copyfileobj(
    tmp_path: Path, tree: Path
) -> None:
    # An archive inside a store path, read in place by ranges.
    (tree / "share" / "archive.zip").unlink(missing_ok=True)
    with zipfile.ZipFile(tree / "share" / "archive.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(50):
            z.writestr(f"member-{i}.txt", f"member {i}\n" * 1000)
    with tarfile.open(tree / "share" / "archive.tar", "w") as t:
        t.add(tree / "share" / "data.bin", arcname="data.bin")
    cache = cachecore.Cache(tmp_path / "cache")
    path, _ = cache.add(tree, "tree")

    with cache.open(f"{path}/share/archive.zip") as f:
        with zipfile.ZipFile(f) as z:
            assert len(z.namelist()) == 50
            assert z.read("member-37.txt") == b"member 37\n" * 1000
    with cache.open(f"{path}/share/archive.tar") as f:
        with tarfile.open(fileobj=f) as t:
            member = t.extractfile("data.bin")
            assert member is not None
            assert member.read() == (tree / "share" / "data.bin").read_bytes()
    out = io.BytesIO()
    with cache.open(f"{path}/share/data.bin") as f:
        shutil.copyfileobj(f, out)
    assert out.getvalue() == (tree / "share" / "data.bin").read_bytes()

    with cache.open(f"{path}/share/data.bin") as f:
        assert f.seek(1000) == 1000 and f.tell() == 1000
        assert f.read(4) == bytes([1000 % 256, 1001 % 256, 1002 % 256, 1003 % 256])
        f.seek(-2, os.SEEK_END)
        assert f.read() == bytes([254, 255])
        f.seek(10)
        buf = bytearray(5)
        assert f.readinto(buf) == 5 and bytes(buf) == bytes(range(10, 15))
        assert f.seek(5, os.SEEK_CUR) == 20
        raw = f.raw
        assert isinstance(raw, cachecore.CacheFile) and raw.size == 1 << 20
        assert not raw.executable
    assert f.closed
    with pytest.raises(ValueError):
        f.read(1)
    with cache.open(f"{path}/bin/hello") as f:
        assert f.raw.executable  # type: ignore[attr-defined]
        assert f.read() == b"#!/bin/sh\necho hello\n"


def test_pull_checks_signatures_and_unpacks(pushed: PushedCache, tree: Path, tmp_path: Path) -> None:
    with pytest.raises(cachecore.InvalidInput, match="trusted_keys"):
        pushed.cache.pull(pushed.path, tmp_path / "x")
    stranger = cachecore.SecretKey.generate("stranger-1").public_key()
    with pytest.raises(cachecore.Untrusted, match="test.example.org-1"):
        pushed.cache.pull(pushed.path, tmp_path / "x", trusted_keys=[stranger])
    assert not (tmp_path / "x").exists()
    pushed.cache.pull(pushed.path, tmp_path / "x", trusted_keys=[pushed.key.public_key()])
    assert nar.hash(tmp_path / "x") == nar.hash(tree)
    with pytest.raises(cachecore.Conflict):
        pushed.cache.pull(pushed.path, tmp_path / "x", check_signatures=False)
    pushed.cache.pull(pushed.path, tmp_path / "y", check_signatures=False)
    assert (tmp_path / "y" / "share" / "greeting").read_text() == "hello, world\n"


def test_copy_to_another_cache(pushed: PushedCache, tmp_path: Path) -> None:
    other = cachecore.Cache(tmp_path / "other", compression="xz")
    events: List[Tuple[str, Any]] = []
    summary = pushed.cache.copy_to(other, [pushed.path], progress=lambda e, v: events.append((e, v)))
    assert (summary.copied, summary.skipped) == (1, 0)
    assert other.narinfo(pushed.path) == pushed.cache.narinfo(pushed.path)
    assert other.verify(trusted_keys=[pushed.key.public_key()]).ok
    assert ("path_done", str(pushed.path)) in events
    again = pushed.cache.copy_to(other)
    assert (again.copied, again.skipped) == (0, 1)
    assert pushed.cache.copy_to(other, []) == cachecore.CopySummary(0, 0)
    # Recompressed on the way.
    third = cachecore.Cache(tmp_path / "third")
    pushed.cache.copy_to(third, recompress="xz")
    info = third.narinfo(pushed.path)
    assert info is not None and info.compression == "xz"
    assert third.cat(f"{pushed.path}/share/greeting") == b"hello, world\n"


def test_verify_finds_a_damaged_nar_and_untrusted_paths(pushed: PushedCache) -> None:
    info = pushed.cache.narinfo(pushed.path)
    assert info is not None
    stranger = cachecore.SecretKey.generate("stranger-1").public_key()
    report = pushed.cache.verify(trusted_keys=[stranger])
    assert not report.ok
    (problem,) = report.problems
    assert problem.kind is cachecore.Untrusted and problem.subject == str(pushed.path)
    assert "test.example.org-1" in problem.message
    nar_file = pushed.dir / info.url
    data = bytearray(nar_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    nar_file.write_bytes(bytes(data))
    report = pushed.cache.verify([pushed.path])
    assert [p.kind for p in report.problems] == [cachecore.Corrupt]
    assert str(report.problems[0]).startswith(str(pushed.path))
    assert pushed.cache.verify([]) == cachecore.VerifyReport(0, 0)


def test_reading_a_cache_nix_wrote_with_xz(nix_cache: NixCache, nix_closure: List[str]) -> None:
    cache = cachecore.Cache(nix_cache.url)
    assert sorted(str(p) for p in cache.paths()) == sorted(nix_closure)
    report = cache.verify(trusted_keys=[nix_cache.public_key])
    assert report.ok and report.checked == len(nix_closure)
    root = cachecore.StorePath(nix_cache.root)
    listing = cache.ls(root)
    assert set(listing["entries"]) == {"bin", "deps", "share"}
    assert cache.cat(f"{root}/bin/py-app") == b"py-app\n"
    assert cache.cat(f"{root}/share/salt") == Path(nix_cache.root, "share/salt").read_bytes()
    with cache.open(f"{root}/deps") as f:
        assert f.read() == Path(nix_cache.root, "deps").read_bytes()
    info = cache.narinfo(root)
    assert info is not None and info.compression == "xz"
    assert info.verify([nix_cache.public_key])


def test_push_from_the_local_nix_store_and_nix_reads_it(
    tmp_path: Path, nix_closure: List[str]
) -> None:
    key = cachecore.SecretKey.generate("pushed-1")
    cache = cachecore.Cache(tmp_path / "cache")
    events: List[Tuple[str, Any]] = []
    summary = cache.push(nix_closure[0], keys=[key], jobs=2,
                         progress=lambda e, v: events.append((e, v)))
    assert summary.pushed == len(nix_closure) and summary.unsigned == 0
    assert events[0][0] == "planned"
    assert {v for e, v in events if e == "path_done"} == set(nix_closure)
    again = cache.push([nix_closure[0]], keys=[key])
    assert (again.pushed, again.skipped) == (0, len(nix_closure))
    # Real Nix substitutes from it, checking our signatures.
    run("nix", "--extra-experimental-features", "nix-command", "copy", "--from",
        f"file://{tmp_path / 'cache'}", "--to", str(tmp_path / "chroot"),
        "--option", "require-sigs", "true",
        "--option", "trusted-public-keys", str(key.public_key()), nix_closure[0])
    assert (tmp_path / "chroot" / nix_closure[0].lstrip("/") / "bin" / "py-app").exists()


def test_push_only_the_path_needs_its_references(tmp_path: Path, nix_closure: List[str]) -> None:
    cache = cachecore.Cache(tmp_path / "cache")
    with pytest.raises(cachecore.CacheCoreError, match="reference"):
        cache.push(nix_closure[0], closure=False)
    assert cache.narinfo(nix_closure[0]) is None


def test_store_url_options_are_the_urls_settings(tmp_path: Path, tree: Path) -> None:
    key = cachecore.SecretKey.generate("url-1")
    (tmp_path / "key.sec").write_text(key.to_nix_string())
    cache = cachecore.Cache(tmp_path / "cache", compression="xz", priority=30,
                            secret_key=str(tmp_path / "key.sec"), write_nar_listing=False)
    assert "compression=xz" in cache.url
    path, _ = cache.add(tree)
    info = cache.narinfo(path)
    assert info is not None and info.compression == "xz" and info.verify([key.public_key()])
    assert cache.info().priority == 30
    assert not list((tmp_path / "cache").glob("*.ls"))
    with pytest.raises(cachecore.InvalidInput, match="compresion"):
        cachecore.Cache(tmp_path / "cache", compresion="xz")


def test_info_and_init_of_a_new_cache(tmp_path: Path) -> None:
    cache = cachecore.Cache(tmp_path / "new", priority=50)
    i = cache.info()
    assert not i.initialised and i.store_dir is None and i.paths == 0
    cache.init()
    i = cache.info()
    assert i.initialised and i.priority == 50 and i.want_mass_query is True
    assert (tmp_path / "new" / "nix-cache-info").read_text().startswith("StoreDir: /nix/store\n")


def test_hashes_of_cat_match_the_tree(pushed: PushedCache, tree: Path) -> None:
    for name in ("share/data.bin", "bin/hello", "share/greeting"):
        got = hashlib.sha256(pushed.cache.cat(f"{pushed.path}/{name}")).hexdigest()
        assert got == hashlib.sha256((tree / name).read_bytes()).hexdigest()


def cache_with_a_broken_last_narinfo(tmp_path: Path) -> Tuple[cachecore.Cache, str]:
    """2501 narinfos (no push index for 2500 of them), the last one listed broken; returns
    the cache and the broken narinfo's name."""
    src = tmp_path / "src"
    src.write_text("hi\n")
    cache = cachecore.Cache(tmp_path / "c")
    real, _ = cache.add(src)
    text = (tmp_path / "c" / f"{real.hash_part}.narinfo").read_text()
    alphabet = "0123456789abcdfghijklmnpqrsvwxyz"
    rng = random.Random(7)
    for i in range(2500):
        h = "".join(rng.choice(alphabet) for _ in range(32))
        (tmp_path / "c" / f"{h}.narinfo").write_text(
            text.replace(str(real), f"/nix/store/{h}-p{i}"))
    # The narinfo the directory lists last (the order the cache's listing reads it in).
    last = [n for n in os.listdir(tmp_path / "c") if n.endswith(".narinfo")][-1]
    bad = tmp_path / "c" / last
    bad.write_text(bad.read_text().replace("NarSize: ", "NarSize: x"))
    return cache, last


def test_paths_are_read_a_page_at_a_time(tmp_path: Path) -> None:
    """2501 narinfos, the last one listed broken: the iterator hands out the first pages
    before it reaches it (a listing collected first would fail at once), and so does
    `cachecore ls`."""
    cache, last = cache_with_a_broken_last_narinfo(tmp_path)
    paths = cache.paths()
    got: List[str] = []
    with pytest.raises(cachecore.Corrupt, match=last[: -len(".narinfo")]):
        for p in paths:
            got.append(str(p))
    assert len(got) >= 1000 and len(set(got)) == len(got)
    assert got[:1000] == sorted(got[:1000])  # a page is sorted
    # The command prints the same pages before the same error.
    cli = shutil.which("cachecore")
    assert cli is not None, "the `cachecore` command is not on PATH"
    out = subprocess.run([cli, "ls", str(tmp_path / "c")], capture_output=True, text=True)
    assert out.returncode != 0 and last.split(".")[0] in out.stderr
    assert out.stdout.splitlines() == got


def test_paths_async_is_read_a_page_at_a_time(tmp_path: Path) -> None:
    """The async twin: ``async for`` gets the same pages, then the same error."""
    cache, last = cache_with_a_broken_last_narinfo(tmp_path)
    synchronous: List[str] = []
    with pytest.raises(cachecore.Corrupt):
        for p in cache.paths():
            synchronous.append(str(p))

    async def main() -> List[str]:
        got: List[str] = []
        with pytest.raises(cachecore.Corrupt, match=last[: -len(".narinfo")]):
            async for p in cache.paths_async():
                got.append(str(p))
        return got

    got = asyncio.run(main())
    assert len(got) >= 1000 and got == synchronous

    # Leaving early is fine, and a new iteration starts from the first page.
    async def first() -> str:
        async for p in cache.paths_async():
            return str(p)
        raise AssertionError("no path")

    assert asyncio.run(first()) == synchronous[0]


def test_open_streams_front_to_back_and_reads_by_ranges_after_a_seek(tmp_path: Path) -> None:
    """A file of several zstd frames: read whole (streamed ahead), then from seeks backwards
    and forwards, then on to the end again — every byte as pushed."""
    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(3).randbytes(3 << 20) * 4
    (src / "big").write_bytes(data)
    cache = cachecore.Cache(tmp_path / "c")
    path, _ = cache.add(src, "big")
    with cache.open(f"{path}/big") as f:
        out = io.BytesIO()
        shutil.copyfileobj(f, out, 1 << 20)
        assert out.getvalue() == data
        for at, n in [(5 << 20, 1 << 20), (1, 100), (9 << 20, 7), (len(data) - 3, 10)]:
            f.seek(at)
            assert f.read(n) == data[at:at + n]
        f.seek(7 << 20)
        assert f.read() == data[7 << 20:]
    reader = cache.open(f"{path}/big", buffer_size=1 << 16)
    raw = reader.raw
    assert isinstance(raw, cachecore.CacheFile)
    buf = bytearray(1 << 20)
    assert raw.readinto(buf) > 0 and bytes(buf[:100]) == data[:100]
