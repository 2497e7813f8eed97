"""The zoo: maintained adapters that put other libraries' softmax cross-entropy under the harness.

One small module per library, each an :class:`~harness.zoo.base.Adapter` declaring honestly what
the library supports, registered through the ``xent_harness.implementations`` entry points of
this distribution (pyproject.toml), so ``xent-harness list`` shows every one — unavailable, with
the reason and the extra to install, when its library is missing — and each is loaded, called and
timed in a child process of its own like any plugin. None is needed by the default install:
``pip install 'xent-harness[zoo-tf]'`` (one extra per library, ``zoo`` for all) brings one in.

``xent-harness zoo`` (:mod:`harness.zoo.table`) judges every available adapter and the built-ins
in one run and writes docs/zoo.md. :mod:`harness.zoo.convert` has the bit-exact conversions of
bfloat16/float16 arrays to and from torch, jax, TensorFlow, paddle and tinygrad tensors.

Importing this package imports no library (only this table).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    """One adapter: its registry name, where it lives, the distributions whose version the zoo
    reports (the first installed one), and the extra that installs it."""

    name: str
    target: str
    distribution: tuple[str, ...]
    extra: str


#: Every adapter, as pyproject.toml's entry points declare them (a test keeps them equal).
ADAPTERS: tuple[Entry, ...] = (
    Entry("scipy", "harness.zoo.scipy_ce:Scipy", ("scipy",), "zoo-scipy"),
    Entry("sklearn-log-loss", "harness.zoo.sklearn_ce:SklearnLogLoss", ("scikit-learn",), "zoo-sklearn"),
    Entry("optax-integer-labels", "harness.zoo.optax_ce:OptaxIntegerLabels", ("optax",), "zoo-optax"),
    Entry("optax-softmax", "harness.zoo.optax_ce:OptaxSoftmax", ("optax",), "zoo-optax"),
    Entry("optax-safe", "harness.zoo.optax_ce:OptaxSafe", ("optax",), "zoo-optax"),
    Entry("tinygrad", "harness.zoo.tinygrad_ce:Tinygrad", ("tinygrad",), "zoo-tinygrad"),
    Entry("keras", "harness.zoo.keras_ce:Keras", ("keras",), "zoo-keras"),
    Entry("tensorflow", "harness.zoo.tensorflow_ce:TensorFlow", ("tensorflow", "tensorflow-cpu"), "zoo-tf"),
    Entry("transformers", "harness.zoo.transformers_ce:Transformers", ("transformers",), "zoo-transformers"),
    Entry("paddle", "harness.zoo.paddle_ce:Paddle", ("paddlepaddle", "paddlepaddle-gpu"), "zoo-paddle"),
)

#: Built-ins the zoo table reports with their library (name -> distributions).
BUILTIN_LIBRARIES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",), "numpy-naive": ("numpy",), "torch": ("torch",), "torch-cuda": ("torch",),
    "torch-compile": ("torch",), "torch-compile-cuda": ("torch",), "jax": ("jax", "optax"),
    "jax-gpu": ("jax", "optax"), "cupy": ("cupy-cuda12x", "cupy-cuda11x", "cupy"),
}


def by_name() -> dict[str, Entry]:
    return {e.name: e for e in ADAPTERS}


def library_version(distributions: tuple[str, ...]) -> str | None:
    """``"name version"`` of the first installed distribution (from its metadata: nothing is
    imported), or None when none is installed."""
    from importlib import metadata

    for dist in distributions:
        try:
            return f"{dist} {metadata.version(dist)}"
        except metadata.PackageNotFoundError:
            continue
    return None
