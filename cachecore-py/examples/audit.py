"""Audits a Nix binary cache: paths without a trusted signature, incomplete closures, and the
biggest paths.

    python audit.py STORE_URL [--trusted-key KEY]... [--top N]

Exits 1 when a path is unsigned (or not signed by a trusted key) or a closure is incomplete.
"""

from __future__ import annotations

import argparse
import sys
from typing import Dict, List, Sequence, Tuple

import cachecore


def audit(url: str, trusted_keys: Sequence[str], top: int) -> int:
    cache = cachecore.Cache(url)
    infos: Dict[str, cachecore.NarInfo] = {}
    for path in cache.paths():
        info = cache.narinfo(path)
        if info is not None:
            infos[str(path)] = info

    if trusted_keys:
        unsigned = [p for p, i in infos.items() if not i.verify(list(trusted_keys))]
        what = "not signed by a trusted key"
    else:
        unsigned = [p for p, i in infos.items() if not i.signatures]
        what = "unsigned"
    missing: List[Tuple[str, str]] = [
        (p, str(r)) for p, i in infos.items() for r in i.references if str(r) not in infos
    ]
    biggest = sorted(infos.values(), key=lambda i: i.nar_size, reverse=True)[:top]

    print(f"{len(infos)} paths in {cache.url}")
    print(f"{len(unsigned)} {what}")
    for p in sorted(unsigned):
        print(f"  {p}")
    print(f"{len(missing)} missing references (incomplete closures)")
    for p, r in sorted(missing):
        print(f"  {p} -> {r}")
    print(f"biggest {len(biggest)} paths (NAR size)")
    for i in biggest:
        print(f"  {i.nar_size:>12}  {i.store_path}")
    return 1 if unsigned or missing else 0


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("store_url")
    parser.add_argument("--trusted-key", action="append", default=[])
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    try:
        return audit(args.store_url, args.trusted_key, args.top)
    except cachecore.CacheCoreError as e:
        print(f"audit: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
