"""python-flint, imported on first use (so that ``import harness`` neither needs nor pays for it),
and the arb working precisions of the oracle."""

from __future__ import annotations

#: First arb working precision (bits).
START_PREC = 128
#: Precision cap of the certification loop.
MAX_PREC = 20_000
INSTALL_HINT = "pip install 'xent-harness[certify]'"


class CertifyUnavailable(ImportError):
    """python-flint is missing; the message is one line naming the fix."""


_FLINT = None


def require() -> None:
    """Raise :class:`CertifyUnavailable` (one line, naming the fix) unless python-flint imports."""
    load_flint()


def load_flint():
    """The ``flint`` module, imported once; :class:`CertifyUnavailable` when it is missing."""
    global _FLINT
    if _FLINT is None:
        try:
            import flint
        except ImportError:
            raise CertifyUnavailable(f"python-flint is not installed (needed for --certify): {INSTALL_HINT}") from None
        _FLINT = flint
    return _FLINT
