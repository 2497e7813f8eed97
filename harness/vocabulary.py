"""The harness's words, in one place (standard library only, so the CLI, the pytest plugin and
the report can import it for free).

A *cell* judges one *kind* (``accuracy``: the loss; ``gradient``; ``special``: the inf/NaN
pattern of both) of one implementation on one scenario in one dtype. Accuracy and gradient
cells judge a *quantity* (``loss`` or ``grad``) against the budget keys ``<quantity>_ulp`` and
``<quantity>_scaled``; the throughput sweep times the matching *pass* (``forward``,
``forward+backward``).
"""

from __future__ import annotations

#: Input formats, narrowest first (harness.formats has their NumPy dtypes).
DTYPES = ("float16", "bfloat16", "float32", "float64")

KINDS = ("accuracy", "gradient", "special")
QUANTITIES = ("loss", "grad")
#: Cell statuses; "known" counts a failing cell that matches a known failure; "convention" is a
#: cell that fails the run's contract but passes its implementation's own profile
#: (harness.contracts: a convention difference, not a defect).
STATUSES = ("pass", "fail", "error", "unsupported", "known", "convention")
PASSES = ("forward", "forward+backward")
METRICS = ("ulp", "scaled")
BUDGET_KEYS = tuple(f"{q}_{m}" for q in QUANTITIES for m in METRICS)

_QUANTITY = {"accuracy": "loss", "gradient": "grad"}
_KIND = {v: k for k, v in _QUANTITY.items()}
_PASS = dict(zip(QUANTITIES, PASSES, strict=True))

#: Device names: "cpu", and "cuda" for NVIDIA GPUs (whatever the library calls them: jax "gpu").
DEVICES = ("cpu", "cuda")

#: Why a canary is not in a default `check` (it is deliberately broken).
CANARY_LEFT_OUT = "canary, left out of the gate (name it with --impl to check it)"
OPT_IN_LEFT_OUT = "opt-in, left out of default runs (name it with --impl, or run `xent-harness zoo`)"


def quantity(kind: str) -> str:
    """The quantity an accuracy or gradient cell judges: 'loss' or 'grad'."""
    return _QUANTITY[kind]


def kind(quantity_: str) -> str:
    """The cell kind that judges a quantity: 'accuracy' or 'gradient'."""
    return _KIND[quantity_]


def noun(quantity_: str) -> str:
    """The quantity in words: 'loss' or 'gradient'."""
    return "loss" if quantity_ == "loss" else "gradient"


def budget_key(quantity_: str, metric: str) -> str:
    """The budgets.toml key of a quantity's metric: 'loss_ulp', 'grad_scaled', ..."""
    return f"{quantity_}_{metric}"


def budget_of(table: dict, dtype: str, quantity_: str) -> dict:
    """{'ulp': ..., 'scaled': ...} of a quantity in one dtype's row of a budget table."""
    row = table[dtype]
    return {m: row[budget_key(quantity_, m)] for m in METRICS}


def timed_pass(quantity_: str) -> str:
    """The throughput pass that computes a quantity: 'forward' or 'forward+backward'."""
    return _PASS[quantity_]


def cell_id(cell: dict) -> str:
    """``IMPL/DTYPE/KIND/SCENARIO``: what known-failure globs match and the report shows."""
    return f"{cell['impl']}/{cell['dtype']}/{cell['kind']}/{cell['scenario']}"
