"""Bad input raises the class of its kind, with the sentence the CLI prints."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import cachecore
from cachecore import errors


def test_every_class_has_its_builtin_base() -> None:
    assert issubclass(cachecore.NotFound, FileNotFoundError)
    assert issubclass(cachecore.InvalidInput, ValueError)
    assert issubclass(cachecore.Corrupt, ValueError)
    assert issubclass(cachecore.Unavailable, ConnectionError)
    assert issubclass(cachecore.Denied, PermissionError)
    assert issubclass(cachecore.Conflict, FileExistsError)
    assert issubclass(cachecore.Local, OSError)
    for cls in errors.BY_KIND.values():
        assert issubclass(cls, cachecore.CacheCoreError)
    assert len(errors.BY_KIND) == 10


def test_the_message_is_the_clis_sentence(tmp_path: Path, cli: str) -> None:
    url = str(tmp_path / "not-a-cache")
    (tmp_path / "not-a-cache").mkdir()
    with pytest.raises(cachecore.CacheCoreError) as e:
        cachecore.Cache(url).verify()
    out = subprocess.run([cli, "verify", url], capture_output=True, text=True)
    assert out.stderr.strip() == f"cachecore: error: {e.value}"
    assert type(e.value).kind in ("corrupt", "not found", "invalid input")


@pytest.fixture
def cli() -> str:
    import shutil

    found = shutil.which("cachecore")
    if found is None:
        pytest.fail("the `cachecore` command is not on PATH (.ci/test puts target/debug there)")
    return found


def test_bad_urls_and_options(tmp_path: Path) -> None:
    with pytest.raises(cachecore.InvalidInput, match="ssh://"):
        cachecore.Cache("ssh://builder")
    with pytest.raises(cachecore.InvalidInput, match="endpont"):
        cachecore.Cache("s3://bucket", endpont="http://127.0.0.1:1")
    with pytest.raises(cachecore.InvalidInput, match="compression"):
        cachecore.Cache(tmp_path / "c", compression="lzma9")


def test_writing_an_http_cache_without_a_token_is_denied(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(cachecore.Denied) as e:
        cachecore.Cache("http://127.0.0.1:9/cache").add(tmp_path / "f")
    assert isinstance(e.value, PermissionError)
    assert "--token-file FILE or CACHECORE_TOKEN" in str(e.value)


def test_bad_store_path_arguments(tmp_path: Path) -> None:
    cache = cachecore.Cache(tmp_path / "c")
    with pytest.raises(cachecore.InvalidInput, match="/etc/hostname"):
        cache.narinfo("/etc/hostname")
    with pytest.raises(TypeError):
        cache.narinfo(42)  # type: ignore[arg-type]


def test_a_corrupt_narinfo_in_a_cache_is_corrupt(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.write_text("hi\n")
    cache = cachecore.Cache(tmp_path / "c")
    path, _ = cache.add(src)
    narinfo = tmp_path / "c" / f"{path.hash_part}.narinfo"
    narinfo.write_text(narinfo.read_text().replace("NarSize:", "NarSize: x"))
    with pytest.raises(cachecore.Corrupt) as e:
        cache.narinfo(path)
    assert isinstance(e.value, ValueError)
    assert path.hash_part in str(e.value) and "NarSize" in str(e.value)
    report = cache.verify()
    assert [p.kind for p in report.problems] == [cachecore.Corrupt]
