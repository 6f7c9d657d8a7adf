"""An fsspec filesystem over binary caches (the ``cachecore[fsspec]`` extra): files inside store
paths, read by ranges, for anything that opens URLs through fsspec (pandas, pyarrow, DuckDB).

    fsspec.open("nixcache+file:///srv/cache/<hash>-<name>/share/x.parquet")
    fsspec.open("nixcache+s3://bucket/prefix/<hash>-<name>/share/x", endpoint=..., region=...)
    fsspec.open("nixcache+https://cache.example.org/<hash>-<name>/share/x")

The part of the path before the first store path base name (``<32 nix32 chars>-<name>``) is
the store (a directory, an S3 bucket and prefix, an HTTP cache); the rest is the store path and
a path inside it. Keyword arguments (``storage_options``) are ``cachecore.Cache`` options.
Read-only: every read goes through ``Cache.open`` (only the zstd frames holding the bytes read
are fetched, and checked).
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Dict, List, Optional, Tuple, Union

from fsspec.spec import AbstractFileSystem  # type: ignore[import-untyped]

from ._cache import Cache
from ._cachecore import StorePath
from .errors import NotFound

# A store path's base name: the nix32 hash part, a dash, a name.
_BASE_NAME = re.compile(r"^[0-9a-df-np-sv-z]{32}-[A-Za-z0-9+\-._?=]+$")


class NixCacheFileSystem(AbstractFileSystem):  # type: ignore[misc]
    """The files of the store paths in binary caches reached by ``store_scheme``."""

    protocol: ClassVar[Union[str, Tuple[str, ...]]] = "nixcache+file"
    store_scheme: ClassVar[str] = "file"
    root_marker = ""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._options = options
        self._stores: Dict[str, Cache] = {}

    def _split(self, path: str) -> Tuple[str, Optional[StorePath], str]:
        """(store URL, store path or None at the store's root, path inside the store path)."""
        path = self._strip_protocol(path)
        parts = path.split("/")
        for i, part in enumerate(parts):
            if _BASE_NAME.match(part):
                store = "/".join(parts[:i]).rstrip("/")
                sub = "/".join(p for p in parts[i + 1 :] if p)
                return self._store_url(store), StorePath(part), sub
        return self._store_url(path.rstrip("/")), None, ""

    def _store_url(self, store: str) -> str:
        if self.store_scheme == "file":
            return "file://" + (store if store.startswith("/") else "/" + store)
        return f"{self.store_scheme}://{store}"

    def _store(self, url: str) -> Cache:
        if url not in self._stores:
            self._stores[url] = Cache(url, **self._options)
        return self._stores[url]

    @staticmethod
    def _entry(name: str, node: Dict[str, Any]) -> Dict[str, Any]:
        kind = node["type"]
        if kind == "regular":
            return {
                "name": name,
                "size": node["size"],
                "type": "file",
                "executable": node.get("executable", False),
            }
        if kind == "directory":
            return {"name": name, "size": 0, "type": "directory"}
        return {"name": name, "size": 0, "type": "other", "destination": node.get("target")}

    def info(self, path: str, **kwargs: Any) -> Dict[str, Any]:
        name = self._strip_protocol(path).rstrip("/")
        url, store_path, sub = self._split(path)
        if store_path is None:
            return {"name": name, "size": 0, "type": "directory"}
        return self._entry(name, self._store(url).ls(f"{store_path}/{sub}" if sub else store_path))

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> List[Any]:
        name = self._strip_protocol(path).rstrip("/")
        url, store_path, sub = self._split(path)
        cache = self._store(url)
        if store_path is None:
            entries = [
                {"name": f"{name}/{p.base_name}", "size": 0, "type": "directory"}
                for p in cache.paths()
            ]
        else:
            node = cache.ls(f"{store_path}/{sub}" if sub else store_path)
            if node["type"] != "directory":
                entries = [self._entry(name, node)]
            else:
                entries = [
                    self._entry(f"{name}/{child}", n) for child, n in node["entries"].items()
                ]
        return entries if detail else [e["name"] for e in entries]

    def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        if mode != "rb":
            raise NotImplementedError(f"{self.protocol} is read-only (mode {mode!r})")
        url, store_path, sub = self._split(path)
        if store_path is None or not sub:
            raise NotFound(f"{path} names no file inside a store path")
        return self._store(url).open(f"{store_path}/{sub}")

    def cat_file(
        self, path: str, start: Optional[int] = None, end: Optional[int] = None, **kwargs: Any
    ) -> bytes:
        with self._open(path) as f:
            size = f.raw.size
            start = 0 if start is None else (start if start >= 0 else max(0, size + start))
            end = size if end is None else (end if end >= 0 else max(0, size + end))
            f.seek(start)
            data: bytes = f.read(max(0, end - start))
            return data


class NixCacheS3FileSystem(NixCacheFileSystem):
    protocol = "nixcache+s3"
    store_scheme = "s3"


class NixCacheHttpFileSystem(NixCacheFileSystem):
    protocol = "nixcache+http"
    store_scheme = "http"


class NixCacheHttpsFileSystem(NixCacheFileSystem):
    protocol = "nixcache+https"
    store_scheme = "https"
