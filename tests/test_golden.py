"""Golden reference files: intact, reproducible, and tamper-evident."""

import shutil

import numpy as np
import pytest

from harness import golden
from harness.cli import main


def test_manifest_lists_the_whole_catalogue_and_hashes_match():
    manifest = golden.load_manifest()
    assert set(manifest["cases"]) == {c.name for c in golden.CASES}
    assert {"mpmath", "gmpy2", "generator"} <= set(manifest)
    assert golden.verify(recompute=3, log=lambda *_: None) == []


def test_tutorial_case_holds_the_documented_values():
    g = golden.load("tutorial-example-none")
    np.testing.assert_allclose(g.loss_hi, [0.41703001627783, 2.52449721525792], rtol=1e-13)
    assert g.loss_str[0].startswith("0.41703001627783")


def test_stored_problem_roundtrips_bit_exactly():
    for name in ("ordinary-bfloat16", "prob-targets-float16", "weights-smoothing-bfloat16"):
        g = golden.load(name)
        assert g.problem.digest == golden.case(name).build().digest


@pytest.fixture
def copy_of_references(tmp_path):
    dest = tmp_path / "references"
    shutil.copytree(golden.default_dir(), dest)
    return dest


def test_a_tampered_file_is_detected(copy_of_references):
    path = copy_of_references / "tiny-loss-20-f32.npz"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    found = golden.verify(copy_of_references, recompute=0, log=lambda *_: None)
    assert any("tiny-loss-20-f32" in f and "sha256" in f for f in found)
    with pytest.raises(ValueError, match="sha256"):
        golden.load("tiny-loss-20-f32", copy_of_references)
    assert main(["references", "verify", "--dir", str(copy_of_references), "--sample", "0"]) == 1


def test_a_consistently_rewritten_value_is_caught_by_recomputation(copy_of_references):
    # Someone edits a stored loss *and* updates the manifest hash: only recomputation notices.
    import hashlib
    import json

    name = "tiny-loss-200-f64"
    path = copy_of_references / f"{name}.npz"
    with np.load(path) as data:
        payload = dict(data)
    payload["loss_hi"] = payload["loss_hi"] * 2
    np.savez_compressed(path, **payload)
    manifest_path = copy_of_references / golden.MANIFEST
    manifest = json.loads(manifest_path.read_text())
    manifest["cases"][name]["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest_path.write_text(json.dumps(manifest))
    found = golden.verify(copy_of_references, recompute=None, log=lambda *_: None)
    assert found == [f"{name}: recomputed reference differs from the stored one"]


def test_missing_manifest_is_a_usage_error(tmp_path, capsys):
    assert main(["references", "verify", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "references generate" in err


def test_cases_are_data_and_each_matches_its_stored_file():
    """golden.toml is the catalogue: every entry expands to cases (per dtype where named so) whose
    problems are exactly the stored files' (same digests), in the manifest's set."""
    import tomllib
    from importlib import resources

    entries = tomllib.loads(resources.files("harness").joinpath("golden.toml").read_text())["case"]
    expected = set()
    for e in entries:
        if "{dtype}" in e["name"]:
            expected |= {e["name"].format(dtype=d) for d in ("float16", "bfloat16", "float32", "float64")}
        else:
            expected.add(e["name"])
    assert expected == {c.name for c in golden.CASES}
    for c in golden.CASES:
        assert golden.load(c.name).problem.digest == c.build().digest, c.name


def test_a_bad_generator_names_the_field():
    with pytest.raises(ValueError, match=r"golden\.toml: logits: unknown generator"):
        golden._build({"logits": {"gauss": 1}, "target": [0]}, "float32")


def test_the_verify_sample_is_drawn_afresh_and_can_be_replayed(copy_of_references):
    """A consistently tampered file is caught when drawn: a fixed draw would never reach it."""
    def drawn(**kw):
        said = []
        golden.verify(copy_of_references, recompute=2, log=said.append, **kw)
        line = next(m for m in said if m.startswith("recomputed:"))
        seed = next(int(m.split("--seed ")[1].split()[0]) for m in said if m.startswith("sample:"))
        return seed, line

    draws = [drawn() for _ in range(4)]
    assert len({line for _, line in draws}) > 1  # 4 draws of 2 out of 44: the same 4 times is ~1e-8
    seed, line = draws[0]
    assert drawn(seed=seed) == (seed, line)  # the printed seed replays the draw


@pytest.mark.parametrize("args, manifest, fragment", [
    (["--sample", "-1"], None, "--sample must be a number of cases"),
    ([], "{}", "is not a references manifest"),
    ([], "\x00\xff binary", "is not a JSON manifest"),
])
def test_bad_verify_input_is_one_line_exit_2(copy_of_references, capsys, args, manifest, fragment):
    if manifest is not None:
        (copy_of_references / golden.MANIFEST).write_bytes(manifest.encode("latin-1"))
    assert main(["references", "verify", "--dir", str(copy_of_references), *args]) == 2
    err = capsys.readouterr().err
    assert fragment in err and err.count("\n") == 1 and "Traceback" not in err
