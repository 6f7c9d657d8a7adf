"""Store paths, narinfos, keys and NARs, checked against real Nix."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

import cachecore
from cachecore import nar

from conftest import NixCache, run

HELLO = "/nix/store/7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12"


def test_store_path_parses_full_paths_and_base_names() -> None:
    p = cachecore.StorePath(HELLO)
    assert (p.hash_part, p.name) == ("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz", "hello-2.12")
    assert str(p) == HELLO
    assert p.base_name == "7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-hello-2.12"
    assert p == cachecore.StorePath(p.base_name)
    assert len({p, cachecore.StorePath(HELLO)}) == 1
    assert repr(p) == f"StorePath('{HELLO}')"


@pytest.mark.parametrize(
    "text, says",
    [
        ("/nix/store/short-hello", "short"),
        ("/usr/bin/hello", "/usr/bin/hello"),
        ("7h7qgvs4kgzsn8a6rb273saxyqh4jxlz-", "name"),
        ("eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee-hel lo", "hel lo"),
    ],
)
def test_bad_store_paths_are_invalid_input_naming_the_path(text: str, says: str) -> None:
    with pytest.raises(cachecore.InvalidInput) as e:
        cachecore.StorePath(text)
    assert isinstance(e.value, ValueError)
    assert says in str(e.value)


def test_narinfo_written_by_nix_prints_back_byte_for_byte(nix_cache: NixCache) -> None:
    infos = sorted(nix_cache.dir.glob("*.narinfo"))
    assert len(infos) == len(nix_cache.closure)
    for file in infos:
        text = file.read_text()
        info = cachecore.NarInfo.parse(text)
        assert str(info) == text
        assert cachecore.NarInfo.parse(file.read_bytes()) == info
        assert str(info.store_path) in nix_cache.closure
        assert info.compression == "xz"
        assert info.url.startswith("nar/") and info.url.endswith(".nar.xz")
        assert info.verify([nix_cache.public_key])
        assert info.valid_signatures([cachecore.PublicKey(nix_cache.public_key)]) == ["nix-test-1"]


def test_narinfo_fields_fingerprint_and_what_nix_says(nix_cache: NixCache) -> None:
    root = cachecore.StorePath(nix_cache.root)
    info = cachecore.NarInfo.parse((nix_cache.dir / f"{root.hash_part}.narinfo").read_text())
    got = run("nix", "--extra-experimental-features", "nix-command", "path-info", "--json",
              "--store", nix_cache.url, nix_cache.root)
    import json

    (nix,) = json.loads(got)
    def sri(h: str) -> str:
        return run("nix", "--extra-experimental-features", "nix-command", "hash", "to-sri", h).strip()

    assert sri(info.nar_hash) == nix["narHash"]
    assert info.nar_size == nix["narSize"]
    assert sorted(str(r) for r in info.references) == sorted(nix["references"])
    assert info.file_size == nix["downloadSize"]
    assert info.file_hash is not None and sri(info.file_hash) == nix["downloadHash"]
    assert info.deriver is not None and str(info.deriver).endswith("py-app.drv")
    assert info.system is None or isinstance(info.system, str)
    refs = ",".join(sorted(str(r) for r in info.references))
    assert info.fingerprint() == f"1;{nix_cache.root};{info.nar_hash};{nix['narSize']};{refs}"
    public = cachecore.PublicKey(nix_cache.public_key)
    (sig,) = info.signatures
    assert public.verify(info.fingerprint().encode(), sig)
    assert not public.verify(b"something else", sig)


def test_sign_and_verify() -> None:
    text = (
        f"StorePath: {HELLO}\nURL: nar/x.nar\nCompression: none\n"
        "NarHash: sha256:1sj0vx2bq4q6c3dh8s1lk2whbp5gqxf7q1ri2k8b6fcmh0rbz5ap\nNarSize: 226552\n"
        "References: \n"
    )
    info = cachecore.NarInfo.parse(text)
    key = cachecore.SecretKey.generate("cache.example.org-1")
    other = cachecore.SecretKey.generate("other-1")
    assert not info.verify([key.public_key()])
    info.sign(key)
    info.sign(key)  # replaces
    assert len(info.signatures) == 1 and info.signatures[0].startswith("cache.example.org-1:")
    assert info.verify([key.public_key()])
    assert info.verify([str(key.public_key())])
    assert not info.verify([other.public_key()])
    assert str(info) == text + f"Sig: {info.signatures[0]}\n"
    # A signature is over the fingerprint: a changed narinfo no longer verifies.
    tampered = cachecore.NarInfo.parse(str(info).replace("NarSize: 226552", "NarSize: 226553"))
    assert not tampered.verify([key.public_key()])


def test_bad_narinfo_is_invalid_input_with_its_line() -> None:
    with pytest.raises(cachecore.InvalidInput, match="narinfo line 2"):
        cachecore.NarInfo.parse(f"StorePath: {HELLO}\nNarSize: lots\n")
    with pytest.raises(cachecore.InvalidInput, match="StorePath"):
        cachecore.NarInfo.parse("URL: nar/x.nar\n")
    with pytest.raises(cachecore.InvalidInput, match="UTF-8"):
        cachecore.NarInfo.parse(b"StorePath: \xff\n")


def test_keys_interoperate_with_nix(tmp_path: Path) -> None:
    secret_text = run("nix", "--extra-experimental-features", "nix-command", "key",
                      "generate-secret", "--key-name", "interop-1")
    (tmp_path / "key.sec").write_text(secret_text)
    nix_public = run("nix", "--extra-experimental-features", "nix-command", "key",
                     "convert-secret-to-public", stdin=open(tmp_path / "key.sec")).strip()
    for loaded in (
        cachecore.SecretKey.load(secret_text),
        cachecore.SecretKey.load(tmp_path / "key.sec"),
        cachecore.SecretKey.load(str(tmp_path / "key.sec")),
    ):
        assert loaded.name == "interop-1"
        assert str(loaded.public_key()) == nix_public
        assert loaded.public_key() == cachecore.PublicKey(nix_public)
    ours = cachecore.SecretKey.generate("ours-1")
    (tmp_path / "ours.sec").write_text(ours.to_nix_string())
    converted = run("nix", "--extra-experimental-features", "nix-command", "key",
                    "convert-secret-to-public", stdin=open(tmp_path / "ours.sec")).strip()
    assert converted == str(ours.public_key())
    assert "ours-1" in repr(ours) and ours.to_nix_string() not in repr(ours)


def test_bad_keys_raise_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(cachecore.InvalidInput):
        cachecore.PublicKey("cache.nixos.org-1:not base64")
    with pytest.raises(cachecore.InvalidInput, match="cannot read secret key file"):
        cachecore.SecretKey.load(tmp_path / "missing.sec")
    public = str(cachecore.SecretKey.generate("x-1").public_key())
    with pytest.raises(cachecore.InvalidInput):
        cachecore.SecretKey.load(public)  # a public key is not a secret key
    with pytest.raises(cachecore.InvalidInput):
        cachecore.SecretKey.generate("bad:name")


def test_pack_is_nix_store_dump_and_hash_is_nix_hash(tree: Path, tmp_path: Path) -> None:
    with open(tmp_path / "tree.nar", "wb") as f:
        nar.pack(tree, f)
    dumped = subprocess_bytes("nix-store", "--dump", str(tree))
    assert (tmp_path / "tree.nar").read_bytes() == dumped
    h, size = nar.hash(tree)
    assert h == "sha256:" + run("nix-hash", "--type", "sha256", "--base32", str(tree)).strip()
    assert size == len(dumped)
    sha512, size512 = nar.hash(str(tree), algo="sha512")
    assert sha512.startswith("sha512:") and size512 == size
    with pytest.raises(cachecore.InvalidInput, match="sha3"):
        nar.hash(tree, algo="sha3")


def subprocess_bytes(*args: str) -> bytes:
    import subprocess

    return subprocess.run(args, check=True, capture_output=True).stdout


def test_unpack_restores_what_nix_restores(tree: Path, tmp_path: Path) -> None:
    dumped = subprocess_bytes("nix-store", "--dump", str(tree))
    nar.unpack(io.BytesIO(dumped), tmp_path / "out")
    assert subprocess_bytes("nix-store", "--dump", str(tmp_path / "out")) == dumped
    assert os.access(tmp_path / "out" / "bin" / "hello", os.X_OK)
    assert os.readlink(tmp_path / "out" / "link") == "share/greeting"
    # The destination must not exist; nothing is overwritten.
    with pytest.raises(cachecore.Conflict) as e:
        nar.unpack(io.BytesIO(dumped), tmp_path / "out")
    assert isinstance(e.value, FileExistsError)


def test_unpack_of_a_truncated_nar_leaves_nothing(tree: Path, tmp_path: Path) -> None:
    dumped = subprocess_bytes("nix-store", "--dump", str(tree))
    with pytest.raises(cachecore.InvalidInput) as e:
        nar.unpack(io.BytesIO(dumped[: len(dumped) // 2]), tmp_path / "half")
    assert "NAR" in str(e.value) or "nar" in str(e.value)
    assert not (tmp_path / "half").exists()


def test_listing_of_a_tree_and_of_a_nar_stream(tree: Path) -> None:
    dumped = subprocess_bytes("nix-store", "--dump", str(tree))
    of_tree = nar.listing(tree)
    of_nar = nar.listing(io.BytesIO(dumped))
    assert of_tree == of_nar
    assert of_tree["version"] == 1
    entries = of_tree["root"]["entries"]
    assert entries["link"] == {"type": "symlink", "target": "share/greeting"}
    hello = entries["bin"]["entries"]["hello"]
    assert hello["executable"] is True and hello["size"] == len("#!/bin/sh\necho hello\n")
    greeting = entries["share"]["entries"]["greeting"]
    at = greeting["narOffset"]
    assert dumped[at : at + greeting["size"]] == b"hello, world\n"


class ExplodingWriter:
    def __init__(self, after: int) -> None:
        self.left = after

    def write(self, b: bytes) -> int:
        self.left -= len(b)
        if self.left < 0:
            raise OSError(28, "No space left on device (test)")
        return len(b)


def test_an_exception_from_the_file_object_is_raised_as_it_was(tree: Path) -> None:
    with pytest.raises(OSError, match="No space left on device \\(test\\)") as e:
        nar.pack(tree, ExplodingWriter(after=1000))
    assert not isinstance(e.value, cachecore.CacheCoreError)


def test_a_text_file_object_is_refused(tree: Path, tmp_path: Path) -> None:
    with open(tmp_path / "x.nar", "wb") as f:
        nar.pack(tree, f)
    with open(tmp_path / "x.nar", "r", encoding="latin-1") as text:
        with pytest.raises(TypeError):
            nar.listing(text)  # type: ignore[arg-type]


def test_pack_of_a_missing_path_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(cachecore.NotFound) as e:
        nar.hash(tmp_path / "nope")
    assert isinstance(e.value, FileNotFoundError)
    assert "nope" in str(e.value)
