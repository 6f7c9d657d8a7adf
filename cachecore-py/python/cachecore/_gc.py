"""Garbage collection from Python: GC roots, and a GC run planned (``Cache.gc_plan``), looked
at, then carried out (``Cache.gc_apply``). What is garbage and the order of deletes are the
core's (``cachecore::gc``, the same as ``cachecore gc``); these classes hold what it returns."""

from __future__ import annotations

import datetime
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any, Dict, List, Optional, Tuple, Union

from . import _cachecore
from ._cachecore import StorePath

#: A duration: a ``datetime.timedelta``, a number of seconds, or text as ``cachecore gc``
#: takes it (``"30d"``, ``"6h"``, ``"90m"``, ``"45s"``, ``"2w"``).
Duration = Union[datetime.timedelta, int, str]
#: A size: a number of bytes, or text as ``--max-size`` takes it (``"500G"``, ``"10M"``).
Size = Union[int, str]


def _duration(value: Optional[Duration]) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime.timedelta):
        value = int(value.total_seconds())
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a duration is a timedelta, whole seconds or text like '30d', not {value!r}")
    return f"{value}s"


def _size(value: Optional[Size]) -> Optional[str]:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"a size is whole bytes or text like '500G', not {value!r}")
    return str(value)


@dataclass(frozen=True)
class RootRevision:
    #: Unix seconds.
    added: int
    paths: List[StorePath]


@dataclass(frozen=True)
class Root:
    """A GC root of a cache, ``gcroots/<host>/<name>``: the store paths it keeps (their
    closures stay), in revisions, newest first."""

    host: str
    name: str
    #: How many revisions it keeps.
    keep: int
    #: For a trashed root: when it was removed (Unix seconds).
    trashed: Optional[int]
    revisions: List[RootRevision]

    @property
    def paths(self) -> List[StorePath]:
        """Every store path it keeps (of all its revisions)."""
        return [p for r in self.revisions for p in r.paths]

    def __str__(self) -> str:
        return f"{self.host}/{self.name}"


def _root(t: Any) -> Root:
    host, name, keep, trashed, revisions = t
    return Root(host, name, keep, trashed, [RootRevision(a, [StorePath(p) for p in ps]) for a, ps in revisions])


@dataclass(frozen=True)
class GcReport:
    """What a run did (or, ``dry_run``, would do); the fields of ``cachecore gc --json``.
    ``str()`` is the summary line ``cachecore gc`` prints."""

    dry_run: bool
    #: Root objects read (live, trashed).
    roots: int
    trashed_roots: int
    #: Root paths the cache has no narinfo for.
    missing_root_paths: int
    #: Paths with a narinfo that stay.
    live_paths: int
    #: Narinfo keys deleted (``<hash>.narinfo``), in order.
    narinfos_deleted: List[str]
    #: Object keys recorded in this run's tombstone, deleted by a run after the grace.
    tombstoned: List[str]
    #: The tombstone written, if any.
    tombstone: Optional[str]
    #: NARs, listings, logs and realisations deleted.
    objects_deleted: List[str]
    #: Of ``objects_deleted``, the orphans (objects no narinfo names, from killed uploads).
    orphans_deleted: int
    #: Objects left because something names them again, or they were rewritten since the scan.
    objects_kept_on_recheck: List[str]
    bytes_freed: int
    #: Bytes recorded in the tombstone, freed by a later run.
    bytes_after_grace: int
    #: Narinfos that do not parse (``key: why``): kept unless ``delete_unparseable``.
    unparseable: List[str]
    unparseable_deleted: int
    realisations_deleted: int
    #: Unrooted paths kept to fill ``max_size``.
    kept_for_size: int
    #: Orphan NARs kept because some narinfo does not parse.
    orphans_kept_for_unparseable: int
    #: Dead paths in reference cycles (a corrupt cache).
    in_cycles: int
    #: Deletes that failed (``key: error``); a failed narinfo delete stops the run.
    failures: List[str]
    #: Paths read from the push index, and from their narinfos.
    from_index: int
    from_narinfos: int
    #: Push index objects and entries not used (the narinfos were read instead).
    index_problems: List[str]
    #: Paths whose last read through ``cachecore serve --record-access`` is known.
    read_paths: int = 0
    #: Access records that do not parse (``key: why``), left alone.
    access_problems: List[str] = field(default_factory=list)
    summary: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures

    def __str__(self) -> str:
        return self.summary


_REPORT_FIELDS = {f.name for f in fields(GcReport)}


def _report(t: Tuple[str, str]) -> GcReport:
    text, summary = t
    values: Dict[str, Any] = json.loads(text)
    # A field a later core adds is left out, not an error.
    known = {k: v for k, v in values.items() if k in _REPORT_FIELDS}
    return GcReport(summary=summary, **known)


@dataclass(frozen=True)
class GcPath:
    """A narinfo the run deletes."""

    #: ``<hash>.narinfo``.
    key: str
    hash_part: str
    #: ``NarSize`` and ``FileSize`` (``None`` for a narinfo that does not parse).
    nar_size: Optional[int]
    file_size: Optional[int]


@dataclass(frozen=True)
class GcObject:
    """A NAR, listing, build log or realisation the run deletes."""

    key: str
    #: Bytes, as listed.
    size: int
    #: Recorded in the run's tombstone and deleted by a run after the grace (``False``: in
    #: this run).
    after_grace: bool


@dataclass(frozen=True)
class KeptReason:
    """Why a GC plan keeps a path (``GcPlan.why_kept``): what keeps ``via[0]`` for its own
    sake; the path asked about is ``via[-1]``, in the closure of ``via[0]`` through the
    references in between. ``str()`` is the sentence ``cachecore gc --why`` prints."""

    #: ``"root"``, ``"lease"`` (a push in progress), ``"pushed_within"`` (``older_than``),
    #: ``"used_within"`` (``unused_for``), ``"not_trashed"`` (``only_trashed``), ``"size"``
    #: (``max_size``: among the most recently used paths that fit) or ``"unparseable"`` (its
    #: narinfo does not parse).
    kind: str
    #: Hash parts, from the path kept for its own sake to the path asked about, each referring
    #: to the next (one for a path kept for its own sake).
    via: List[str]
    #: The GC roots (``host/name``) naming ``via[0]`` (``"root"``).
    roots: List[str] = field(default_factory=list)
    #: The leases (``gcleases/<name>``) naming ``via[0]`` (``"lease"``).
    leases: List[str] = field(default_factory=list)
    #: Unix seconds: ``via[0]``'s push (``"pushed_within"``), or its last push or read
    #: (``"used_within"``, ``"size"``).
    time: Optional[int] = None
    #: ``older_than`` or ``unused_for``, in seconds.
    within: Optional[int] = None
    text: str = ""

    @property
    def dependency(self) -> bool:
        """Kept only as a reference of ``via[0]``."""
        return len(self.via) > 1

    def __str__(self) -> str:
        return self.text


def _kept(t: Tuple[str, str]) -> Optional[KeptReason]:
    text, sentence = t
    fate: Dict[str, Any] = json.loads(text)
    if fate["fate"] != "kept":
        return None
    by: Dict[str, Any] = fate["by"]
    return KeptReason(
        kind=by["kind"],
        via=fate["via"],
        roots=by.get("roots", []),
        leases=by.get("leases", []),
        time=by.get("pushed", by.get("last_used")),
        within=by.get("within"),
        text=sentence,
    )


class GcPlan:
    """A GC run read and planned by ``Cache.gc_plan``; nothing is deleted until
    ``Cache.gc_apply(plan)`` (once). Applying later is safe: narinfos written again since, and
    pushes begun since, are found by the run's own re-checks, as ``cachecore gc`` does."""

    def __init__(self, native: _cachecore.NativeGcPlan) -> None:
        self._native = native
        #: What applying would do, as a dry run reports it.
        self.report: GcReport = _report(native.preview())
        sizes = native.object_sizes()
        #: The narinfos deleted, referrers before what they reference.
        self.paths: List[GcPath] = [GcPath(*t) for t in native.narinfos()]
        #: The objects deleted: in this run, then after the grace.
        self.objects: List[GcObject] = [
            GcObject(k, sizes.get(k, 0), False) for k in self.report.objects_deleted
        ] + [GcObject(k, sizes.get(k, 0), True) for k in self.report.tombstoned]
        roots, leases = native.keepers()
        #: Why what stays stays: the roots (``host/name``) whose closures are live ...
        self.roots: List[str] = roots
        #: ... the leases of pushes in progress (their paths and closures are live) ...
        self.leases: int = leases
        #: ... and, in the report: ``kept_for_size`` (``max_size``), ``unparseable``,
        #: ``orphans_kept_for_unparseable``, ``missing_root_paths``.

    def why_kept(self, path: Union[StorePath, str, "os.PathLike[str]"]) -> Optional[KeptReason]:
        """Why the plan keeps ``path``: the root (``host/name``) or lease naming it, or the
        option keeping it (``older_than``, ``unused_for``, ``max_size``); for a path kept as a
        dependency, the path (and its root) whose closure holds it. ``None`` when the plan
        deletes it; ``NotFound`` when the cache has no narinfo for it. The first call walks
        the live paths once (4 bytes a path); each answer is then a walk up one chain."""
        arg = str(path) if isinstance(path, StorePath) else os.fspath(path)
        return _kept(self._native.why_kept(arg))

    @property
    def bytes_freed(self) -> int:
        """Bytes of the objects deleted in this run."""
        return self.report.bytes_freed

    @property
    def bytes_after_grace(self) -> int:
        """Bytes of the objects a run after the grace deletes."""
        return self.report.bytes_after_grace

    @property
    def live_paths(self) -> int:
        return self.report.live_paths

    @property
    def applied(self) -> bool:
        return self._native.applied

    @property
    def planned_at(self) -> datetime.datetime:
        return datetime.datetime.fromtimestamp(self._native.planned_at, datetime.timezone.utc)

    def __repr__(self) -> str:
        return f"<GcPlan: {self.report.summary}>"
