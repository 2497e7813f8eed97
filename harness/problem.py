"""One cross-entropy evaluation, with exactly the arguments of ``torch.nn.functional.cross_entropy``.

A :class:`Problem` is validated on construction; anything PyTorch would reject (and a few things
it silently accepts but that make no sense, such as a weight with NaN) raises
:class:`ProblemError`, a ``ValueError`` whose message starts with the offending field.

Conventions (PyTorch's):

* ``logits`` has shape (C,), (N, C) or (N, C, d1, ..., dk); the class axis is axis 0 for an
  unbatched input and axis 1 otherwise.
* ``target`` holds class indices (an integer array with the logits' shape minus the class axis)
  or class probabilities (a float array with the logits' shape).
* ``weight`` and probability targets are stored in the logits' dtype, because PyTorch requires
  them in that dtype; a value that is not representable is rounded once here, and the reference
  uses the rounded value.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from harness.formats import DTYPE_NAMES, Format, format_of

REDUCTIONS = ("mean", "sum", "none")


class ProblemError(ValueError):
    """An invalid cross-entropy problem; the message names the field and the fix."""


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

    def __post_init__(self):
        set_ = object.__setattr__
        logits = _as_float_array("logits", self.logits, None)
        if logits.ndim == 0:
            raise ProblemError("logits: must have shape (C,), (N, C) or (N, C, d1, ..., dk); got a scalar")
        class_axis = 0 if logits.ndim == 1 else 1
        n_classes = logits.shape[class_axis]
        if n_classes == 0:
            raise ProblemError("logits: the class axis is empty (C = 0); give at least one class")
        set_(self, "logits", _frozen(logits))

        if self.reduction not in REDUCTIONS:
            raise ProblemError(
                f"reduction: unknown value {self.reduction!r}; use 'mean', 'sum' or 'none'"
            )
        if isinstance(self.ignore_index, bool) or not isinstance(self.ignore_index, (int, np.integer)):
            raise ProblemError(f"ignore_index: must be an integer, got {self.ignore_index!r}")
        set_(self, "ignore_index", int(self.ignore_index))
        try:
            eps = float(self.label_smoothing)
        except (TypeError, ValueError):
            raise ProblemError(
                f"label_smoothing: must be a number in [0, 1], got {self.label_smoothing!r}"
            ) from None
        if not 0.0 <= eps <= 1.0:
            raise ProblemError(f"label_smoothing: must lie in [0, 1], got {eps!r}")
        set_(self, "label_smoothing", eps)

        target = np.asarray(self.target)
        if target.dtype.kind == "b":
            raise ProblemError("target: boolean targets are not allowed; use class indices (int64) or probabilities")
        if target.dtype.kind in "iu":
            expected = logits.shape[:class_axis] + logits.shape[class_axis + 1 :]
            if target.shape != expected:
                raise ProblemError(
                    f"target: class-index targets must have shape {expected} for logits of shape "
                    f"{logits.shape}, got {target.shape}"
                )
            target = target.astype(np.int64)
            bad = (target != self.ignore_index) & ((target < 0) | (target >= n_classes))
            if bad.any():
                value = int(target[bad].flat[0])
                raise ProblemError(
                    f"target: class index {value} is outside [0, {n_classes}) and is not "
                    f"ignore_index ({self.ignore_index})"
                )
        elif target.dtype.kind == "f" or target.dtype.name == "bfloat16":
            if target.shape != logits.shape:
                raise ProblemError(
                    f"target: probability targets must have the logits' shape {logits.shape}, got "
                    f"{target.shape} (class indices must be an integer array)"
                )
            target = _as_float_array("target", target, logits.dtype)
        else:
            raise ProblemError(
                f"target: dtype {target.dtype.name} is neither integer class indices nor float probabilities"
            )
        set_(self, "target", _frozen(target))

        if self.weight is not None:
            weight = _as_float_array("weight", self.weight, logits.dtype)
            if weight.shape != (n_classes,):
                raise ProblemError(
                    f"weight: must have shape ({n_classes},), one entry per class, got {weight.shape}"
                )
            if not np.isfinite(weight.astype(np.float64)).all():
                raise ProblemError(
                    f"weight: must be finite in {logits.dtype.name}; found NaN or inf (or a value "
                    "that overflows that dtype)"
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
        return self.target.dtype.kind != "i"

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
        """Logits as (M, C) rows (class axis last) and targets as (M,) or (M, C)."""
        x = np.moveaxis(self.logits, self.class_axis, -1).reshape(-1, self.num_classes)
        if self.probability_target:
            t = np.moveaxis(self.target, self.class_axis, -1).reshape(-1, self.num_classes)
        else:
            t = self.target.reshape(-1)
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
        """A stable sha256 of everything that defines the problem (the reference cache key)."""
        h = hashlib.sha256()
        for arr in (self.logits, self.target, self.weight):
            if arr is None:
                h.update(b"none;")
                continue
            h.update(f"{arr.dtype.name}{arr.shape};".encode())
            h.update(arr.tobytes())
        h.update(f"{self.ignore_index};{self.reduction};{self.label_smoothing!r}".encode())
        return h.hexdigest()

    def __repr__(self) -> str:
        kind = "probabilities" if self.probability_target else "indices"
        return (
            f"Problem(logits={self.logits.dtype.name}{list(self.logits.shape)}, target={kind}, "
            f"weight={'yes' if self.weight is not None else 'None'}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}, label_smoothing={self.label_smoothing})"
        )
