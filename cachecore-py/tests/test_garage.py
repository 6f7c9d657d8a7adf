"""``cachecore.Cache`` on S3 (a real Garage server), with credentials given as options."""

from __future__ import annotations

import io
import secrets
import zipfile
from pathlib import Path

import pytest

import cachecore

from conftest import Garage, PushedCache


def test_push_read_copy_and_verify_on_s3(garage: Garage, pushed: PushedCache, tree: Path, tmp_path: Path) -> None:
    prefix = secrets.token_hex(4)
    s3 = cachecore.Cache(garage.url(prefix), **garage.options)
    assert "aws_secret" not in s3.url and garage.options["aws_secret_access_key"] not in s3.url
    summary = pushed.cache.copy_to(s3, trusted_keys=[pushed.key.public_key()])
    assert summary.copied == 1
    assert [str(p) for p in s3.paths()] == [str(pushed.path)]
    assert s3.narinfo(pushed.path) == pushed.cache.narinfo(pushed.path)
    assert s3.cat(f"{pushed.path}/share/data.bin") == (tree / "share" / "data.bin").read_bytes()
    with s3.open(f"{pushed.path}/share/data.bin") as f:
        f.seek(512 * 1024 + 3)
        assert f.read(2) == bytes([3, 4])
    assert s3.verify(trusted_keys=[pushed.key.public_key()]).ok
    s3.pull(pushed.path, tmp_path / "pulled", trusted_keys=[pushed.key.public_key()])
    assert (tmp_path / "pulled" / "bin" / "hello").read_text() == "#!/bin/sh\necho hello\n"
    # Pushed straight to S3, and read back as an archive inside a store path.
    (tree / "share" / "a.zip").write_bytes(_zip())
    path, pushed_now = s3.add(tree, "with-zip", keys=[pushed.key])
    assert pushed_now.pushed == 1
    with s3.open(f"{path}/share/a.zip") as f:
        assert zipfile.ZipFile(f).read("x.txt") == b"x" * 10000


def _zip() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        z.writestr("x.txt", b"x" * 10000)
    return out.getvalue()


def test_wrong_credentials_are_denied(garage: Garage) -> None:
    options = dict(garage.options, aws_secret_access_key="wrong" * 8)
    s3 = cachecore.Cache(garage.url("denied"), **options)
    with pytest.raises(cachecore.Denied) as e:
        s3.info()
    assert isinstance(e.value, PermissionError)
    assert "wrong" not in str(e.value)


def test_an_unreachable_store_is_unavailable(garage: Garage) -> None:
    options = dict(garage.options, endpoint="http://127.0.0.1:9")
    s3 = cachecore.Cache(garage.url("nowhere"), **options)
    with pytest.raises(cachecore.Unavailable) as e:
        s3.narinfo("/nix/store/" + "a" * 32 + "-x")
    assert isinstance(e.value, ConnectionError)
