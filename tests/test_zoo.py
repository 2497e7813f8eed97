"""The zoo (harness/zoo/, docs/zoo.md): the adapters are right where they claim support (so what
the sweeps find is the library's), the converters are bit-exact, the NotImplementedError rule,
the torch-compile built-in, ``xent-harness zoo`` writes its page, and ``list`` works without any
zoo library.

Adapters whose library is not installed are skipped with the reason their ``available()`` gives;
the heavy libraries' tests are marked slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

from harness import registry, runner, zoo
from harness.cli import main
from harness.problem import Problem

ROOT = Path(__file__).resolve().parent.parent
#: Adapters whose library imports or compiles for long (tens of seconds per test).
HEAVY = {"tinygrad", "keras", "tensorflow", "transformers", "paddle"}


def _marks(name: str):
    return [pytest.mark.slow] if name in HEAVY else []


def _isolated(target: str, name: str) -> runner.Runner:
    return runner.Runner(registry.Entry(name, target, extra={"spec": target}), isolate=True, timeout=300)


# -- the adapters agree with torch float64 where they claim support ---------------------------------


def _ordinary() -> list[tuple[str, Problem]]:
    """Ordinary float32 problems, one per feature (float64 once): N(0, 2²) logits, C = 5."""
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((6, 5)) * 2).astype(np.float32)
    t = rng.integers(1, 5, 6)
    w = rng.uniform(0.5, 2, 5).astype(np.float32)
    e = np.exp(rng.standard_normal((6, 5)))
    p = (e / e.sum(1, keepdims=True)).astype(np.float32)
    ignored = t.copy()
    ignored[[1, 4]] = -100
    inside = t.copy()
    inside[2] = 0
    x3 = (rng.standard_normal((4, 5, 3)) * 2).astype(np.float32)
    t3 = rng.integers(0, 5, (4, 3))
    return [
        ("plain-mean", Problem(x, t)), ("plain-sum", Problem(x, t, reduction="sum")),
        ("plain-none", Problem(x, t, reduction="none")),
        ("weight-mean", Problem(x, t, weight=w)), ("weight-none", Problem(x, t, weight=w, reduction="none")),
        ("ignore-mean", Problem(x, ignored)),
        ("ignore-inside-weight-sum", Problem(x, inside, weight=w, ignore_index=0, reduction="sum")),
        ("smooth-mean", Problem(x, t, label_smoothing=0.1)),
        ("smooth-none", Problem(x, t, label_smoothing=0.1, reduction="none")),
        ("prob-mean", Problem(x, p)), ("prob-none", Problem(x, p, reduction="none")),
        ("prob-smooth-sum", Problem(x, p, label_smoothing=0.1, reduction="sum")),
        ("kdim-mean", Problem(x3, t3)), ("kdim-none", Problem(x3, t3, reduction="none")),
        ("unbatched-mean", Problem(x[0], np.array(t[0]))),
        ("unbatched-sum", Problem(x[0], np.array(t[0]), reduction="sum")),
        ("float64-mean", Problem(x.astype(np.float64), t)),
    ]


def _torch64(p: Problem, **override):
    """torch.nn.functional.cross_entropy of the same inputs in float64: (loss, grad)."""
    import torch
    import torch.nn.functional as F

    x = torch.tensor(p.logits.astype(np.float64), requires_grad=True)
    t = torch.tensor(p.target.astype(np.float64)) if p.probability_target else torch.tensor(
        p.target.reshape(p.sample_shape))
    w = None if p.weight is None else torch.tensor(p.weight.astype(np.float64))
    kw = dict(weight=w, ignore_index=p.ignore_index, reduction=p.reduction, label_smoothing=p.label_smoothing)
    loss = F.cross_entropy(x, t, **(kw | override))
    (g,) = torch.autograd.grad(loss.sum(), x)
    return loss.detach().numpy(), g.numpy()


#: Where a library itself differs from PyTorch on ordinary inputs (a finding, not the adapter's
#: mistake): the adapter's result must equal PyTorch's with these arguments instead.
LIBRARY_DEVIATIONS = {
    # ForCausalLMLoss takes **kwargs and never passes label_smoothing on to cross_entropy
    ("transformers", "smooth-mean"): {"label_smoothing": 0.0},
}


@pytest.mark.parametrize("adapter", [pytest.param(a, id=a.name, marks=_marks(a.name)) for a in zoo.ADAPTERS])
def test_each_adapter_agrees_with_torch_float64_where_it_claims_support(adapter):
    r = _isolated(adapter.target, adapter.name)
    try:
        described = r.start()
        if described["available"]:
            pytest.skip(f"{adapter.name}: {described['available']}")
        assert described["name"] == adapter.name
        checked = []
        for label, p in _ordinary():
            try:
                pair = r.call("loss_and_grad", p) if described["grad"] else (r.call("loss", p), None)
            except runner.Unsupported:
                continue
            loss, grad = pair
            ref_loss, ref_grad = _torch64(p, **LIBRARY_DEVIATIONS.get((adapter.name, label), {}))
            assert loss.dtype == p.dtype and loss.shape == p.output_shape, label
            np.testing.assert_allclose(loss.astype(np.float64), ref_loss, rtol=3e-5, atol=1e-6, err_msg=label)
            if grad is not None:
                assert grad.dtype == p.dtype and grad.shape == p.logits.shape, label
                np.testing.assert_allclose(grad.astype(np.float64), ref_grad, rtol=3e-5, atol=1e-6, err_msg=label)
            checked.append(label)
        assert "plain-mean" in checked or "plain-sum" in checked, f"{adapter.name} supports no plain problem"
        for (name, label), _ in LIBRARY_DEVIATIONS.items():  # the deviation is still there
            if name == adapter.name:
                assert label in checked
    finally:
        r.close()


def test_transformers_really_drops_label_smoothing():
    """The deviation above is the library's: ForCausalLMLoss called directly ignores it."""
    pytest.importorskip("transformers")
    import torch
    from transformers.loss.loss_utils import ForCausalLMLoss

    x = torch.randn(6, 5, dtype=torch.float64)
    t = torch.tensor([0, 1, 2, 3, 4, 0])
    smoothed = ForCausalLMLoss(x, None, 5, shift_labels=t, label_smoothing=0.5)
    assert torch.equal(smoothed, ForCausalLMLoss(x, None, 5, shift_labels=t))
    assert not torch.equal(smoothed, torch.nn.functional.cross_entropy(x.float(), t, label_smoothing=0.5))


# -- the converters ---------------------------------------------------------------------------------

_ROUNDTRIP = """
import numpy as np
from harness.zoo import convert as c
lib = {lib!r}
if lib == "jax":
    from harness.implementations.jax_impl import _jax
    _jax()  # float64 on
pairs = {{"torch": (c.to_torch, c.from_torch), "jax": (c.to_jax, c.from_jax), "tf": (c.to_tf, c.from_tf),
          "paddle": (c.to_paddle, c.from_paddle), "tinygrad": (c.to_tinygrad, c.from_tinygrad)}}
to, back = pairs[lib]
every = np.arange(1 << 16, dtype=np.uint16)
for dt in (np.float16, c.BFLOAT16):
    y = back(to(every.view(dt)))
    assert y.dtype == np.dtype(dt), (lib, y.dtype)
    assert np.array_equal(c.bits(y), every), (lib, np.dtype(dt).name, "bits changed")
for dt in (np.float16, c.BFLOAT16, np.float32, np.float64):  # 0-d arrays stay 0-d (a reduced loss)
    for bits in (0x3C00, 0x8001, 0x7E00):
        x = np.array(bits, np.uint16).view(dt) if np.dtype(dt).itemsize == 2 else np.array(1.5, dt)
        y = back(to(x))
        assert y.shape == () and y.dtype == x.dtype and y.tobytes() == x.tobytes(), (lib, np.dtype(dt).name, y.shape)
for dt, tiny in ((np.float32, np.float32(1e-45)), (np.float64, 5e-324)):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, tiny, -tiny, 1.5, np.finfo(dt).max], dt)
    y = back(to(x))
    assert y.dtype == x.dtype and x.tobytes() == y.tobytes(), (lib, np.dtype(dt).name)
print("ok")
"""

_CONVERTERS = [("torch", "torch", False), ("jax", "jax", False), ("tf", "tensorflow", True),
               ("paddle", "paddle", True), ("tinygrad", "tinygrad", True)]


@pytest.mark.parametrize("lib, module", [pytest.param(lib, module, id=lib, marks=[pytest.mark.slow] if slow else [])
                                         for lib, module, slow in _CONVERTERS])
def test_converters_are_bit_exact_both_ways_on_every_16_bit_pattern(lib, module):
    import importlib.util
    import shutil

    if importlib.util.find_spec(module) is None:
        pytest.skip(f"python package {module!r} is not installed")
    if lib == "tinygrad" and shutil.which("clang") is None:
        pytest.skip("tinygrad's CPU device needs clang")
    # a child process: TensorFlow and paddle leave threads and global state in whoever imports them
    out = subprocess.run([sys.executable, "-c", _ROUNDTRIP.format(lib=lib)], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_bits_views_and_refuses_wider_dtypes():
    from harness.zoo import convert

    x = np.array([1.0, -0.0, np.inf], convert.BFLOAT16)
    assert convert.bits(x).tolist() == [0x3F80, 0x8000, 0x7F80]
    assert convert.from_bits(convert.bits(x), convert.BFLOAT16).tobytes() == x.tobytes()
    with pytest.raises(TypeError, match="16-bit"):
        convert.bits(np.zeros(2, np.float32))


# -- NotImplementedError means "not supported" --------------------------------------------------------

_DECLINING = """
import numpy as np

class Declines:
    '''float64 log-softmax loss; its gradient is not implemented, nor is reduction 'sum'.'''
    name = "declines"

    def supports(self, problem):
        return "float16 declined by supports()" if problem.dtype == np.float16 else None

    def loss(self, logits, target, *, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
        if reduction == "sum":
            raise NotImplementedError("reduction 'sum' is not implemented here")
        x = np.asarray(logits, np.float64)
        m = x.max(axis=1, keepdims=True)
        with np.errstate(invalid="ignore"):
            lse = (np.log(np.exp(x - m).sum(axis=1, keepdims=True)) + m)[:, 0]
        nll = lse - x[np.arange(len(target)), target]
        return (nll.mean() if reduction == "mean" else nll).astype(np.asarray(logits).dtype)

    def grad(self, logits, target, **kwargs):
        raise NotImplementedError("no gradient for this one")
"""


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "isolated"])
def test_not_implemented_error_is_an_unsupported_cell_with_its_message(tmp_path, isolate):
    from harness import campaign

    plugin = tmp_path / "declines.py"
    plugin.write_text(_DECLINING)
    done = campaign.run(campaign.Request(kinds=campaign.CHECK, impls=[f"{plugin}:Declines"],
                                         scenarios=["scale-1", "ignore-partial-sum", "masked-rows"],
                                         dtypes=["float16", "float32"], isolate=isolate, out=tmp_path / "run",
                                         argv=["check"]), log=lambda m: None)
    cells = {(c["kind"], c["dtype"], c["scenario"]): c for c in done.data["cells"]}
    assert not [c for c in cells.values() if c["status"] == "error"]
    grad = cells["gradient", "float32", "scale-1"]
    assert grad["status"] == "unsupported" and grad["message"] == "no gradient for this one"
    assert cells["accuracy", "float32", "scale-1"]["status"] == "pass"  # the loss still counts
    summed = cells["accuracy", "float32", "ignore-partial-sum"]
    assert summed["status"] == "unsupported" and summed["message"] == "reduction 'sum' is not implemented here"
    assert cells["gradient", "float32", "ignore-partial-sum"]["status"] == "unsupported"
    # the special-value cell judges the loss alone when only the gradient is declined
    assert cells["special", "float32", "masked-rows"]["status"] == "pass"
    declined = cells["accuracy", "float16", "scale-1"]  # supports(problem), in the child when isolated
    assert declined["status"] == "unsupported" and declined["message"] == "float16 declined by supports()"


@pytest.mark.parametrize("isolate", [False, True], ids=["in-process", "isolated"])
def test_the_runner_turns_not_implemented_error_into_unsupported(tmp_path, isolate):
    plugin = tmp_path / "declines.py"
    plugin.write_text(_DECLINING + "\nclass Silent(Declines):\n    name = 'silent'\n"
                      "    def loss(self, *a, **k):\n        raise NotImplementedError\n")
    spec = f"{plugin}:Silent"
    impl = registry.load_spec(spec)
    r = runner.Runner(registry.Entry("silent", spec, impl, extra={"spec": spec}), isolate=isolate, timeout=60)
    p = Problem(np.array([[1.0, 2.0]], np.float32), np.array([0]))
    try:
        with pytest.raises(runner.Unsupported, match=r"^loss: not implemented \(NotImplementedError\)$"):
            r.call("loss", p)
        with pytest.raises(runner.Unsupported, match=r"^no gradient for this one$"):
            r.call("grad", p)
        with pytest.raises(runner.Unsupported, match=r"^throughput: not implemented"):  # a timed loss
            r.call("throughput", (p, "forward", 3))
    finally:
        r.close()


# -- torch-compile ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_torch_compile_is_compiled_outside_the_timing_and_never_falls_back_to_eager():
    pytest.importorskip("torch")
    entry = registry.builtin("torch-compile")
    if entry.unavailable():
        pytest.skip(entry.unavailable())
    import torch._dynamo.utils as dynamo_utils

    impl = entry.impl
    graphs = lambda: dynamo_utils.counters["stats"]["unique_graphs"]  # noqa: E731
    rng = np.random.default_rng(3)

    def check(p):
        loss, grad = impl.loss_and_grad(p)
        ref_loss, ref_grad = _torch64(p)
        np.testing.assert_allclose(loss, ref_loss, rtol=2e-6)
        np.testing.assert_allclose(grad, ref_grad, rtol=2e-6, atol=1e-7)

    start = graphs()
    for n, c in ((2, 4), (7, 3), (5, 11)):  # dynamic shapes: one graph for all three
        check(Problem(rng.standard_normal((n, c)).astype(np.float32), rng.integers(0, c, n), reduction="sum"))
    assert graphs() - start == 1
    start = graphs()
    for k in range(10):  # label_smoothing is specialised: 10 graphs, past dynamo's default limit of 8
        check(Problem(rng.standard_normal((3, 4)).astype(np.float32), rng.integers(0, 4, 3), reduction="sum",
                      label_smoothing=0.05 * (k + 1)))
    assert graphs() - start == 10  # each compiled, none left to eager ATen
    p = Problem(rng.standard_normal((6, 5)).astype(np.float64), rng.integers(0, 5, 6))
    start = graphs()
    timed = impl.prepare(p, backward=True)
    assert graphs() - start == 1  # prepare() compiled (a new dtype and reduction)...
    timed()
    assert graphs() - start == 1  # ...and the timed call does not


# -- `xent-harness zoo` ----------------------------------------------------------------------------


def test_zoo_on_a_tiny_scenario_set_writes_the_table(tmp_path, monkeypatch, capsys):
    pytest.importorskip("scipy")
    monkeypatch.setattr(registry, "BUILTINS", {k: registry.BUILTINS[k] for k in ("numpy", "numpy-naive", "cupy")})
    scipy_adapter = zoo.by_name()["scipy"]
    missing = zoo.Entry("no-such-lib", "harness.zoo.no_such_module:Nothing", ("no-such-dist",), "zoo-none")
    monkeypatch.setattr(zoo, "ADAPTERS", (scipy_adapter, missing))
    page = tmp_path / "zoo.md"
    code = main(["zoo", "--scenario", "scale-1e-06", "--scenario", "posinf-one", "--dtype", "float32",
                 "--out", str(tmp_path / "run"), "--doc", str(page)])
    assert code == 0, capsys.readouterr()
    text = page.read_text()
    # the command that made it, less where it wrote
    assert "`xent-harness zoo --scenario scale-1e-06 --scenario posinf-one --dtype float32`" in text
    scipy_version = metadata.version("scipy")
    # +inf logit: inf, not PyTorch's NaN (scipy's contract profile: a convention difference)
    assert f"| `scipy` | scipy {scipy_version} | `zoo-scipy` | pass | 4 | 0 | 0 | 0 | 1 |" in text
    assert "| `numpy` | numpy" in text and "| `numpy-naive` (canary) |" in text
    assert "| `cupy` |" in text
    assert "| `no-such-lib` | - | `zoo-none` | unavailable: could not load" in text  # its module is missing
    assert "- convention special float32: 1 scenario (`posinf-one`); e.g. `posinf-one`: convention difference (scipy: " in text
    side = json.loads((tmp_path / "run" / "zoo.json").read_text())
    assert side["libraries"]["scipy"] == f"scipy {scipy_version}"
    # the page is a function of the run directory: regenerated, it is the same
    from harness.zoo import table

    again = tmp_path / "again.md"
    assert table.main([str(tmp_path / "run"), str(again)]) == 0
    assert again.read_text() == text


def test_each_finding_line_gives_its_diagnosis_unless_known():
    from harness.zoo import table

    def cell(scen, text=None, known=False, dtype="float32"):
        return {"impl": "lib", "status": "fail", "kind": "accuracy", "dtype": dtype, "scenario": scen,
                "message": "m", **({"known": "reason"} if known else {}),
                **({"diagnosis": {"text": text}} if text else {})}

    lines = table._findings([cell("a"), cell("b", "matches: mean over N | not the weights"),
                             cell("c", "matches: sum in float16", known=True, dtype="float16")], "lib")
    assert lines[0].endswith("— **diagnosis** (`b`): matches: mean over N \\| not the weights"), lines
    assert "diagnosis" not in lines[1], lines  # known: pyproject.toml has its reason


def test_the_quick_zoo_adds_the_convention_scenarios():
    from harness import scenarios
    from harness.zoo import table

    names = table.scenario_names(True, None)
    assert set(table.QUICK_EXTRA) <= set(names)
    assert {s.name for s in scenarios.select(None, quick=True)} <= set(names)
    assert table.scenario_names(False, None) is None and table.scenario_names(True, ["x"]) == ["x"]


# -- declarations: entry points, extras, laziness, `list` without the libraries ------------------------


def test_pyproject_declares_every_adapter_as_an_entry_point_with_an_extra():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    points = project["entry-points"][registry.ENTRY_POINT_GROUP]
    assert points == {a.name: a.target for a in zoo.ADAPTERS}
    extras = project["optional-dependencies"]
    for a in zoo.ADAPTERS:
        assert a.extra in extras and a.extra in extras["zoo"][0], a.extra
    assert not any("zoo" in x for x in extras["all"]), "the zoo must stay out of the default `all` extra"
    for a in zoo.ADAPTERS:  # the class the entry point names says the same name and extra
        impl = registry.load_spec(a.target)
        assert impl.name == a.name and impl.extra == a.extra


_BLOCK = """
import importlib.abc, importlib.util, sys
BLOCKED = {blocked!r}
_find_spec = importlib.util.find_spec
def find_spec(name, package=None):
    if name.split(".")[0] in BLOCKED:
        return None
    return _find_spec(name, package)
importlib.util.find_spec = find_spec
class _Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None
sys.meta_path.insert(0, _Blocker())
"""


def test_list_works_with_no_zoo_library_installed(tmp_path):
    blocked = ["scipy", "sklearn", "optax", "tinygrad", "keras", "tensorflow", "transformers", "paddle"]
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_BLOCK.format(blocked=blocked))
    registered = {ep.name for ep in metadata.entry_points(group=registry.ENTRY_POINT_GROUP)}
    if not {a.name for a in zoo.ADAPTERS} <= registered:  # a checkout installed before the zoo
        info = site / "xent_zoo_test-0.1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: xent_zoo_test\nVersion: 0.1.0\n")
        (info / "entry_points.txt").write_text(
            f"[{registry.ENTRY_POINT_GROUP}]\n" + "".join(f"{a.name} = {a.target}\n" for a in zoo.ADAPTERS))
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    out = subprocess.run([sys.executable, "-m", "harness", "list", "--json"], capture_output=True, text=True,
                         env=env, cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    for a in zoo.ADAPTERS:
        row = rows[a.name]
        assert row["available"] is False, a.name
        assert "is not installed" in row["reason"] and f"xent-harness[{a.extra}]" in row["reason"], row["reason"]
    assert rows["numpy"]["available"] is True


def test_importing_the_zoo_and_its_adapters_imports_no_library():
    code = textwrap.dedent("""
        import sys
        import harness.zoo, harness.zoo.convert, harness.zoo.table
        from harness import registry
        for a in harness.zoo.ADAPTERS:
            registry.load_spec(a.target).describe()
        heavy = {"scipy", "sklearn", "optax", "jax", "tinygrad", "keras", "tensorflow", "transformers",
                 "paddle", "torch"} & {m.split(".")[0] for m in sys.modules}
        assert not heavy, heavy
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
