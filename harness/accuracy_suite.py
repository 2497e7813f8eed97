"""The golden accuracy suite as a pytest test module shipped with xent-harness.

Run it against your implementation (the options come from :mod:`harness.pytest_plugin`)::

    pytest --pyargs harness.accuracy_suite --xent-impl mypkg.losses:my_cross_entropy
    pytest --pyargs harness.accuracy_suite --xent-impl numpy --xent-dtype float32 -m "not slow"

One test per implementation × golden case (each case has its dtype) × quantity (loss, grad),
with ids ``IMPL-DTYPE-CASE-QUANTITY``. A test compares the output with the exact reference
stored in ``references/`` and passes when every element is within the ULP *or* the scaled
budget of its dtype (``harness.verdicts.judge``) and inf/NaN appear exactly where the contract
has them. Unsupported dtypes or features, and a missing gradient, are skipped with the reason;
implementations that are not available here are one skipped test each (unless named with
``--xent-impl``, which makes them a usage error). A failure matching a known failure
(``[[tool.xent-harness.known-failures]]``, cells ``IMPL/DTYPE/KIND/CASE``) is an xfail.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from harness import pytest_plugin, vocabulary

QUANTITIES = ("loss", "grad")
#: Cases with more logits than this are marked slow (pure-Python implementations crawl there).
SLOW_LOGITS = 4096


@dataclass(frozen=True)
class Cell:
    impl: str
    case: str | None = None
    dtype: str | None = None
    quantity: str | None = None


def _case_id(name: str, dtype: str) -> str:
    return name[: -len(dtype) - 1] if name.endswith("-" + dtype) else name


def cells(config: pytest.Config) -> list:
    """The parameters of :func:`test_golden`: one per implementation × case × quantity, plus
    one skipped parameter per implementation that cannot run here."""
    s = pytest_plugin.settings(config)
    if s.references_missing:
        return [pytest.param(Cell("none"), marks=pytest.mark.skip(reason=s.references_missing), id="no-references")]
    params = []
    for e in s.skipped:
        reason = e.unavailable() or "canary (deliberately broken): name it with --xent-impl to check it"
        params.append(pytest.param(Cell(e.name), marks=pytest.mark.skip(reason=f"{e.name}: {reason}"),
                                   id=f"{e.name}-skipped"))
    chosen = sorted((n, c) for n, c in s.cases.items() if c.get("dtype") in s.dtypes)
    if not chosen and s.entries:
        params.append(pytest.param(Cell("none"), marks=pytest.mark.skip(
            reason=f"no golden case of dtype {', '.join(s.dtypes)} in {s.references}"), id="no-cases"))
    for e in s.entries:
        gpu = e.impl.device != "cpu"
        for name, c in chosen:
            slow = int(np.prod(c.get("shape") or [0])) > SLOW_LOGITS
            marks = [pytest.mark.gpu] * gpu + [pytest.mark.slow] * slow
            for q in QUANTITIES:
                params.append(pytest.param(Cell(e.name, name, c["dtype"], q), marks=marks,
                                           id=f"{e.name}-{c['dtype']}-{_case_id(name, c['dtype'])}-{q}"))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "xent_cell" in metafunc.fixturenames:
        metafunc.parametrize("xent_cell", cells(metafunc.config))


@cache
def _golden(directory: Path, name: str):
    from harness import golden

    return golden.load(name, directory)


def test_golden(xent_cell: Cell, request: pytest.FixtureRequest) -> None:
    from harness import budgets, verdicts

    s = pytest_plugin.settings(request.config)
    cell = xent_cell
    impl = s.entry(cell.impl).impl
    g = _golden(s.references, cell.case)
    problem = g.problem
    reason = impl.supports(problem)
    if reason:
        pytest.skip(f"{impl.name}: {reason}")
    if cell.quantity == "grad" and not impl.has_grad:
        pytest.skip(f"{impl.name} provides no gradient")

    y = impl.loss(problem) if cell.quantity == "loss" else impl.grad(problem)
    where = f"{impl.name} on {cell.case} ({cell.dtype})"
    try:
        y = verdicts.check_output(problem, y, cell.quantity)
    except ValueError as exc:
        pytest.fail(f"{where}: {exc}", pytrace=False)
    hi, lo = (g.loss_hi, g.loss_lo) if cell.quantity == "loss" else (g.grad_hi, g.grad_lo)
    status, message, m = verdicts.judge(problem, cell.quantity, y, hi, lo, s.budgets[cell.dtype])
    for key in ("count", "ulp_max", "scaled_max"):
        if m.get(key) is not None:
            request.node.user_properties.append((f"xent_{key}", m[key]))

    failures = []  # (kind, message)
    if status != "pass":
        failures.append((vocabulary.kind(cell.quantity), message))
    # where the correctly rounded reference is inf/NaN the output must be the same inf/NaN
    special = verdicts.special_verdict([verdicts.special_part(problem, y, hi, lo, cell.quantity)])
    if special is not None and special[0] != "pass":
        failures.append(("special", special[1]))
    if not failures:
        return
    text = f"{where}: " + "; ".join(msg for _, msg in failures) + f" [budgets: {s.budgets_source}]"
    reasons = [budgets.known_reason({"impl": impl.name, "dtype": cell.dtype, "kind": kind, "scenario": cell.case},
                                    s.known) for kind, _ in failures]
    if all(reasons):
        pytest.xfail(f"known failure: {reasons[0]} ({text})")
    pytest.fail(text, pytrace=False)
