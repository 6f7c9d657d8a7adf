"""Fixtures with real parts: trees on disk, caches in local directories, a closure built and
copied by real Nix (``NIX_REMOTE=local``), and a Garage S3 server (the binary the Rust tests
use: ``$GARAGE_BIN``, on ``PATH`` or in ``~/.cargo/bin``; missing, the tests that need it fail)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List

import pytest

import cachecore

os.environ.setdefault("NIX_REMOTE", "local")


def run(*args: str, **kwargs: object) -> str:
    """Runs a command and returns its stdout; fails the test with its stderr."""
    out = subprocess.run(args, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    assert out.returncode == 0, f"{' '.join(args)} failed ({out.returncode}):\n{out.stderr}"
    return str(out.stdout)


def make_tree(root: Path) -> Path:
    """A small tree with a directory, an executable, a symlink and a file of some size."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "hello").write_text("#!/bin/sh\necho hello\n")
    (root / "bin" / "hello").chmod(0o755)
    (root / "share").mkdir()
    (root / "share" / "data.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB
    (root / "share" / "greeting").write_text("hello, world\n")
    (root / "link").symlink_to("share/greeting")
    return root


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "tree")


@dataclass
class PushedCache:
    cache: cachecore.Cache
    dir: Path
    path: cachecore.StorePath
    key: cachecore.SecretKey


@pytest.fixture
def pushed(tmp_path: Path, tree: Path) -> PushedCache:
    """A local-directory cache holding ``tree`` (pushed with ``Cache.add``), signed."""
    key = cachecore.SecretKey.generate("test.example.org-1")
    cache = cachecore.Cache(str(tmp_path / "cache"))
    path, summary = cache.add(tree, "tree", keys=[key])
    assert summary.pushed == 1
    return PushedCache(cache, tmp_path / "cache", path, key)


# Real Nix: a closure of three paths with references, no nixpkgs needed.
CLOSURE_NIX = r"""
let mk = name: deps: derivation {
  inherit name; system = builtins.currentSystem; builder = "/bin/sh";
  args = [ "-c" ''
    /bin/mkdir -p $out/bin $out/share
    for d in ${toString deps}; do echo "$d" >> $out/deps; done
    echo ${name} > $out/bin/${name}; /bin/chmod +x $out/bin/${name}
    /bin/ln -s ../deps $out/bin/link
    echo "${name} @SALT@" > $out/share/salt
  '' ]; };
  a = mk "py-liba" []; b = mk "py-libb" [ a ];
in mk "py-app" [ a b ]
"""


@dataclass
class NixCache:
    dir: Path
    url: str
    root: str
    closure: List[str]
    public_key: str
    secret_file: Path


@pytest.fixture(scope="session")
def nix_closure(tmp_path_factory: pytest.TempPathFactory) -> List[str]:
    """A closure built by real Nix; its root first."""
    # Builders run as nixbld users: the expression must be world-readable.
    work = Path(tempfile_dir(tmp_path_factory, "nix"))
    expr = work / "closure.nix"
    expr.write_text(CLOSURE_NIX.replace("@SALT@", secrets.token_hex(8)))
    root = run("nix-build", str(expr), "--no-out-link").strip().splitlines()[-1]
    closure = run("nix-store", "-qR", root).split()
    return [root] + [p for p in closure if p != root]


def tempfile_dir(factory: pytest.TempPathFactory, name: str) -> str:
    d = factory.mktemp(name)
    for p in [d, *d.parents]:
        if str(p) in ("/", "/tmp"):
            break
        os.chmod(p, os.stat(p).st_mode | 0o755)
    return str(d)


@pytest.fixture(scope="session")
def nix_cache(tmp_path_factory: pytest.TempPathFactory, nix_closure: List[str]) -> NixCache:
    """The closure copied by real Nix into a file:// cache, xz-compressed and signed."""
    work = tmp_path_factory.mktemp("nixcache")
    secret = work / "key.sec"
    secret.write_text(run("nix", "--extra-experimental-features", "nix-command", "key",
                          "generate-secret", "--key-name", "nix-test-1"))
    public = run("nix", "--extra-experimental-features", "nix-command", "key",
                 "convert-secret-to-public", stdin=open(secret)).strip()
    cache_dir = work / "cache"
    url = f"file://{cache_dir}?compression=xz&write-nar-listing=true&secret-key={secret}"
    run("nix", "--extra-experimental-features", "nix-command", "copy", "--to", url, nix_closure[0])
    return NixCache(cache_dir, f"file://{cache_dir}", nix_closure[0], nix_closure, public, secret)


def free_ports(n: int) -> List[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def garage_bin() -> str:
    given = os.environ.get("GARAGE_BIN")
    if given:
        return given
    found = shutil.which("garage")
    if found:
        return found
    home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
    candidate = os.path.join(home, "bin", "garage")
    if os.path.exists(candidate):
        return candidate
    pytest.fail("the Garage tests need the `garage` binary: run .ci/garage (or set GARAGE_BIN)")


@dataclass
class Garage:
    endpoint: str
    options: Dict[str, str]

    def url(self, prefix: str) -> str:
        return f"s3://nixcache/{prefix}"


@pytest.fixture(scope="session")
def garage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Garage]:
    """A single-node Garage with bucket ``nixcache`` and a read-write key."""
    binary = garage_bin()
    work = tmp_path_factory.mktemp("garage")
    rpc, s3, admin = free_ports(3)
    config = work / "garage.toml"
    config.write_text(f"""metadata_dir = "{work}/meta"
data_dir = "{work}/data"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc}"
rpc_public_addr = "127.0.0.1:{rpc}"
rpc_secret = "{secrets.token_hex(32)}"

[s3_api]
s3_region = "garage"
api_bind_addr = "127.0.0.1:{s3}"
root_domain = ".s3.garage.localhost"

[admin]
api_bind_addr = "127.0.0.1:{admin}"
admin_token = "{secrets.token_hex(16)}"
""")
    log = open(work / "garage.log", "w")
    server = subprocess.Popen([binary, "-c", str(config), "server"], stdout=log, stderr=log,
                              stdin=subprocess.DEVNULL, env=dict(os.environ, RUST_LOG="garage=warn"))
    cli = [binary, "-c", str(config)]
    try:
        deadline = time.monotonic() + 60
        while subprocess.run(cli + ["status"], capture_output=True).returncode != 0:
            assert server.poll() is None, (work / "garage.log").read_text()
            assert time.monotonic() < deadline, "garage did not start in 60 s"
            time.sleep(0.2)
        node = run(*cli, "node", "id", "-q").strip().split("@")[0]
        run(*cli, "layout", "assign", "-z", "dc1", "-c", "1G", node)
        run(*cli, "layout", "apply", "--version", "1")
        deadline = time.monotonic() + 60
        while subprocess.run(cli + ["bucket", "create", "nixcache"], capture_output=True).returncode != 0:
            assert time.monotonic() < deadline, "garage did not create the bucket in 60 s"
            time.sleep(0.5)
        key = run(*cli, "key", "create", "test-key")
        fields = {}
        for line in key.splitlines():
            if ":" in line:
                name, value = line.split(":", 1)
                fields[name.strip().lower()] = value.strip()
        run(*cli, "bucket", "allow", "--read", "--write", "--owner", "nixcache", "--key", "test-key")
        endpoint = f"http://127.0.0.1:{s3}"
        yield Garage(endpoint, {
            "endpoint": endpoint,
            "region": "garage",
            "aws_access_key_id": fields["key id"],
            "aws_secret_access_key": fields["secret key"],
        })
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()
