"""The GIL is released, ``fork`` and ``multiprocessing`` work, asyncio works, Ctrl-C stops a
long call. No assertion here depends on timing: a released GIL is shown by Python code running
while a call is in progress; timings are printed for information."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import List, Optional

import pytest

import cachecore
from cachecore import nar

from conftest import PushedCache

BIG = 256 << 20


@pytest.fixture(scope="module")
def big_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """256 MiB of data that does not compress to nothing."""
    path = tmp_path_factory.mktemp("big") / "big.bin"
    block = os.urandom(1 << 20)
    with open(path, "wb") as f:
        for i in range(BIG >> 20):
            f.write(block[i:] + block[:i])
    return path


def test_the_gil_is_released_while_hashing(big_file: Path) -> None:
    result: List[object] = []
    worker = threading.Thread(target=lambda: result.append(nar.hash(big_file)))
    spins = 0
    worker.start()
    while worker.is_alive():
        spins += 1
    worker.join()
    assert result and isinstance(result[0], tuple)
    # Held for the whole call, the GIL would have let this loop run only at switch points
    # around the call (the interpreter switches every 5 ms, and a call holding the GIL never
    # lets it switch back).
    assert spins > 10_000, spins


def test_two_threads_hash_at_once(big_file: Path) -> None:
    start = time.perf_counter()
    alone = nar.hash(big_file)
    one = time.perf_counter() - start
    results: List[object] = []
    threads = [threading.Thread(target=lambda: results.append(nar.hash(big_file))) for _ in range(2)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    two = time.perf_counter() - start
    assert results == [alone, alone]
    # For information (a shared machine's timings are no assertion): about 1 on two free cores,
    # 2 if the calls ran one after the other.
    print(f"\none hash {one:.2f} s, two at once {two:.2f} s: ratio {two / one:.2f}", file=sys.stderr)


def test_threads_share_a_cache(pushed: PushedCache) -> None:
    errors: List[BaseException] = []

    def reader() -> None:
        try:
            for _ in range(20):
                assert pushed.cache.cat(f"{pushed.path}/share/greeting") == b"hello, world\n"
                assert pushed.cache.narinfo(pushed.path) is not None
        except BaseException as e:  # noqa: B036 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _child_uses(cache: cachecore.Cache, path: cachecore.StorePath, tree: str) -> int:
    """Runs in a forked child; returns an exit status."""
    try:
        assert cache.narinfo(path) is not None
        assert cache.cat(f"{path}/share/greeting") == b"hello, world\n"
        with cache.open(f"{path}/share/data.bin") as f:
            f.seek(256)
            assert f.read(3) == b"\x00\x01\x02"
        assert nar.hash(tree)[1] > 0
        assert cache.verify().ok
        return 0
    except BaseException as e:  # noqa: B036 (the child reports and exits)
        print(f"child failed: {e!r}", file=sys.stderr)
        return 1


def test_os_fork_child_gets_a_fresh_runtime(pushed: PushedCache, tree: Path) -> None:
    # The parent has started the runtime and opened files and connections.
    assert pushed.cache.cat(f"{pushed.path}/share/greeting") == b"hello, world\n"
    opened = pushed.cache.open(f"{pushed.path}/share/data.bin")
    opened.read(10)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # 3.12+: fork with threads running
        pid = os.fork()
    if pid == 0:
        status = _child_uses(pushed.cache, pushed.path, str(tree))
        if status == 0:
            # A file opened before the fork is re-opened in the child.
            status = 0 if opened.read(5) == bytes(range(10, 15)) else 1
        os._exit(status)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    # The parent still works.
    assert pushed.cache.verify().ok


_shared: Optional[cachecore.Cache] = None


def _read_shared(path: str) -> bytes:
    assert _shared is not None
    return _shared.cat(path)


def _read_url(args: tuple[str, str]) -> bytes:
    url, path = args
    return cachecore.Cache(url).cat(path)


def test_multiprocessing_fork(pushed: PushedCache) -> None:
    global _shared
    _shared = pushed.cache
    assert _shared.cat(f"{pushed.path}/share/greeting") == b"hello, world\n"
    names = [f"{pushed.path}/share/greeting", f"{pushed.path}/bin/hello"] * 4
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with multiprocessing.get_context("fork").Pool(2) as pool:
            got = pool.map(_read_shared, names)
    assert got == [b"hello, world\n", b"#!/bin/sh\necho hello\n"] * 4


def test_multiprocessing_spawn(pushed: PushedCache) -> None:
    url = str(pushed.dir)
    names = [(url, f"{pushed.path}/share/greeting")] * 4
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        got = pool.map(_read_url, names)
    assert got == [b"hello, world\n"] * 4


def test_asyncio(pushed: PushedCache, tree: Path, tmp_path: Path) -> None:
    async def main() -> None:
        cache = pushed.cache
        infos = await asyncio.gather(*[cache.narinfo_async(pushed.path) for _ in range(20)])
        assert all(i == infos[0] and i is not None for i in infos)
        assert await cache.has_async(pushed.path)
        assert [p async for p in cache.paths_async()] == [pushed.path]
        assert (await cache.info_async()).paths == 1
        assert await cache.cat_async(f"{pushed.path}/share/greeting") == b"hello, world\n"
        assert (await cache.ls_async(f"{pushed.path}/link"))["target"] == "share/greeting"
        report = await cache.verify_async(trusted_keys=[pushed.key.public_key()])
        assert report.ok
        other = cachecore.Cache(tmp_path / "other")
        copied = await cache.copy_to_async(other)
        assert copied.copied == 1
        await other.pull_async(pushed.path, tmp_path / "pulled", check_signatures=False)
        assert (tmp_path / "pulled" / "share" / "greeting").exists()
        path, summary = await other.add_async(tree, "again")
        assert summary.pushed == 1 and path.name == "again"
        await other.init_async()
        with pytest.raises(cachecore.NotFound):
            await cache.cat_async(f"{pushed.path}/missing")
        with pytest.raises(cachecore.Denied):
            await cachecore.Cache("http://127.0.0.1:9/").add_async(tree)

    asyncio.run(main())


def test_asyncio_cancel_stops_the_operation(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.truncate(64 << 30)  # 64 GiB of zeros: far longer to push than the test waits
    cache = cachecore.Cache(tmp_path / "cache")

    async def main() -> None:
        task = asyncio.ensure_future(cache.add_async(src, "big"))
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    # Nothing half-written: no narinfo names anything.
    assert list(cache.paths()) == []
    assert cache.verify().ok


def _interrupt_soon() -> None:
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()


def test_ctrl_c_interrupts_a_long_hash(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse"
    with open(sparse, "wb") as f:
        f.truncate(64 << 30)  # 64 GiB of zeros: minutes to hash
    _interrupt_soon()
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        nar.hash(sparse)
    assert time.monotonic() - start < 60


def test_ctrl_c_interrupts_a_push_and_leaves_nothing(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.truncate(64 << 30)
    cache = cachecore.Cache(tmp_path / "cache")
    cache.init()
    _interrupt_soon()
    with pytest.raises(KeyboardInterrupt):
        cache.add(src, "sparse")
    assert list(cache.paths()) == []
    assert not list((tmp_path / "cache").glob("*.narinfo"))
    assert cache.verify().ok
