"""Contract profiles (harness/contracts.py, contracts.toml, docs/contracts.md): each profile's
differences against the library's actual behaviour where it is installed, the verdicts a
declared profile gives (convention difference vs defect), --contract's input checks."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from harness import campaign, cli, contracts, reference
from harness.budgets import load
from harness.diagnosis import agrees
from harness.problem import Problem
from harness.registry import Implementation

INF, NAN = np.inf, np.nan
BUDGETS = load(None)[0]

#: Rows that exercise every difference: a +inf non-target logit, +inf at the target, a −inf
#: non-target logit, a finite row (target column 0 unless said).
ROWS = np.array([[0, INF, 1, 2], [INF, 0, 1, 2], [0, -INF, 1, 2], [0.5, 1, 2, 3]], np.float32)
TARGETS = np.array([0, 0, 0, 1])


def _problem(reduction="none", rows=ROWS, target=TARGETS, **kw) -> Problem:
    return Problem(rows, target, reduction=reduction, **kw)


def _check(problem, profile, loss, grad) -> tuple[bool, bool]:
    """(loss agrees, grad agrees) with the profile's expected values, judged as a cell is."""
    exp, _ = contracts.expected(problem, reference.evaluate(problem), profile)
    return (agrees(problem, "loss", np.asarray(loss, problem.dtype), *exp.pair("loss"), BUDGETS)[0],
            agrees(problem, "grad", np.asarray(grad, problem.dtype), *exp.pair("grad"), BUDGETS)[0])


# -- the data ----------------------------------------------------------------------------------------


def test_profiles_are_pytorch_plus_differences_with_sources():
    profiles = contracts.profiles()
    assert set(profiles) >= {"pytorch", "optax", "optax-softmax", "scipy", "tensorflow", "keras"}
    assert profiles["pytorch"].differences == ()
    for p in profiles.values():
        for d in p.differences:
            assert d.rule in contracts.RULES and d.source.startswith("https://")


def test_a_malformed_profile_names_the_entry_and_field():
    with pytest.raises(contracts.ContractError, match=r"profile #1 \('x'\), difference #0: unknown rule 'nope'"):
        contracts.parse({"profile": [{"name": "pytorch", "library": "t", "verified": "1"},
                                     {"name": "x", "library": "l", "verified": "1", "difference": [
                                         {"name": "d", "rule": "nope", "text": "t", "pytorch": "p",
                                          "library": "l", "source": "s"}]}]})
    with pytest.raises(contracts.ContractError, match="unknown contract 'nope'; use one of pytorch"):
        contracts.get("nope")


def test_pytorch_expects_the_reference_itself():
    p = _problem()
    ex = reference.evaluate(p)
    assert contracts.expected(p, ex, "pytorch") == (ex, ())
    # and a profile whose rules do not apply to a problem changes nothing either
    q = _problem(rows=ROWS[3:], target=TARGETS[3:])
    ex = reference.evaluate(q)
    assert contracts.expected(q, ex, "optax") == (ex, ())


# -- against the libraries ---------------------------------------------------------------------------


def _optax():
    pytest.importorskip("optax")
    from harness.implementations.jax_impl import _jax

    return _jax()


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
def test_optax_integer_labels_is_what_the_optax_profile_predicts(reduction):
    jax, jnp, optax = _optax()
    keep = [0, 1, 2, 3] if reduction == "none" else [0, 2, 3]  # reduced: +inf, not inf + NaN
    rows, target = ROWS[keep], TARGETS[keep]
    p = _problem(reduction, rows=rows, target=target)

    def f(x):
        per = optax.softmax_cross_entropy_with_integer_labels(x, jnp.asarray(target))
        return {"none": per, "sum": jnp.sum(per), "mean": jnp.mean(per)}[reduction]

    loss = np.asarray(f(jnp.asarray(rows)))
    grad = np.asarray(jax.grad(lambda x: jnp.sum(f(x)))(jnp.asarray(rows)))
    assert _check(p, "optax", loss, grad) == (True, True)
    assert _check(p, "pytorch", loss, grad) == (False, False)  # PyTorch: NaN rows


def test_optax_one_hot_labels_give_nan_for_a_zero_label_at_minus_inf():
    jax, jnp, optax = _optax()
    p = _problem("none")
    onehot = jax.nn.one_hot(jnp.asarray(TARGETS), 4, dtype=jnp.float32)
    f = lambda x: optax.softmax_cross_entropy(x, onehot)  # noqa: E731
    loss = np.asarray(f(jnp.asarray(ROWS)))
    grad = np.asarray(jax.grad(lambda x: jnp.sum(f(x)))(jnp.asarray(ROWS)))
    assert np.isnan(loss[2])  # 0 · log 0, where PyTorch's index-target loss is finite
    assert _check(p, "optax-softmax", loss, grad) == (True, True)
    assert _check(p, "pytorch", loss, grad) == (False, True)
    assert _check(p, "optax", loss, grad)[0] is False  # integer labels: +inf, and finite at −inf


def test_the_jax_builtin_ignored_posinf_rows_follow_the_optax_profile():
    _optax()
    from harness.implementations.jax_impl import JaxCPU

    # row 0 ignored, with a +inf logit: its cotangent is 0 (jnp.where), exp(x − lse) NaN at the +inf only
    p = _problem("mean", rows=ROWS[[0, 3, 3]], target=np.array([-100, 1, 0]))
    impl = JaxCPU()
    _, grad = impl.loss_and_grad(p)
    exp, applied = contracts.expected(p, reference.evaluate(p), "optax")
    assert [d.name for d in applied] == ["posinf-logit-inf"]
    assert np.isnan(exp.grad_hi[0, 1]) and (exp.grad_hi[0, [0, 2, 3]] == 0).all()
    assert agrees(p, "grad", grad, *exp.pair("grad"), BUDGETS)[0]
    assert not agrees(p, "grad", grad, *reference.evaluate(p).pair("grad"), BUDGETS)[0]  # PyTorch: a NaN row
    # with label smoothing jax's row is NaN, PyTorch's: the profile claims nothing there
    q = p.replace(label_smoothing=0.1)
    assert contracts.expected(q, reference.evaluate(q), "optax")[1] == ()
    assert np.isnan(impl.loss_and_grad(q)[1][0]).all()


@pytest.mark.parametrize("reduction", ["none", "sum"])
def test_scipy_log_softmax_is_what_the_scipy_profile_predicts(reduction):
    special = pytest.importorskip("scipy.special")
    keep = [0, 1, 2, 3] if reduction == "none" else [0, 2, 3]  # reduced: +inf, not inf + NaN
    rows, target = ROWS[keep], TARGETS[keep]
    p = _problem(reduction, rows=rows, target=target)
    with np.errstate(all="ignore"):
        per = -special.log_softmax(rows, axis=-1)[np.arange(len(rows)), target]
        prob = special.softmax(rows, axis=-1)
    grad = prob - np.eye(4, dtype=np.float32)[target]
    loss = per if reduction == "none" else per.sum()
    assert _check(p, "scipy", loss, grad) == (True, True)
    assert _check(p, "pytorch", loss, grad) == (False, True)  # the loss only: +inf, not NaN


def test_tensorflow_gradient_assumes_normalised_targets():
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 7))
    t = rng.uniform(0, 2, (5, 7))  # rows summing to anything but 1
    p = Problem(x, t, reduction="mean")
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels=tf.constant(t), logits=xt))
    grad = tape.gradient(loss, xt).numpy()
    assert _check(p, "tensorflow", loss.numpy(), grad) == (True, True)
    assert _check(p, "pytorch", loss.numpy(), grad) == (True, False)  # the loss is PyTorch's


def test_keras_mean_over_no_weight_is_zero(tmp_path):
    pytest.importorskip("keras")
    _optax()
    p = Problem(ROWS[3:].repeat(3, axis=0), np.array([-100, -100, -100]), reduction="mean")
    # in a child: the adapter needs Keras on jax, and this process may hold it on tensorflow
    code = ("import sys, numpy as np\nfrom harness.problem import Problem\nfrom harness.zoo.keras_ce import Keras\n"
            "d = np.load(sys.argv[1])\np = Problem(d['x'], d['t'], reduction='mean')\n"
            "loss, grad = Keras().loss_and_grad(p)\nnp.savez(sys.argv[1], loss=loss, grad=grad)\n")
    path = tmp_path / "keras.npz"
    np.savez(path, x=p.logits, t=p.target)
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "KERAS_BACKEND": "jax"})
    assert done.returncode == 0, done.stderr[-2000:]
    got = np.load(path)
    loss, grad = got["loss"], got["grad"]
    assert _check(p, "keras", loss, grad) == (True, True)
    assert _check(p, "pytorch", loss, grad) == (False, True)  # PyTorch: NaN (0/0), gradient 0


# -- verdicts ----------------------------------------------------------------------------------------


class OptaxLike(Implementation):
    """NumPy, as optax computes: lse(x) − x[y] with a logsumexp that is +inf for a +inf entry,
    gradient σ·(exp(x − lse) − onehot). Class indices, no weights."""

    name = "optax-like"
    contract = "optax"
    features = frozenset({"reduction:mean", "reduction:sum", "reduction:none", "kdim", "unbatched"})
    broken = False

    def _rows(self, problem):
        x, t = problem.rows()
        x = x.astype(np.float64)
        with np.errstate(all="ignore"):
            m = x.max(axis=1, keepdims=True)
            m = np.where(np.isinf(m), 0.0, m)
            lse = (m + np.log(np.exp(x - m).sum(axis=1, keepdims=True)))[:, 0]
            per = lse - x[np.arange(len(x)), t]
            if self.broken:  # a real defect: the +inf rows' loss silently 0
                per = np.where(np.isposinf(x).any(axis=1), 0.0, per)
            g = np.exp(x - lse[:, None]) - np.eye(x.shape[1])[t]
        return per, g

    def loss(self, problem):
        per, _ = self._rows(problem)
        value = {"none": per.reshape(problem.sample_shape), "sum": per.sum(), "mean": per.mean()}[problem.reduction]
        return np.asarray(value, problem.dtype)

    def grad(self, problem):
        _, g = self._rows(problem)
        if problem.reduction == "mean":
            g = g / len(g)
        return np.ascontiguousarray(problem.unrows(g)).astype(problem.dtype)


class BrokenOptaxLike(OptaxLike):
    name = "broken-optax-like"
    broken = True


def _judged(impl, problem, kind, run="pytorch"):
    outputs = {"loss": impl.loss(problem), "grad": impl.grad(problem)}
    return contracts.judge(kind, problem, outputs, reference.evaluate(problem), BUDGETS, run=run,
                           own=contracts.of(impl))


def test_a_declared_optax_plugin_is_a_convention_difference_not_a_failure():
    p = _problem("none")
    status, message, _, record = _judged(OptaxLike(), p, "special")
    assert status == "convention"
    assert record == {"contract": "pytorch", "convention": {"profile": "optax", "differences": ["posinf-logit-inf"]}}
    assert message.startswith("convention difference (optax: a +inf logit gives loss +inf")
    assert "under pytorch:" in message
    # judged by its own profile, it simply passes; torch's NaN is then the convention difference
    assert _judged(OptaxLike(), p, "special", run="optax")[0] == "pass"


def test_a_real_defect_under_its_own_profile_still_fails():
    status, message, _, record = _judged(BrokenOptaxLike(), _problem("none"), "special")
    assert status == "fail" and "convention" not in record
    assert "inf/NaN positions differ" in message


def test_a_campaign_records_the_contract_and_does_not_gate_on_conventions(tmp_path):
    req = campaign.Request(kinds=("accuracy", "gradient", "special"), impls=["tests/test_contracts.py:OptaxLike"],
                           dtypes=["float32"], scenarios=["posinf-one"], out=tmp_path / "run", isolate=False,
                           argv=[])
    done = campaign.run(req, log=lambda _msg: None)
    cells = {c["kind"]: c for c in done.data["cells"]}
    assert cells["special"]["status"] == "convention"
    assert all(c["contract"] == "pytorch" for c in cells.values())
    assert done.verdict == "pass"
    row = done.data["implementations"][0]
    assert row["contract"] == "optax" and row["counts"]["convention"] == 1 and row["verdict"] == "pass"
    html = (tmp_path / "run" / "report.html").read_text()
    assert "convention difference" in html and "declares optax" in html


def test_contract_flag_bad_name_is_one_line_exit_2(capsys):
    code = cli.main(["check", "--impl", "numpy", "--scenario", "posinf-one", "--contract", "nope"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "--contract: unknown contract 'nope'; use one of pytorch" in err[0]
