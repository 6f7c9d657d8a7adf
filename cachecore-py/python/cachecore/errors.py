"""The exceptions cachecore raises: one base class, one subclass per kind of failure.

Each kind is also the built-in exception a Python caller would expect (``NotFound`` is a
``FileNotFoundError``, ``Unavailable`` a ``ConnectionError``, ...), so ``except OSError`` and
friends keep working. The message is the sentence the ``cachecore`` command prints for the same
failure. The native module raises these classes (it looks them up here by name).
"""

from __future__ import annotations


class CacheCoreError(Exception):
    """Any failure reported by cachecore. A kind added to the core later raises this class."""

    #: The core's name for the kind of failure (``cachecore::error::ErrorKind``).
    kind: str = "unknown"


class NotFound(CacheCoreError, FileNotFoundError):
    """What was asked for does not exist: a store path not in the cache, a file not in a NAR."""

    kind = "not found"


class InvalidInput(CacheCoreError, ValueError):
    """The request itself is wrong: a bad URL, key, argument, store path or local input."""

    kind = "invalid input"


class Corrupt(CacheCoreError, ValueError):
    """Data read from a cache is not what it claims to be (hash or size mismatch, bad NAR)."""

    kind = "corrupt"


class Untrusted(CacheCoreError):
    """Data is intact but not signed by a trusted key."""

    kind = "untrusted"


class Unavailable(CacheCoreError, ConnectionError):
    """The store could not be reached or failed to answer: nothing could be checked."""

    kind = "unavailable"


class Denied(CacheCoreError, PermissionError):
    """The store refused access: wrong or missing credentials, no permission, no bucket."""

    kind = "denied"


class Conflict(CacheCoreError, FileExistsError):
    """The write would replace something it must not (an existing destination or object)."""

    kind = "conflict"


class Unsupported(CacheCoreError):
    """The store cannot do this at all (writing to a read-only HTTP cache, say)."""

    kind = "unsupported"


class Local(CacheCoreError, OSError):
    """The local machine failed: reading or writing local files, the local Nix store."""

    kind = "local failure"


class Internal(CacheCoreError):
    """A bug or an interrupted background task in cachecore itself."""

    kind = "internal error"


#: The class of each kind, by the kind's name.
BY_KIND: dict[str, type[CacheCoreError]] = {
    c.kind: c
    for c in (
        NotFound,
        InvalidInput,
        Corrupt,
        Untrusted,
        Unavailable,
        Denied,
        Conflict,
        Unsupported,
        Local,
        Internal,
    )
}

__all__ = [
    "CacheCoreError",
    "NotFound",
    "InvalidInput",
    "Corrupt",
    "Untrusted",
    "Unavailable",
    "Denied",
    "Conflict",
    "Unsupported",
    "Local",
    "Internal",
    "BY_KIND",
]
