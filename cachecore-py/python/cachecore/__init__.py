"""cachecore: Nix binary caches from Python — store paths, narinfos, signatures, NARs and whole
caches, through the same Rust core as the ``cachecore`` command.

>>> import cachecore
>>> key = cachecore.SecretKey.generate("cache.example.org-1")
>>> key.public_key().name
'cache.example.org-1'

Every call that does I/O or hashing releases the GIL; ``Cache`` methods have ``*_async``
variants for asyncio. Errors are ``cachecore.CacheCoreError`` subclasses (see
``cachecore.errors``).
"""

from __future__ import annotations

# The error classes first: the native module raises them, looking them up in cachecore.errors.
from .errors import (
    CacheCoreError,
    Conflict,
    Corrupt,
    Denied,
    Internal,
    InvalidInput,
    Local,
    NotFound,
    Unavailable,
    Unsupported,
    Untrusted,
)
from ._cachecore import NarInfo, PublicKey, SecretKey, StorePath, __version__
from ._cache import (
    Cache,
    CacheFile,
    CopySummary,
    Info,
    Problem,
    PushSummary,
    VerifyReport,
)
from ._gc import GcObject, GcPath, GcPlan, GcReport, KeptReason, Root, RootRevision
from . import nar

__all__ = [
    "Cache",
    "CacheCoreError",
    "CacheFile",
    "Conflict",
    "CopySummary",
    "GcObject",
    "GcPath",
    "GcPlan",
    "GcReport",
    "Corrupt",
    "Denied",
    "Info",
    "Internal",
    "InvalidInput",
    "KeptReason",
    "Local",
    "NarInfo",
    "NotFound",
    "Problem",
    "PublicKey",
    "PushSummary",
    "Root",
    "RootRevision",
    "SecretKey",
    "StorePath",
    "Unavailable",
    "Unsupported",
    "Untrusted",
    "VerifyReport",
    "nar",
    "__version__",
]
