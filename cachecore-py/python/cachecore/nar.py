"""NARs (Nix ARchives): pack, unpack, hash and list, streaming over binary file objects.

Nothing holds a whole NAR in memory: ``pack`` writes to ``file.write`` and ``unpack`` and
``listing`` read from ``file.read`` one chunk (at most 1 MiB) at a time, with the GIL released
in between.
"""

from __future__ import annotations

import json
import os
from typing import Any, Optional, Protocol, Tuple, Union

from . import _cachecore

StrPath = Union[str, "os.PathLike[str]"]


class BinaryReader(Protocol):
    """What ``unpack`` and ``listing`` read from: ``read(n)`` returning ``bytes``."""

    def read(self, size: int, /) -> bytes: ...


class BinaryWriter(Protocol):
    """What ``pack`` writes to: ``write(b)`` returning how many bytes it took (or None: all)."""

    def write(self, data: bytes, /) -> Optional[int]: ...


def pack(path: StrPath, file: BinaryWriter) -> None:
    """Writes the NAR of the file, directory or symlink at ``path`` to ``file`` (the bytes
    ``nix-store --dump`` writes)."""
    _cachecore.nar_pack(os.fspath(path), file)


def unpack(file: BinaryReader, dest: StrPath) -> None:
    """Unpacks the NAR read from ``file`` at ``dest``, which must not exist
    (``nix-store --restore``). On failure nothing is left at ``dest``."""
    _cachecore.nar_unpack(file, os.fspath(dest))


def hash(path: StrPath, algo: str = "sha256") -> Tuple[str, int]:
    """The NAR hash of ``path`` (``sha256:<nix32>``, as ``nix-hash --type sha256 --base32``
    with the prefix) and its NAR size in bytes."""
    return _cachecore.nar_hash(os.fspath(path), algo)


def listing(source: Union[StrPath, BinaryReader]) -> dict[str, Any]:
    """The listing (Nix's ``.ls`` JSON, with each file's ``narOffset``) of a NAR read from a
    binary file object, or of the tree at a path."""
    if isinstance(source, (str, os.PathLike)):
        text = _cachecore.nar_listing_of_tree(os.fspath(source))
    else:
        text = _cachecore.nar_listing_of_file(source)
    result: dict[str, Any] = json.loads(text)
    return result


__all__ = ["pack", "unpack", "hash", "listing", "BinaryReader", "BinaryWriter"]
