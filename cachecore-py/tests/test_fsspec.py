"""The fsspec filesystem (``cachecore[fsspec]``): URLs into store paths, opened by fsspec."""

from __future__ import annotations

import zipfile
from pathlib import Path

import fsspec  # type: ignore[import-untyped]
import pytest

import cachecore

from conftest import Garage, PushedCache


def test_fsspec_opens_files_in_a_directory_cache(pushed: PushedCache, tree: Path) -> None:
    root = f"nixcache+file://{pushed.dir}/{pushed.path.base_name}"
    with fsspec.open(f"{root}/share/greeting", "rb") as f:
        assert f.read() == b"hello, world\n"
    with fsspec.open(f"{root}/share/greeting", "rt") as t:
        assert t.read() == "hello, world\n"
    fs, _ = fsspec.core.url_to_fs(root)
    assert fs.cat_file(f"{root}/share/data.bin", start=256, end=259) == b"\x00\x01\x02"
    assert fs.info(f"{root}/bin/hello")["type"] == "file"
    assert fs.info(f"{root}/share")["type"] == "directory"
    assert sorted(fs.ls(f"{root}/share", detail=False)) == [
        f"{pushed.dir}/{pushed.path.base_name}/share/data.bin",
        f"{pushed.dir}/{pushed.path.base_name}/share/greeting",
    ]
    assert fs.ls(f"nixcache+file://{pushed.dir}", detail=False) == [
        f"{pushed.dir}/{pushed.path.base_name}"
    ]
    assert fs.exists(f"{root}/share/greeting") and not fs.exists(f"{root}/share/nope")
    with pytest.raises(NotImplementedError):
        fs.open(f"{root}/share/new", "wb")


def test_fsspec_over_s3_reads_an_archive_by_ranges(garage: Garage, tree: Path) -> None:
    with zipfile.ZipFile(tree / "share" / "a.zip", "w") as z:
        z.writestr("x.txt", b"x" * 10000)
    s3 = cachecore.Cache(garage.url("fsspec"), **garage.options)
    path, _ = s3.add(tree, "zipped")
    url = f"nixcache+s3://nixcache/fsspec/{path.base_name}/share/a.zip"
    with fsspec.open(url, "rb", **garage.options) as f:
        assert zipfile.ZipFile(f).read("x.txt") == b"x" * 10000
