"""One cross-entropy evaluation, with exactly the arguments of ``torch.nn.functional.cross_entropy``.

A :class:`Problem` is validated on construction; anything PyTorch 2.x rejects raises
:class:`ProblemError`, a ``ValueError`` whose one-line message starts with the offending field
and says the fix. Deliberate departures, explained in docs/semantics.md ("Arguments"): an
unbatched (C,) input needs a 0-d target (PyTorch's forward also takes a (1,) target, but its
backward and its label-smoothing path reject it), and uint8 class indices are refused wherever
PyTorch refuses them for some of their values (K-dim inputs; class weights with 'mean' and label
smoothing), also in the empty cases it lets through; both are stricter than PyTorch. Looser:
index targets with logits (N, 0, d), which PyTorch 2.13 alone among the C = 0 shapes rejects (a
reshape bug). ``tests/test_contract.py`` checks every decision against the installed torch.

Conventions (PyTorch's):

* ``logits`` has shape (C,), (N, C) or (N, C, d1, ..., dk); the class axis is axis 0 for an
  unbatched input and axis 1 otherwise.
* ``target`` holds class indices (an integer array with the logits' shape minus the class axis)
  or class probabilities (a float array with the logits' shape). Class indices are int64 or
  uint8, the two dtypes PyTorch takes ("expected target dtype to be Long or Byte"); they are
  kept in their dtype, so an implementation is called with the dtype the problem was built
  with, and :meth:`Problem.rows` widens them to int64 for the harness's own computations.
  A uint8 problem and its int64 twin have the same reference but different digests: the digest
  keys the call (every array with its dtype), and the two are different calls of the
  implementation under test (torch 2.13 takes other code paths for uint8, see
  docs/semantics.md).
* ``weight`` and probability targets are stored in the logits' dtype, because PyTorch requires
  them in that dtype; a value that is not representable is rounded once here, and the reference
  uses the rounded value. A finite weight that would overflow to inf in that rounding is an
  error (the harness must not invent an inf); NaN and ±inf weights given as such are accepted,
  as PyTorch accepts them.
* ``label_smoothing`` is stored canonically: PyTorch treats every value that is not > 0
  (negative, -0.0, NaN, -inf) as no smoothing, so those are stored as 0.0.
* C = 0 (an empty class axis) is valid where PyTorch accepts it: probability targets, or index
  targets that are all ``ignore_index`` (in particular N = 0).
* ``memory`` is the layout the implementation receives the arrays in (:mod:`harness.memory_layout`:
  contiguous, transposed-class, strided, row-offset). The arrays are stored C-ordered whatever
  it is; :meth:`Problem.presented` is the problem with its arrays as views in that layout (what
  :mod:`harness.runner` hands an implementation, in this process or in an isolated child).
  The values are the same, so the reference is the same: :attr:`Problem.digest` keys the values
  (the reference cache), :attr:`Problem.identity` adds the layout (the call).
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from harness.formats import DTYPE_NAMES, Format, format_of
from harness.memory_layout import MEMORY_LAYOUTS, lay_out

REDUCTIONS = ("mean", "sum", "none")
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


_DIGEST_PIECE = 64 << 20


class ProblemError(ValueError):
    """An invalid cross-entropy problem; the message names the field and the fix."""


def _label_smoothing(value) -> float:
    """PyTorch's float argument takes Python and NumPy real scalars (bool included) and rejects
    str, bytes, None, complex and arrays; it raises for values > 1 and treats every value that is
    not > 0 (negative, -0.0, NaN, -inf) as no smoothing, which is stored as 0.0."""
    if isinstance(value, np.ndarray) or not isinstance(value, numbers.Real):
        raise ProblemError(
            f"label_smoothing: must be a real number (float) in [0, 1], got {type(value).__name__} "
            f"{value!r}; pass a float such as 0.1"
        )
    eps = float(value)
    if eps > 1.0:
        raise ProblemError(
            f"label_smoothing: must be at most 1 (PyTorch raises for larger values), got {eps!r}"
        )
    return eps if eps > 0.0 else 0.0


#: The class-index dtypes PyTorch takes: Long and Byte.
INDEX_DTYPES = (np.dtype(np.int64), np.dtype(np.uint8))


def _index_dtype(dtype: np.dtype) -> np.dtype:
    native = dtype.newbyteorder("=")
    if native not in INDEX_DTYPES:
        raise ProblemError(
            f"target: class indices must be int64 (PyTorch's Long) or uint8 (Byte), got {dtype.name}; "
            "use target.astype(np.int64)"
        )
    return native


def uint8_refused(ndim: int, weighted: bool, reduction: str, label_smoothing) -> str | None:
    """Why PyTorch 2.13 refuses uint8 class indices for logits of ``ndim`` dimensions with these
    options (None: it takes them on every path, loss and gradient). The K-dim kernels take Long
    only; the label-smoothing path of a weighted 'mean' gathers the weights with the target
    (``gather(): Expected dtype int32/int64 for index``). Scenario generators ask this before
    building a uint8 problem."""
    if ndim > 2:
        return ("are refused for K-dim logits (PyTorch: 'expected scalar type Long but found Byte'; "
                "its K-dim kernels take int64 only)")
    eps = label_smoothing if isinstance(label_smoothing, numbers.Real) else 0
    if weighted and reduction == "mean" and eps > 0:
        return ("are refused with class weights, reduction 'mean' and label smoothing (PyTorch: "
                "'gather(): Expected dtype int32/int64 for index')")
    return None


def _as_float_array(name: str, value, dtype: np.dtype | None) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object:
        raise ProblemError(f"{name}: cannot be converted to a numeric array")
    if dtype is None:
        if arr.dtype.kind in "iub":
            raise ProblemError(
                f"{name}: dtype {arr.dtype.name} is not a floating type; "
                f"use one of {', '.join(DTYPE_NAMES)}"
            )
        try:
            format_of(arr.dtype)
        except ValueError:
            raise ProblemError(
                f"{name}: unsupported dtype {arr.dtype.name}; use one of {', '.join(DTYPE_NAMES)}"
            ) from None
        return arr
    if arr.dtype.kind not in "fiuV" and arr.dtype.name != "bfloat16":
        raise ProblemError(f"{name}: dtype {arr.dtype.name} is not numeric")
    with np.errstate(over="ignore", invalid="ignore"):
        return arr.astype(dtype)


def _frozen(arr: np.ndarray) -> np.ndarray:
    arr = np.array(arr, order="C", copy=True)  # ascontiguousarray would turn 0-d into 1-d
    arr.setflags(write=False)
    return arr


@dataclass(frozen=True, eq=False)
class Problem:
    logits: np.ndarray
    target: np.ndarray
    weight: np.ndarray | None = None
    ignore_index: int = -100
    reduction: str = "mean"
    label_smoothing: float = 0.0
    memory: str = "contiguous"

    def __post_init__(self):
        set_ = object.__setattr__
        logits = _as_float_array("logits", self.logits, None)
        if logits.ndim == 0:
            raise ProblemError("logits: must have shape (C,), (N, C) or (N, C, d1, ..., dk); got a scalar")
        class_axis = 0 if logits.ndim == 1 else 1
        n_classes = logits.shape[class_axis]
        set_(self, "logits", _frozen(logits))

        if self.reduction not in REDUCTIONS:
            raise ProblemError(
                f"reduction: unknown value {self.reduction!r}; use 'mean', 'sum' or 'none'"
            )
        ignore_index = self.ignore_index
        if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, (int, np.integer)):
            raise ProblemError(f"ignore_index: must be an integer, got {ignore_index!r}")
        ignore_index = int(ignore_index)
        if not INT64_MIN <= ignore_index <= INT64_MAX:
            raise ProblemError(
                f"ignore_index: {ignore_index} does not fit in int64 (PyTorch raises 'Overflow when "
                "unpacking long long'); use a value in [-2**63, 2**63 - 1], e.g. the default -100"
            )
        set_(self, "ignore_index", ignore_index)
        set_(self, "label_smoothing", _label_smoothing(self.label_smoothing))
        if self.memory not in MEMORY_LAYOUTS:
            raise ProblemError(
                f"memory: unknown layout {self.memory!r}; use one of {', '.join(MEMORY_LAYOUTS)}"
            )
        if self.memory == "transposed-class" and logits.ndim == 1:
            raise ProblemError(
                "memory: an unbatched (C,) input has one axis, so no transposed-class layout; "
                "use 'contiguous', 'strided' or 'row-offset'"
            )

        target = np.asarray(self.target)
        if target.dtype.kind == "b":
            raise ProblemError("target: boolean targets are not allowed; use class indices (int64 or uint8) "
                               "or probabilities")
        if target.dtype.kind in "iu":
            index_dtype = _index_dtype(target.dtype)
            expected = logits.shape[:class_axis] + logits.shape[class_axis + 1 :]
            if target.shape != expected:
                hint = " (an unbatched input takes a 0-d target)" if logits.ndim == 1 else ""
                raise ProblemError(
                    f"target: class-index targets must have shape {expected} for logits of shape "
                    f"{logits.shape}, got {target.shape}{hint}"
                )
            if index_dtype == np.uint8:
                refused = uint8_refused(logits.ndim, self.weight is not None, self.reduction,
                                        self.label_smoothing)
                if refused:
                    raise ProblemError(f"target: uint8 class indices {refused}; use target.astype(np.int64)")
            target = target.astype(index_dtype)  # native byte order
            wide = target.astype(np.int64)
            bad = (wide != ignore_index) & ((wide < 0) | (wide >= n_classes))
            if bad.any():
                value = int(wide[bad].flat[0])
                hint = "; with C = 0 every target must be ignore_index" if n_classes == 0 else ""
                raise ProblemError(
                    f"target: class index {value} is outside [0, {n_classes}) and is not "
                    f"ignore_index ({ignore_index}){hint}"
                )
        elif target.dtype.kind == "f" or target.dtype.name == "bfloat16":
            if target.shape != logits.shape:
                raise ProblemError(
                    f"target: probability targets must have the logits' shape {logits.shape}, got "
                    f"{target.shape} (class indices must be an integer array)"
                )
            if ignore_index >= 0:
                raise ProblemError(
                    f"ignore_index: PyTorch does not support ignore_index with probability targets "
                    f"(got {ignore_index}); leave the default -100 (any negative value is ignored)"
                )
            target = _as_float_array("target", target, logits.dtype)
        else:
            raise ProblemError(
                f"target: dtype {target.dtype.name} is neither integer class indices nor float probabilities"
            )
        set_(self, "target", _frozen(target))

        if self.weight is not None:
            given = np.asarray(self.weight)
            weight = _as_float_array("weight", given, logits.dtype)
            if weight.shape != (n_classes,):
                raise ProblemError(
                    f"weight: must have shape ({n_classes},), one entry per class, got {weight.shape}"
                )
            with np.errstate(over="ignore", invalid="ignore"):
                overflow = np.isfinite(given.astype(np.float64)) & ~np.isfinite(weight.astype(np.float64))
            if overflow.any():
                value = given.reshape(-1)[np.flatnonzero(overflow)[0]].item()
                raise ProblemError(
                    f"weight: {value!r} overflows {logits.dtype.name} (it would become inf); give a "
                    f"value in that dtype's range, or inf itself if you mean it"
                )
            set_(self, "weight", _frozen(weight))

    # -- shape and kind ------------------------------------------------------------------------
    @property
    def format(self) -> Format:
        return format_of(self.logits.dtype)

    @property
    def dtype(self) -> np.dtype:
        return self.logits.dtype

    @property
    def class_axis(self) -> int:
        return 0 if self.logits.ndim == 1 else 1

    @property
    def num_classes(self) -> int:
        return self.logits.shape[self.class_axis]

    @property
    def probability_target(self) -> bool:
        return self.target.dtype.kind not in "iu"

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of the per-sample losses (the output of reduction='none')."""
        ax = self.class_axis
        return self.logits.shape[:ax] + self.logits.shape[ax + 1 :]

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.sample_shape if self.reduction == "none" else ()

    @property
    def num_samples(self) -> int:
        return int(np.prod(self.sample_shape, dtype=np.int64))

    @property
    def kdim(self) -> bool:
        return self.logits.ndim > 2

    @property
    def features(self) -> frozenset[str]:
        """The contract features this problem exercises (implementations declare theirs)."""
        f = {f"reduction:{self.reduction}"}
        if self.weight is not None:
            f.add("weight")
        if self.probability_target:
            f.add("probability_target")
        elif (self.target == self.ignore_index).any():
            f.add("ignore_index")
        if self.label_smoothing:
            f.add("label_smoothing")
        if self.kdim:
            f.add("kdim")
        if self.logits.ndim == 1:
            f.add("unbatched")
        return frozenset(f)

    # -- views -------------------------------------------------------------------------------------
    def rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Logits as (M, C) rows (class axis last) and targets as (M,) int64 class indices
        (uint8 ones widened) or (M, C) probabilities."""
        M, C = self.num_samples, self.num_classes  # explicit: reshape(-1, 0) is ambiguous
        x = np.moveaxis(self.logits, self.class_axis, -1).reshape(M, C)
        if self.probability_target:
            t = np.moveaxis(self.target, self.class_axis, -1).reshape(M, C)
        else:
            t = self.target.reshape(-1).astype(np.int64, copy=False)
        return x, t

    def unrows(self, rows: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`rows` for an (M, C) array: back to the logits' layout."""
        moved = np.moveaxis(self.logits, self.class_axis, -1).shape
        return np.moveaxis(rows.reshape(moved), -1, self.class_axis)

    def replace(self, **changes) -> Problem:
        return dataclasses.replace(self, **changes)

    def astype(self, dtype) -> Problem:
        """The same problem with logits (and weight, probability targets) cast to ``dtype``."""
        dt = format_of(dtype).dtype
        with np.errstate(over="ignore"):
            return self.replace(
                logits=self.logits.astype(dt),
                target=self.target.astype(dt) if self.probability_target else self.target,
                weight=None if self.weight is None else self.weight.astype(dt),
            )

    def presented(self) -> Problem:
        """The problem as an implementation receives it: the same values, every array a
        read-only view in the layout ``memory`` (built afresh: a new buffer per call). Itself
        when contiguous or already presented. Pickled, it travels as its C-ordered arrays and
        the receiver rebuilds the same view (same strides, same offset); a pickled NumPy view
        would have arrived C-ordered."""
        if self.memory == "contiguous" or "_canonical" in self.__dict__:
            return self
        view = object.__new__(Problem)
        view.__dict__.update(self.__dict__)  # the fields (validated) and a cached digest
        ax = self.class_axis
        view.__dict__["logits"] = lay_out(self.logits, self.memory, ax)
        view.__dict__["target"] = lay_out(self.target, self.memory, ax if self.probability_target else None)
        if self.weight is not None:
            view.__dict__["weight"] = lay_out(self.weight, self.memory, None)
        view.__dict__["_canonical"] = self
        return view

    def canonical(self) -> Problem:
        """The problem with C-ordered arrays (itself unless presented)."""
        return self.__dict__.get("_canonical", self)

    def __reduce_ex__(self, protocol):
        if "_canonical" in self.__dict__:
            return (_presented, (self.__dict__["_canonical"],))
        return super().__reduce_ex__(protocol)

    def kwargs(self) -> dict:
        """Keyword arguments in ``torch.nn.functional.cross_entropy`` form (NumPy arrays)."""
        return {
            "weight": self.weight,
            "ignore_index": self.ignore_index,
            "reduction": self.reduction,
            "label_smoothing": self.label_smoothing,
        }

    @cached_property
    def digest(self) -> str:
        """A stable sha256 of everything that defines the problem (the reference cache key):
        every array with its dtype, so a uint8-target problem and its int64 twin differ (they
        are different calls; their references are equal, computed once each). Arrays are fed
        in 64 MB pieces of their C-order bytes (``tobytes()`` of a 4.2 GB language-model batch
        would copy it)."""
        h = hashlib.sha256()
        for arr in (self.logits, self.target, self.weight):
            if arr is None:
                h.update(b"none;")
                continue
            h.update(f"{arr.dtype.name}{arr.shape};".encode())
            flat = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
            for a in range(0, flat.size, _DIGEST_PIECE):
                h.update(memoryview(flat[a:a + _DIGEST_PIECE]))
        h.update(f"{self.ignore_index};{self.reduction};{self.label_smoothing!r}".encode())
        return h.hexdigest()

    @property
    def identity(self) -> str:
        """The call an implementation gets: :attr:`digest` (the values), plus the memory layout
        when it is not contiguous. A strided problem and its contiguous twin share a reference
        (one cache entry) but are different calls; nothing caches implementation outputs by
        digest today, and anything that does must key on this."""
        return self.digest if self.memory == "contiguous" else f"{self.digest}:{self.memory}"

    def __repr__(self) -> str:
        kind = "probabilities" if self.probability_target else f"{self.target.dtype.name} indices"
        return (
            f"Problem(logits={self.logits.dtype.name}{list(self.logits.shape)}, target={kind}, "
            f"weight={'yes' if self.weight is not None else 'None'}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing}"
            + ("" if self.memory == "contiguous" else f", memory={self.memory!r}") + ")"
        )


def _presented(problem: Problem) -> Problem:
    """Unpickling a presented problem: its C-ordered twin arrived; lay it out again."""
    return problem.presented()
