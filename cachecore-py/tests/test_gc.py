"""GC from Python: roots, a plan looked at before anything is deleted, then applied — on caches
made by real pushes (``Cache.add``, ``Cache.push`` from the real Nix store) and by real
``nix copy``; the plan compared with what ``cachecore gc --dry-run --json`` says."""

from __future__ import annotations

import asyncio
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, List, Tuple

import pytest

import cachecore

from conftest import NixCache, make_tree, run


def two_trees(tmp_path: Path) -> Tuple[cachecore.Cache, cachecore.StorePath, cachecore.StorePath]:
    """A directory cache holding two pushed trees."""
    cache = cachecore.Cache(tmp_path / "cache")
    kept, _ = cache.add(make_tree(tmp_path / "kept"), "kept")
    gone_src = make_tree(tmp_path / "gone")
    (gone_src / "share" / "only-here").write_bytes(os.urandom(300_000))
    gone, _ = cache.add(gone_src, "gone")
    return cache, kept, gone


def nar_file(cache_dir: Path, path: cachecore.StorePath, cache: cachecore.Cache) -> Path:
    info = cache.narinfo(path)
    assert info is not None
    return cache_dir / info.url


def cli() -> str:
    found = shutil.which("cachecore")
    if found is None:
        pytest.fail("the `cachecore` command is not on PATH (.ci/test puts target/debug there)")
    return found


def read_through_serve(cache_dir: Path, paths: List[cachecore.StorePath]) -> None:
    """Reads the narinfos of ``paths`` through a real ``cachecore serve --record-access`` of
    ``cache_dir``, then stops it (which writes its access record)."""
    serve = subprocess.Popen(
        [cli(), "serve", str(cache_dir), "--listen", "127.0.0.1:0", "--record-access"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "RUST_LOG": "warn"})
    try:
        assert serve.stdout is not None
        line = serve.stdout.readline().strip()
        prefix = "cachecore serve: listening on "
        assert line.startswith(prefix), line
        served = cachecore.Cache(line[len(prefix):])
        for p in paths:
            assert served.narinfo(p) is not None
    finally:
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=30) == 0
    assert list((cache_dir / ".cachecore" / "access").iterdir())


def pushed_days_ago(cache_dir: Path, days: int, *paths: cachecore.StorePath) -> None:
    """Sets the narinfos' times (a directory cache's push times) ``days`` back."""
    then = time.time() - days * 86400
    for p in paths:
        os.utime(cache_dir / f"{p.hash_part}.narinfo", (then, then))


def test_roots_add_list_trash_restore(tmp_path: Path) -> None:
    cache, kept, gone = two_trees(tmp_path)
    assert cache.roots() == []
    root = cache.add_root("profile", [kept], host="builder-1")
    assert (root.host, root.name, root.keep, root.trashed) == ("builder-1", "profile", 1, None)
    assert root.paths == [kept] and str(root) == "builder-1/profile"
    # A series keeps its last revisions.
    cache.add_root("series", kept, host="builder-1", keep=2)
    series = cache.add_root("series", [gone], host="builder-1", keep=2)
    assert [r.paths for r in series.revisions] == [[gone], [kept]]
    assert [str(r) for r in cache.roots()] == ["builder-1/profile", "builder-1/series"]
    cache.remove_root("profile", host="builder-1")
    assert [str(r) for r in cache.roots()] == ["builder-1/series"]
    trashed = cache.roots(trashed=True)
    assert [str(r) for r in trashed] == ["builder-1/profile"]
    assert trashed[0].trashed is not None and trashed[0].paths == [kept]
    cache.restore_root("profile", host="builder-1")
    assert [str(r) for r in cache.roots()] == ["builder-1/profile", "builder-1/series"]
    with pytest.raises(cachecore.NotFound, match="no GC root builder-1/nope"):
        cache.remove_root("nope", host="builder-1")
    # The default host is this machine's name, as `cachecore roots add` takes it.
    assert cache.add_root("here", kept).host == socket.gethostname()


def test_plan_then_apply_deletes_only_the_unrooted_tree(tmp_path: Path) -> None:
    cache, kept, gone = two_trees(tmp_path)
    cache.add_root("keep", [kept], host="h")
    gone_nar = nar_file(tmp_path / "cache", gone, cache)
    kept_nar = nar_file(tmp_path / "cache", kept, cache)

    plan = cache.gc_plan(force=True)
    # The plan, before anything is deleted.
    assert [p.key for p in plan.paths] == [f"{gone.hash_part}.narinfo"]
    info = cache.narinfo(gone)
    assert info is not None
    assert (plan.paths[0].nar_size, plan.paths[0].file_size) == (info.nar_size, info.file_size)
    by_key = {o.key: o for o in plan.objects}
    assert by_key[info.url].size == gone_nar.stat().st_size
    assert not any(o.after_grace for o in plan.objects)  # force: grace 0
    assert plan.bytes_freed == sum(o.size for o in plan.objects) > 300_000
    assert plan.roots == ["h/keep"] and plan.leases == 0
    assert plan.live_paths == 1 and plan.report.dry_run
    assert "would delete 1 narinfos" in str(plan.report)
    assert cache.has(gone) and gone_nar.exists()

    report = cache.gc_apply(plan)
    assert report.ok and not report.dry_run
    assert report.narinfos_deleted == [f"{gone.hash_part}.narinfo"]
    assert sorted(report.objects_deleted) == sorted(by_key)
    assert not cache.has(gone) and not gone_nar.exists()
    assert cache.has(kept) and kept_nar.exists()
    assert cache.verify().ok
    assert list(cache.paths()) == [kept]
    # A plan is applied once.
    with pytest.raises(cachecore.Conflict, match="applied already"):
        cache.gc_apply(plan)
    assert plan.applied


def test_with_a_grace_the_objects_wait_in_a_tombstone(tmp_path: Path) -> None:
    cache, kept, gone = two_trees(tmp_path)
    cache.add_root("keep", [kept], host="h")
    gone_nar = nar_file(tmp_path / "cache", gone, cache)
    plan = cache.gc_plan(grace=datetime.timedelta(days=2))
    assert plan.objects and all(o.after_grace for o in plan.objects)
    assert plan.bytes_freed == 0 and plan.bytes_after_grace >= gone_nar.stat().st_size
    report = cache.gc_apply(plan)
    assert report.tombstone is not None and report.objects_deleted == []
    assert not cache.has(gone) and gone_nar.exists()  # the NAR waits for the grace
    # A later run with the grace over takes it.
    later = cache.gc_plan(grace=0)
    assert sorted(o.key for o in later.objects if not o.after_grace) == sorted(report.tombstoned)
    cache.gc_apply(later)
    assert not gone_nar.exists() and cache.verify().ok


def test_the_plan_is_what_the_cli_would_do(tmp_path: Path) -> None:
    cache, kept, gone = two_trees(tmp_path)
    cache.add_root("keep", [kept], host="h")
    plan = cache.gc_plan(older_than="1h", max_size="1G")
    out = run(cli(), "gc", str(tmp_path / "cache"), "--dry-run", "--json", "--older-than", "1h",
              "--max-size", "1G")
    theirs = json.loads(out)
    ours = {k: v for k, v in vars(plan.report).items() if k != "summary"}
    assert ours == theirs
    # Both were pushed just now: `older_than` keeps them.
    assert plan.paths == [] and plan.live_paths == 2


def test_gc_of_a_closure_pushed_from_real_nix(tmp_path: Path, nix_closure: List[str]) -> None:
    """Rooting a dependency keeps it; its referrers go, referrers first; Nix still
    substitutes what stays."""
    key = cachecore.SecretKey.generate("gc-1")
    cache = cachecore.Cache(tmp_path / "cache")
    cache.push(nix_closure[0], keys=[key])
    app = cachecore.StorePath(nix_closure[0])
    liba = next(cachecore.StorePath(p) for p in nix_closure if p.endswith("-py-liba"))
    libb = next(cachecore.StorePath(p) for p in nix_closure if p.endswith("-py-libb"))
    cache.add_root("app", [app], host="h")
    assert cache.gc_plan(force=True).paths == []  # the whole closure is live

    cache.remove_root("app", host="h")
    cache.add_root("lib", [liba], host="h")
    plan = cache.gc_plan(force=True)
    # py-app refers to py-libb: it goes first.
    assert [p.hash_part for p in plan.paths] == [app.hash_part, libb.hash_part]
    report = cache.gc_apply(plan)
    assert report.ok and len(report.narinfos_deleted) == 2
    assert [str(p) for p in cache.paths()] == [str(liba)]
    assert cache.verify(trusted_keys=[key.public_key()]).ok
    run("nix", "--extra-experimental-features", "nix-command", "copy", "--from",
        f"file://{tmp_path / 'cache'}", "--to", str(tmp_path / "chroot"),
        "--option", "require-sigs", "true",
        "--option", "trusted-public-keys", str(key.public_key()), str(liba))


def test_why_kept_names_the_root_whose_closure_holds_a_path(
    tmp_path: Path, nix_closure: List[str]
) -> None:
    """py-app refers to py-liba and py-libb; rooted, it keeps both, and says so per path, as
    `cachecore gc --why` does."""
    cache = cachecore.Cache(tmp_path / "cache")
    cache.push(nix_closure[0])
    app = cachecore.StorePath(nix_closure[0])
    liba = next(cachecore.StorePath(p) for p in nix_closure if p.endswith("-py-liba"))
    libb = next(cachecore.StorePath(p) for p in nix_closure if p.endswith("-py-libb"))
    cache.add_root("app", [app], host="h")
    plan = cache.gc_plan(force=True)
    why = plan.why_kept(app)
    assert why is not None
    assert (why.kind, why.roots, why.via, why.dependency) == ("root", ["h/app"], [app.hash_part], False)
    assert str(why) == "kept: named by GC root h/app"
    dep = plan.why_kept(str(liba))
    assert dep is not None and dep.dependency
    assert (dep.kind, dep.roots, dep.via) == ("root", ["h/app"], [app.hash_part, liba.hash_part])
    assert str(dep) == (f"kept: in the closure of {app.hash_part}, named by GC root h/app: "
                        f"{app.hash_part} -> {liba.hash_part}")
    out = run(cli(), "gc", str(tmp_path / "cache"), "--force", "--why", str(liba), "--why", str(app))
    assert out.splitlines() == [f"{liba}: {dep}", f"{app}: {why}"]
    assert cache.has(libb) and len(list(cache.paths())) == 3  # --why deletes nothing

    # Only the library rooted: the app and py-libb go; the library stays for its own sake.
    cache.remove_root("app", host="h")
    cache.add_root("lib", [liba], host="h")
    plan = cache.gc_plan(force=True)
    assert plan.why_kept(app) is None and plan.why_kept(libb) is None
    lib = plan.why_kept(liba)
    assert lib is not None and (lib.roots, lib.via) == (["h/lib"], [liba.hash_part])
    with pytest.raises(cachecore.NotFound, match="not in the cache"):
        plan.why_kept(f"{'0' * 32}-nothing")
    # Kept by its push time.
    plan = cache.gc_plan(older_than="1h")
    pushed = plan.why_kept(libb)
    assert pushed is not None and (pushed.kind, pushed.within) == ("pushed_within", 3600)
    assert pushed.time is not None and abs(pushed.time - time.time()) < 600
    assert "within older_than (1h)" in str(pushed)


def test_a_cache_nix_wrote_is_read_from_its_narinfos_with_progress(
    tmp_path: Path, nix_cache: NixCache
) -> None:
    """No push index: every narinfo is read, and the callback hears of each."""
    copy = tmp_path / "copy"
    shutil.copytree(nix_cache.dir, copy)
    cache = cachecore.Cache(copy)
    events: List[Tuple[str, Any]] = []
    plan = cache.gc_plan(allow_empty_roots=True, progress=lambda e, v: events.append((e, v)))
    assert events[0] == ("planned", (len(nix_cache.closure), 0, 0))
    done = sorted(v for e, v in events if e == "path_done")
    assert done == sorted(f"{cachecore.StorePath(p).hash_part}.narinfo" for p in nix_cache.closure)
    assert (plan.report.from_narinfos, plan.report.from_index) == (len(nix_cache.closure), 0)
    # No root, told that is meant: everything would go, and nothing went yet.
    assert len(plan.paths) == len(nix_cache.closure)
    assert len(list(cache.paths())) == len(nix_cache.closure)


def test_refusals(tmp_path: Path) -> None:
    cache, kept, gone = two_trees(tmp_path)
    # No root and nothing else keeping paths: refused, nothing deleted.
    with pytest.raises(cachecore.InvalidInput, match="no GC root and no --older-than"):
        cache.gc_plan()
    with pytest.raises(cachecore.InvalidInput, match="older_than"):
        cache.gc_plan(older_than="ten days")
    with pytest.raises(cachecore.InvalidInput, match="max_size"):
        cache.gc_plan(max_size="1.5G")
    with pytest.raises(ValueError, match="not both"):
        cache.gc_plan(grace="1d", force=True)
    other = cachecore.Cache(tmp_path / "other")
    other.add(make_tree(tmp_path / "t3"), "t3")
    plan = other.gc_plan(allow_empty_roots=True)
    with pytest.raises(cachecore.InvalidInput, match="plan with the cache it is applied to"):
        cache.gc_apply(plan)
    assert cache.has(kept) and cache.has(gone) and not plan.applied


def test_async(tmp_path: Path) -> None:
    cache, kept, gone = two_trees(tmp_path)

    async def main() -> cachecore.GcReport:
        await cache.add_root_async("keep", [kept], host="h")
        assert [str(r) for r in await cache.roots_async()] == ["h/keep"]
        plan = await cache.gc_plan_async(force=True)
        assert [p.hash_part for p in plan.paths] == [gone.hash_part]
        report = await cache.gc_apply_async(plan)
        await cache.remove_root_async("keep", host="h")
        await cache.restore_root_async("keep", host="h")
        return report

    report = asyncio.run(main())
    assert report.narinfos_deleted == [f"{gone.hash_part}.narinfo"]
    assert not cache.has(gone) and cache.has(kept)
    assert [str(r) for r in cache.roots()] == ["h/keep"]


def test_unused_for_keeps_what_serve_recorded_a_read_of(tmp_path: Path) -> None:
    """Both trees were pushed ten days ago; `serve --record-access` saw a read of one. With
    ``unused_for`` one day, the read one stays; by push time alone (``older_than``) both go."""
    cache, read, unread = two_trees(tmp_path)
    cache_dir = tmp_path / "cache"
    pushed_days_ago(cache_dir, 10, read, unread)
    both = sorted([read.hash_part, unread.hash_part])
    # No reads recorded yet: both unused for ten days.
    assert sorted(p.hash_part for p in cache.gc_plan(unused_for="1d", force=True).paths) == both

    read_through_serve(cache_dir, [read])
    plan = cache.gc_plan(unused_for=datetime.timedelta(days=1), force=True)
    assert [p.hash_part for p in plan.paths] == [unread.hash_part]
    assert plan.report.read_paths == 1 and plan.live_paths == 1
    kept = plan.why_kept(read)
    assert kept is not None and (kept.kind, kept.via, kept.within) == ("used_within", [read.hash_part], 86400)
    assert "pushed or read" in str(kept) and plan.why_kept(unread) is None
    assert sorted(p.hash_part for p in cache.gc_plan(older_than="1d", force=True).paths) == both
    # Eleven days is longer ago than the pushes: nothing is unused for that long.
    assert cache.gc_plan(unused_for=11 * 86400, force=True).paths == []
    # What `cachecore gc --unused-for` plans.
    out = run(cli(), "gc", str(cache_dir), "--dry-run", "--json", "--unused-for", "1d", "--force")
    assert {k: v for k, v in vars(plan.report).items() if k != "summary"} == json.loads(out)
    with pytest.raises(cachecore.InvalidInput, match="unused_for"):
        cache.gc_plan(unused_for="a day")

    async def main() -> cachecore.GcReport:
        plan = await cache.gc_plan_async(unused_for="1d", force=True)
        assert [p.hash_part for p in plan.paths] == [unread.hash_part]
        return await cache.gc_apply_async(plan)

    report = asyncio.run(main())
    assert report.narinfos_deleted == [f"{unread.hash_part}.narinfo"]
    assert cache.has(read) and not cache.has(unread) and cache.verify().ok
