"""The registry: built-ins, entry points (the example package, a broken one) and --impl specs."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import registry
from harness.cli import main
from harness.problem import Problem

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "xent-plugin-example"


def _fake_distribution(site: Path, name: str, entry_points: str) -> None:
    """What `pip install` leaves behind for the entry-point machinery: a .dist-info folder."""
    info = site / f"{name}-0.1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def installed_example(tmp_path, monkeypatch):
    site = tmp_path / "site"
    _fake_distribution(site, "xent_plugin_example",
                       "[xent_harness.implementations]\nexample-logsumexp = xent_plugin_example:LogSumExp\n")
    _fake_distribution(site, "broken_plugin",
                       "[xent_harness.implementations]\nbroken = no_such_module_xyz:Thing\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(EXAMPLE))
    yield
    sys.modules.pop("xent_plugin_example", None)


def test_example_package_registers_through_the_entry_point(installed_example, tmp_path):
    entries = {e.name: e for e in registry.discover()}
    ex = entries["example-logsumexp"]
    assert ex.impl is not None and ex.unavailable() is None
    assert ex.origin.startswith("entry point example-logsumexp")
    assert ex.impl.dtypes == frozenset({"float32", "float64"}) and ex.impl.has_grad
    # ...and it is held to the same gate as the built-ins.
    code = main(["check", "--impl", "example-logsumexp", "--scenario", "weight-*", "--dtype", "float64",
                 "--no-isolate", "--out", str(tmp_path / "run")])
    assert code == 0


def test_a_broken_plugin_is_listed_with_its_error_and_crashes_nothing(installed_example, capsys):
    entries = {e.name: e for e in registry.discover()}
    assert "No module named 'no_such_module_xyz'" in entries["broken"].unavailable()
    assert main(["list", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["broken"]["available"] is False and "could not load" in rows["broken"]["reason"]
    assert rows["numpy"]["available"] is True and "float32" in rows["numpy"]["dtypes"]


def test_builtins_are_listed_with_reasons_when_unavailable(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("numpy", "numpy-naive", "torch", "torch-cuda", "jax", "jax-gpu", "cupy"):
        assert name in out
    assert "canary" in out
    assert "unavailable: no NVIDIA GPU" in out or "unavailable:" in out


def test_impl_spec_forms():
    faulty = ROOT / "tests" / "plugins" / "faulty.py"
    p = Problem(np.array([[1.0, 2.0, 3.0]], np.float32), np.array([2]))
    by_file = registry.load_spec(f"{faulty}:Correct")  # a class, instantiated without arguments
    by_module = registry.load_spec("tests.plugins.faulty:Correct")
    bare = registry.load_spec("tests.plugins.faulty:bare_loss")  # a plain function
    for impl in (by_file, by_module, bare):
        np.testing.assert_allclose(impl.loss(p), 0.40760596, rtol=1e-6)
    assert by_file.has_grad and not bare.has_grad
    assert by_file.supports(p) is None
    assert "dtype float16 not supported" in by_file.supports(p.astype("float16"))
    assert "probability_target" in by_file.supports(Problem(p.logits, np.full((1, 3), 1 / 3, np.float32)))
    assert bare.supports(p.astype("float16")) is None  # no declared dtypes: it is given everything


@pytest.mark.parametrize(("spec", "fragment"), [
    ("no.such.module:thing", "no module named 'no'"),
    ("/no/such/file.py:X", "does not exist"),
    ("justaname", "neither a registered name"),
])
def test_bad_specs_are_clear_errors(spec, fragment, capsys):
    with pytest.raises(registry.ImplementationError, match=fragment.split()[0]):
        registry.select([spec])
    assert main(["list", "--impl", spec]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1


def test_a_spec_whose_import_fails_is_that_plugins_failing_result(capsys):
    """Only the child imports it: its AttributeError is the plugin's result, not a usage error."""
    chosen, _ = registry.select(["tests.plugins.faulty:Missing"])
    assert chosen[0].impl is None and chosen[0].error.startswith("could not load: ")
    assert "AttributeError" in chosen[0].error and "\n" not in chosen[0].error


def test_an_implementation_instance_is_accepted_as_is():
    class Mine(registry.Implementation):
        dtypes = frozenset({"float64"})

        def loss(self, problem):
            return np.zeros(problem.output_shape, problem.dtype)

    impl = registry.as_implementation(Mine(), "mine", "test")
    assert impl.name == "mine" and not impl.has_grad


def test_unavailable_builtin_named_explicitly_is_an_error():
    with pytest.raises(registry.ImplementationError, match="unavailable"):
        registry.select(["torch-cuda"])


def test_every_builtin_names_its_devices_in_the_one_vocabulary():
    from harness import registry, vocabulary

    for name, spec in registry.BUILTINS.items():
        module, attr = spec.split(":")
        cls = getattr(__import__(module, fromlist=[attr]), attr)
        assert set(cls.devices) <= set(vocabulary.DEVICES), (name, cls.devices)


def test_names_are_unique_in_a_run(tmp_path):
    """A plugin named like a built-in would have its failures recorded as the built-in's."""
    from harness import registry

    (tmp_path / "p.py").write_text("class Impostor:\n    name = 'numpy'\n    def loss(self, logits, target, **kw):\n        return 0.0\n"
                                   "class Twin:\n    name = 'twin'\n    def loss(self, logits, target, **kw):\n        return 0.0\n")
    with pytest.raises(registry.ImplementationError, match=r"the name 'numpy' is taken \(by a built-in\)"):
        registry.select([f"{tmp_path}/p.py:Impostor"])
    with pytest.raises(registry.ImplementationError, match="given 2 times"):
        registry.select(["numpy", "numpy"])
    with pytest.raises(registry.ImplementationError, match=r"the name 'twin' is taken \(by .*p.py:Twin\)"):
        registry.select([f"{tmp_path}/p.py:Twin", f"{tmp_path}/./p.py:Twin"])
