"""How the fast pass is compiled: numba's options in one place, so no kernel can reassociate.

Every function is compiled with fastmath=False: the error-free transforms are exact only when
evaluated as written (LLVM does not contract a*b + c into an FMA without fastmath flags either).

Small helpers (:data:`helper`, :data:`inlined`) are not cached: a cached helper is linked as
object code, which LLVM cannot inline (a call per TwoSum costs ~4x). Uncached, their IR is
linked into the (cached) kernels and LLVM inlines them; :data:`inlined` functions are inlined at
numba-IR level already, so that the loops they sit in vectorize.

numba judges a cached kernel fresh by its own source file alone, yet a kernel compiles in the
helpers and frozen constants of the package's other files. :func:`kernel` therefore stamps each
cache with all of the package's sources: an edit anywhere in ``harness/fastpath`` recompiles
every kernel instead of running stale machine code.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numba

__all__ = ["helper", "inlined", "kernel"]

helper = numba.njit(fastmath=False)
inlined = numba.njit(fastmath=False, inline="always")


def _package_stamp() -> bytes:
    digest = hashlib.sha256()
    for path in sorted(Path(__file__).parent.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.digest()


_STAMP = _package_stamp()


def kernel(**options):
    """``numba.njit(cache=True, fastmath=False, **options)``, its cache stamped with the package."""

    def decorate(func):
        dispatcher = numba.njit(cache=True, fastmath=False, **options)(func)
        index = getattr(getattr(dispatcher, "_cache", None), "_cache_file", None)
        if hasattr(index, "_source_stamp"):  # numba internals (as of 0.68); else its own stamp
            index._source_stamp = _STAMP
        return dispatcher

    return decorate
