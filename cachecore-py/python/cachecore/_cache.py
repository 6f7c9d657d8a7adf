"""``cachecore.Cache``: a binary cache at a store URL. Each method converts its arguments, makes
one call into the native module (which runs the core's operation with the GIL released) and
wraps the result in the typed classes below; ``*_async`` methods return awaitables completed
from the core's runtime."""

from __future__ import annotations

import io
import json
import os
import socket
from dataclasses import dataclass, field
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    List,
    Mapping,
    Optional,
    Sequence,
    Tuple,
    Type,
    Union,
    cast,
)
from urllib.parse import quote

from . import _cachecore
from ._cachecore import NarInfo, PublicKey, SecretKey, StorePath
from ._gc import Duration, GcPlan, GcReport, Root, Size, _duration, _root, _size
from ._gc import _report as _gc_report
from .errors import BY_KIND, CacheCoreError

#: A store path argument: a ``StorePath``, a full path (``/nix/store/<hash>-<name>``, or a path
#: inside one), a base name ``<hash>-<name>``, or a symlink to one such as ``./result``.
PathArg = Union[StorePath, str, "os.PathLike[str]"]
#: Public keys, as ``PublicKey`` objects or their text (``name:base64``).
KeyArg = Union[PublicKey, str]
#: ``progress(event, value)``: ``("planned", (paths, nar_bytes, skipped))``, ``("bytes", n)``,
#: ``("path_done", store_path)``, ``("message", text)``. Called from a runtime thread.
ProgressCallback = Callable[[str, Any], None]
#: A store URL option's value (``Cache(url, compression="zstd", priority=30)``).
OptionValue = Union[str, int, bool]


def _path(p: PathArg) -> str:
    return str(p) if isinstance(p, StorePath) else os.fspath(p)


def _paths(paths: Union[PathArg, Iterable[PathArg]]) -> List[str]:
    if isinstance(paths, (str, StorePath, os.PathLike)):
        return [_path(paths)]
    return [_path(p) for p in paths]


def _keys(keys: Union[KeyArg, Iterable[KeyArg]]) -> List[KeyArg]:
    if isinstance(keys, (str, PublicKey)):
        return [keys]
    return list(keys)


#: Options that are credentials, given to the store as environment settings, not in its URL.
_CREDENTIALS = {"token": "CACHECORE_TOKEN"}


def _store_url(url: str, options: Mapping[str, OptionValue]) -> Tuple[str, List[Tuple[str, str]]]:
    """The store URL with ``options`` as query parameters (Nix's spelling: ``secret_key`` is
    ``secret-key=``), and the credential options (``aws_*``, ``token``) as environment."""
    env: List[Tuple[str, str]] = []
    query: List[str] = []
    for key, value in options.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        if key.lower().startswith("aws_") or key.lower() in _CREDENTIALS:
            env.append((_CREDENTIALS.get(key.lower(), key.upper()), text))
        else:
            query.append(f"{quote(key.replace('_', '-'))}={quote(text, safe='/:')}")
    if query:
        if "://" not in url:
            # A plain directory takes no parameters: its file:// URL does.
            url = "file://" + quote(os.path.abspath(url))
        url += ("&" if "?" in url else "?") + "&".join(query)
    return url, env


@dataclass(frozen=True)
class Info:
    """A cache's ``nix-cache-info`` (``None`` fields when it has none) and totals over its
    narinfos."""

    initialised: bool
    store_dir: Optional[str]
    want_mass_query: Optional[bool]
    priority: Optional[int]
    paths: int
    nar_bytes: int
    file_bytes: int
    #: Leftover objects of killed uploads, and their bytes.
    debris_objects: int
    debris_bytes: int


@dataclass(frozen=True)
class PushSummary:
    pushed: int
    skipped: int
    nar_bytes: int
    file_bytes: int
    #: Paths pushed without any signature (Nix refuses them by default).
    unsigned: int


@dataclass(frozen=True)
class CopySummary:
    copied: int
    skipped: int


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one object of a cache."""

    #: ``cachecore.Untrusted`` for a missing signature, ``cachecore.Corrupt`` otherwise.
    kind: Type[CacheCoreError]
    #: The store path (or narinfo key) it is about.
    subject: str
    #: One line, ``<subject>: <what is wrong>``, as ``cachecore verify`` prints it.
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class VerifyReport:
    checked: int
    #: Narinfos without any signature (counted whether or not keys were given).
    unsigned: int
    problems: List[Problem] = field(default_factory=list)
    #: Leftovers of killed uploads, ``(key, size)`` (not problems; listed for a whole cache).
    debris: List[Tuple[str, int]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _info(t: Any) -> Info:
    nix_cache_info, paths, nar_bytes, file_bytes, debris_objects, debris_bytes = t
    store_dir, want_mass_query, priority = nix_cache_info or (None, None, None)
    return Info(
        nix_cache_info is not None,
        store_dir,
        want_mass_query,
        priority,
        paths,
        nar_bytes,
        file_bytes,
        debris_objects,
        debris_bytes,
    )


def _report(t: Any) -> VerifyReport:
    checked, unsigned, problems, debris = t
    return VerifyReport(
        checked,
        unsigned,
        [Problem(BY_KIND.get(kind, CacheCoreError), subject, text) for kind, subject, text in problems],
        [(key, size) for key, size in debris],
    )


class CacheFile(io.RawIOBase):
    """A regular file inside a store path of a cache: read front to back, it is streamed a few
    frames ahead (as ``cachecore cat`` reads); after a seek, by ranges (only the zstd frames
    that hold the bytes read are fetched and checked). ``Cache.open`` returns it inside an
    ``io.BufferedReader``."""

    #: One native read fetches at most this much (Ctrl-C is seen between reads).
    _MAX_READ = 8 << 20

    def __init__(self, native: _cachecore.NativeFile, name: str) -> None:
        super().__init__()
        self._native = native
        self._pos = 0
        self.name = name

    @property
    def size(self) -> int:
        return self._native.size

    @property
    def executable(self) -> bool:
        return self._native.executable

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._checkClosed()
        view = memoryview(buffer).cast("B")
        data = self._native.read_from(self._pos, min(len(view), self._MAX_READ))
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)

    def readall(self) -> bytes:
        chunks: List[bytes] = []
        while True:
            data = self._native.read_from(self._pos, self._MAX_READ)
            if not data:
                return b"".join(chunks)
            self._pos += len(data)
            chunks.append(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self._checkClosed()
        if whence == io.SEEK_SET:
            target = offset
        elif whence == io.SEEK_CUR:
            target = self._pos + offset
        elif whence == io.SEEK_END:
            target = self.size + offset
        else:
            raise ValueError(f"invalid whence ({whence}, should be 0, 1 or 2)")
        if target < 0:
            raise ValueError(f"negative seek position {target}")
        self._pos = target
        return target

    def tell(self) -> int:
        return self._pos


class Cache:
    """A binary cache at a store URL — the URLs the ``cachecore`` command takes: a directory,
    ``file://``, ``s3://bucket?endpoint=…&region=…``, ``gs://``, ``az://``, ``http(s)://``.

    ``options`` are the URL's settings in Python spelling (``compression="zstd"``,
    ``secret_key="/etc/nix/cache.sec"``, ``endpoint=…``, ``region=…``): each becomes a query
    parameter, and one the store does not know is refused. Credentials (``aws_access_key_id``,
    ``aws_secret_access_key``, ``aws_session_token``, ``token`` for a ``cachecore serve``) are
    passed as the environment settings of the same names, never in the URL.

    A ``Cache`` can be shared by threads, and used again in a child after ``os.fork()``.
    """

    def __init__(self, url: Union[str, "os.PathLike[str]"], **options: OptionValue) -> None:
        full, env = _store_url(os.fspath(url), options)
        self._native = _cachecore.NativeCache(full, env)

    @property
    def url(self) -> str:
        """The store URL (passwords replaced by ``***``)."""
        return self._native.url

    def __repr__(self) -> str:
        return f"Cache({self.url!r})"

    # nix-cache-info and totals

    def info(self) -> Info:
        return _info(self._native.info(False))

    async def info_async(self) -> Info:
        return _info(await self._native.info(True))

    def init(self) -> None:
        """Writes ``nix-cache-info`` (from the URL's settings) unless the cache has one."""
        self._native.init(False)

    async def init_async(self) -> None:
        await self._native.init(True)

    # narinfos

    def narinfo(self, path: PathArg) -> Optional[NarInfo]:
        """The narinfo of ``path``, checked to describe ``path``, or ``None``."""
        return cast(Optional[NarInfo], self._native.narinfo(_path(path), False))

    async def narinfo_async(self, path: PathArg) -> Optional[NarInfo]:
        return cast(Optional[NarInfo], await self._native.narinfo(_path(path), True))

    def has(self, path: PathArg) -> bool:
        return cast(bool, self._native.has(_path(path), False))

    async def has_async(self, path: PathArg) -> bool:
        return cast(bool, await self._native.has(_path(path), True))

    def paths(self) -> Iterator[StorePath]:
        """The store paths in the cache, lazily: read a page (1000 narinfo keys) at a time
        from the push index, and from the narinfos it does not cover, one page ahead of the
        caller. Each page is sorted, and so is the whole on S3, GCS and Azure (which list keys
        in order); nothing is read until the first path is asked for."""
        pages = self._native.path_pages()
        while True:
            page = pages.next_page()
            if page is None:
                return
            for p in page:
                yield StorePath(p)

    async def paths_async(self) -> AsyncIterator[StorePath]:
        """``paths()`` for asyncio: ``async for path in cache.paths_async()``, a page at a time
        as ``paths()`` reads them (each page awaited, the event loop free meanwhile); an error
        is raised where the page that meets it would be."""
        pages = self._native.path_pages()
        while True:
            page = await pages.next_page(True)
            if page is None:
                return
            for p in page:
                yield StorePath(p)

    # writing

    def push(
        self,
        paths: Union[PathArg, Iterable[PathArg]],
        keys: Sequence[SecretKey] = (),
        jobs: Optional[int] = None,
        compression: Optional[str] = None,
        level: Optional[int] = None,
        listing: Optional[bool] = None,
        closure: bool = True,
        progress: Optional[ProgressCallback] = None,
    ) -> PushSummary:
        """Pushes store paths of the local Nix store and their closures (only the paths with
        ``closure=False``: their references must be in the cache already), signed with
        ``keys`` (or the URL's ``secret_key``). Settings not given come from the URL."""
        t = self._native.push(
            _paths(paths), list(keys), jobs, compression, level, listing, closure, progress, False
        )
        return PushSummary(*t)

    async def push_async(
        self,
        paths: Union[PathArg, Iterable[PathArg]],
        keys: Sequence[SecretKey] = (),
        jobs: Optional[int] = None,
        compression: Optional[str] = None,
        level: Optional[int] = None,
        listing: Optional[bool] = None,
        closure: bool = True,
        progress: Optional[ProgressCallback] = None,
    ) -> PushSummary:
        t = await self._native.push(
            _paths(paths), list(keys), jobs, compression, level, listing, closure, progress, True
        )
        return PushSummary(*t)

    def add(
        self,
        source: Union[str, "os.PathLike[str]"],
        name: Optional[str] = None,
        keys: Sequence[SecretKey] = (),
        compression: Optional[str] = None,
        level: Optional[int] = None,
        listing: Optional[bool] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> Tuple[StorePath, PushSummary]:
        """Pushes a plain file or directory as the store path ``nix-store --add`` gives it
        (named ``name``, by default the file's name)."""
        src = os.fspath(source)
        name = name if name is not None else os.path.basename(os.path.abspath(src))
        path, t = self._native.add(src, name, list(keys), compression, level, listing, progress, False)
        return path, PushSummary(*t)

    async def add_async(
        self,
        source: Union[str, "os.PathLike[str]"],
        name: Optional[str] = None,
        keys: Sequence[SecretKey] = (),
        compression: Optional[str] = None,
        level: Optional[int] = None,
        listing: Optional[bool] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> Tuple[StorePath, PushSummary]:
        src = os.fspath(source)
        name = name if name is not None else os.path.basename(os.path.abspath(src))
        path, t = await self._native.add(
            src, name, list(keys), compression, level, listing, progress, True
        )
        return path, PushSummary(*t)

    def copy_to(
        self,
        other: "Cache",
        paths: Optional[Union[PathArg, Iterable[PathArg]]] = None,
        jobs: Optional[int] = None,
        trusted_keys: Union[KeyArg, Iterable[KeyArg]] = (),
        recompress: Optional[str] = None,
        level: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> CopySummary:
        """Copies ``paths`` and their closures (every path when ``paths`` is None) into
        ``other``; with ``trusted_keys``, only paths signed by one of them."""
        listed = self._copy_paths(paths)
        if listed == []:
            return CopySummary(0, 0)
        t = self._native.copy_to(
            other._native, listed or [], jobs, _keys(trusted_keys), recompress, level, progress, False
        )
        return CopySummary(*t)

    async def copy_to_async(
        self,
        other: "Cache",
        paths: Optional[Union[PathArg, Iterable[PathArg]]] = None,
        jobs: Optional[int] = None,
        trusted_keys: Union[KeyArg, Iterable[KeyArg]] = (),
        recompress: Optional[str] = None,
        level: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
    ) -> CopySummary:
        listed = self._copy_paths(paths)
        if listed == []:
            return CopySummary(0, 0)
        t = await self._native.copy_to(
            other._native, listed or [], jobs, _keys(trusted_keys), recompress, level, progress, True
        )
        return CopySummary(*t)

    @staticmethod
    def _copy_paths(paths: Optional[Union[PathArg, Iterable[PathArg]]]) -> Optional[List[str]]:
        return None if paths is None else _paths(paths)

    def pull(
        self,
        path: PathArg,
        dest: Union[str, "os.PathLike[str]"],
        trusted_keys: Union[KeyArg, Iterable[KeyArg]] = (),
        check_signatures: bool = True,
        progress: Optional[ProgressCallback] = None,
    ) -> None:
        """Downloads ``path``, checks it (its signature by one of ``trusted_keys`` unless
        ``check_signatures=False``, its hashes and sizes) and unpacks it at ``dest``, which
        must not exist. On failure nothing is left at ``dest``."""
        self._native.pull(
            _path(path), os.fspath(dest), _keys(trusted_keys), check_signatures, progress, False
        )

    async def pull_async(
        self,
        path: PathArg,
        dest: Union[str, "os.PathLike[str]"],
        trusted_keys: Union[KeyArg, Iterable[KeyArg]] = (),
        check_signatures: bool = True,
        progress: Optional[ProgressCallback] = None,
    ) -> None:
        await self._native.pull(
            _path(path), os.fspath(dest), _keys(trusted_keys), check_signatures, progress, True
        )

    # reading store paths

    def ls(self, path: PathArg) -> dict[str, Any]:
        """The listing node of ``path`` (a store path, or a path inside one), as in Nix's
        ``.ls`` files: ``{"type": "directory", "entries": {...}}``, ``{"type": "regular",
        "size": n, "executable": true, "narOffset": n}``, ``{"type": "symlink", "target": t}``."""
        result: dict[str, Any] = json.loads(self._native.ls(_path(path), False))
        return result

    async def ls_async(self, path: PathArg) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(await self._native.ls(_path(path), True))
        return result

    def cat(self, path: PathArg) -> bytes:
        """The contents of the regular file ``path`` (inside a store path), read by ranges."""
        return cast(bytes, self._native.cat(_path(path), False))

    async def cat_async(self, path: PathArg) -> bytes:
        return cast(bytes, await self._native.cat(_path(path), True))

    def open(self, path: PathArg, buffer_size: int = 4 << 20) -> io.BufferedReader:
        """The regular file ``path`` (inside a store path) as a binary file object: ``read``,
        ``readinto``, ``seek``, ``tell``, a context manager; ``zipfile``, ``tarfile`` and
        ``shutil.copyfileobj`` take it. Reads fetch only the frames they need; the buffer is
        one frame of a seekable NAR (4 MiB, the core's default frame), as a frame is decoded
        whole whatever part of it is read."""
        text = _path(path)
        raw = CacheFile(self._native.open(text), text)
        return io.BufferedReader(raw, buffer_size=buffer_size)

    # checking

    def verify(
        self,
        paths: Optional[Union[PathArg, Iterable[PathArg]]] = None,
        trusted_keys: Union[KeyArg, Iterable[KeyArg]] = (),
        jobs: Optional[int] = None,
    ) -> VerifyReport:
        """Checks ``paths`` and their closures (the whole cache when None): narinfos, NAR
        hashes and sizes, listings, and with ``trusted_keys`` a trusted signature on each."""
        listed = [] if paths is None else _paths(paths)
        if paths is not None and not listed:
            return VerifyReport(0, 0)
        return _report(self._native.verify(listed, _keys(trusted_keys), jobs, False))

    async def verify_async(
        self,
        paths: Optional[Union[PathArg, Iterable[PathArg]]] = None,
        trusted_keys: Union[KeyArg, Iterable[KeyArg]] = (),
        jobs: Optional[int] = None,
    ) -> VerifyReport:
        listed = [] if paths is None else _paths(paths)
        if paths is not None and not listed:
            return VerifyReport(0, 0)
        return _report(await self._native.verify(listed, _keys(trusted_keys), jobs, True))

    # garbage collection

    def roots(self, trashed: bool = False) -> List[Root]:
        """The cache's GC roots, of every host (``trashed=True``: the trashed ones)."""
        return [_root(t) for t in self._native.roots(trashed, False)]

    async def roots_async(self, trashed: bool = False) -> List[Root]:
        return [_root(t) for t in await self._native.roots(trashed, True)]

    def add_root(
        self,
        name: str,
        paths: Union[PathArg, Iterable[PathArg]],
        host: Optional[str] = None,
        keep: Optional[int] = None,
    ) -> Root:
        """Roots ``paths`` (and their closures) as ``host/name`` (``host``: this machine's
        name), replacing the root of that name; with ``keep``, the root is a series whose last
        ``keep`` revisions stay rooted. Returns the root written."""
        return _root(self._native.add_root(name, _paths(paths), _host(host), keep, False))

    async def add_root_async(
        self,
        name: str,
        paths: Union[PathArg, Iterable[PathArg]],
        host: Optional[str] = None,
        keep: Optional[int] = None,
    ) -> Root:
        return _root(await self._native.add_root(name, _paths(paths), _host(host), keep, True))

    def remove_root(self, name: str, host: Optional[str] = None) -> None:
        """Moves root ``host/name`` to the trash (``restore_root`` brings it back)."""
        self._native.remove_root(name, _host(host), False, False)

    async def remove_root_async(self, name: str, host: Optional[str] = None) -> None:
        await self._native.remove_root(name, _host(host), False, True)

    def restore_root(self, name: str, host: Optional[str] = None) -> None:
        """Moves trashed root ``host/name`` back (refused if a root of that name exists)."""
        self._native.remove_root(name, _host(host), True, False)

    async def restore_root_async(self, name: str, host: Optional[str] = None) -> None:
        await self._native.remove_root(name, _host(host), True, True)

    def gc_plan(
        self,
        older_than: Optional[Duration] = None,
        max_size: Optional[Size] = None,
        grace: Optional[Duration] = None,
        failed_uploads_older_than: Optional[Duration] = None,
        only_trashed: bool = False,
        allow_empty_roots: bool = False,
        delete_unparseable: bool = False,
        force: bool = False,
        jobs: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
        unused_for: Optional[Duration] = None,
    ) -> GcPlan:
        """Reads the cache (its roots, the push index, the narinfos it does not cover) and
        plans a GC run as ``cachecore gc`` does, with its options; deletes nothing. Live is the
        closure of the roots, of paths pushed within ``older_than``, of paths pushed or read
        within ``unused_for`` (reads as ``cachecore serve --record-access`` records them), of
        the paths of pushes in progress; with ``max_size``, the most recently used other paths
        that fit. ``force``: grace 0 (the objects of deleted narinfos go in the same run; for
        caches no one writes to).
        ``progress`` hears ``("planned", (narinfos to read, 0, paths from the index))`` and
        ``("path_done", key)`` for each narinfo read."""
        args = self._gc_args(older_than, unused_for, max_size, grace, failed_uploads_older_than,
                             force)
        native = self._native.gc_plan(
            *args, only_trashed, allow_empty_roots, delete_unparseable, jobs, progress, False
        )
        return GcPlan(native)

    async def gc_plan_async(
        self,
        older_than: Optional[Duration] = None,
        max_size: Optional[Size] = None,
        grace: Optional[Duration] = None,
        failed_uploads_older_than: Optional[Duration] = None,
        only_trashed: bool = False,
        allow_empty_roots: bool = False,
        delete_unparseable: bool = False,
        force: bool = False,
        jobs: Optional[int] = None,
        progress: Optional[ProgressCallback] = None,
        unused_for: Optional[Duration] = None,
    ) -> GcPlan:
        args = self._gc_args(older_than, unused_for, max_size, grace, failed_uploads_older_than,
                             force)
        native = await self._native.gc_plan(
            *args, only_trashed, allow_empty_roots, delete_unparseable, jobs, progress, True
        )
        return GcPlan(native)

    @staticmethod
    def _gc_args(
        older_than: Optional[Duration],
        unused_for: Optional[Duration],
        max_size: Optional[Size],
        grace: Optional[Duration],
        failed_uploads_older_than: Optional[Duration],
        force: bool,
    ) -> Tuple[Optional[str], Optional[str], Optional[str], Optional[str], Optional[str]]:
        if force:
            if grace is not None:
                raise ValueError("give grace or force=True, not both (force is grace 0)")
            grace = 0
        return (
            _duration(older_than),
            _duration(unused_for),
            _size(max_size),
            _duration(grace),
            _duration(failed_uploads_older_than),
        )

    def gc_apply(self, plan: GcPlan) -> GcReport:
        """Carries out ``plan`` (made by ``gc_plan`` on this cache; once): tombstone, narinfos
        referrers first (each re-checked just before its delete), then objects, in the order
        that never breaks a closure. Failed deletes are in ``report.failures``."""
        return _gc_report(self._native.gc_apply(plan._native, False))

    async def gc_apply_async(self, plan: GcPlan) -> GcReport:
        return _gc_report(await self._native.gc_apply(plan._native, True))


def _host(host: Optional[str]) -> str:
    """``host``, or this machine's name (as ``cachecore roots`` takes it)."""
    return host if host is not None else socket.gethostname()
