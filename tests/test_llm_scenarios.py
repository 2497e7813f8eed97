"""The language-model scenarios (family ``llm``): realistic logits, 7 % ignored targets, mean
reduction, deterministic; the mid-size member is in the default run, the full-size ones only with
--include-large or by name."""

from __future__ import annotations

import numpy as np
import pytest

from harness import scenarios as S
from harness import sweeps
from harness.cli import main

MID = "llm-512x128256"
LARGE = ("llm-8192x128256", "llm-8192x262144")


def test_members():
    fam = {s.name: s for s in S.select(["llm"])}
    assert set(fam) == {MID, *LARGE}
    assert fam[MID].shape == (512, 128256)
    assert fam["llm-8192x128256"].shape == (8192, 128256)
    assert fam["llm-8192x262144"].shape == (8192, 262144)
    assert "large" not in fam[MID].tags and not fam[MID].quick
    assert all("large" in fam[n].tags for n in LARGE)
    # the default run affords one dtype of the mid-size member (bfloat16, as models are trained)
    assert set(fam[MID].dtypes) == {"bfloat16"}
    assert all({"bfloat16", "float32"} <= set(fam[n].dtypes) for n in LARGE)
    for s in fam.values():
        opts = S.options(s)
        assert opts["reduction"] == "mean" and opts["ignore_index"] == -100
        assert 0.05 <= opts["ignore_fraction"] <= 0.10
        assert s.kind == "llm" and s.family == "llm"


@pytest.fixture(scope="module")
def mid():
    # the default run judges bfloat16 only; the same draw in float32 is what the large members
    # (and --dtype float32 on a copy of the scenario) use
    import dataclasses

    s = dataclasses.replace(S.get(MID), dtypes=("bfloat16", "float32"))
    return {d: s.problem(d) for d in ("float32", "bfloat16")}


def test_mid_size_problem(mid):
    for d, p in mid.items():
        assert p.logits.shape == (512, 128256) and p.dtype.name == d
        assert p.reduction == "mean" and p.weight is None and p.label_smoothing == 0.0
        t = p.target
        ignored = t == -100
        assert ignored.sum() == round(0.07 * 512)  # exactly the fraction, as ignore_fraction promises
        assert ((t[~ignored] >= 0) & (t[~ignored] < 128256)).all()
        x = p.logits.astype(np.float32)
        assert np.isfinite(x).all()
        # a normal body with sd 2, and a handful of tokens 10-20 above it in every row
        body = x[:, :1000]
        assert 1.9 < float(body[body < 9].std()) < 2.1
        high = (x >= 10).sum(axis=1)
        assert high.min() >= 1 and 4 <= high.mean() <= 5.5 and x.max() <= 20
        # the target is usually one of them (the model is right), else anywhere (the long tail)
        on_peak = x[np.flatnonzero(~ignored), t[~ignored]] >= 10
        assert 0.7 < on_peak.mean() < 0.9


def test_deterministic(mid):
    assert S.get(MID).problem("bfloat16").digest == mid["bfloat16"].digest
    assert mid["float32"].digest != mid["bfloat16"].digest
    # the bfloat16 logits are the float32 ones rounded once
    import ml_dtypes

    assert np.array_equal(mid["float32"].logits.astype(ml_dtypes.bfloat16), mid["bfloat16"].logits)


def _selected(tmp_path, monkeypatch, *argv) -> set[str]:
    seen: set[str] = set()

    def record(plan, results, **kw):
        seen.update(s.name for s in plan.scenarios)

    monkeypatch.setattr(sweeps, "run", record)
    main(["check", "--impl", "numpy", "--out", str(tmp_path / "run"), "--force", *argv])
    return seen


def test_default_run_has_the_mid_size_member_only(tmp_path, monkeypatch):
    default = _selected(tmp_path, monkeypatch)
    assert MID in default and not set(LARGE) & default
    assert set(LARGE) <= _selected(tmp_path, monkeypatch, "--include-large")
    assert _selected(tmp_path, monkeypatch, "--scenario", "llm-8192x262144") == {"llm-8192x262144"}
    assert MID not in _selected(tmp_path, monkeypatch, "--quick")
