"""Synthetic results files for the report tests (schema: docs/results-schema.md, version 1).

The sweep engine does not exist yet, so :func:`make_results` fabricates a realistic run: a
handful of implementations with the failure modes the harness is built to catch (the canary
``numpy-naive`` overflowing, torch-style ``lse(x) - x_t`` losing every digit of tiny losses but
passing the backward-stable budget, a special-value mismatch, a plugin that raises), two
unavailable implementations, four dtypes, ~40 scenarios (or the real catalogue with
``full=True``), throughput rows with the same-run copy bandwidth, and a ``baseline`` variant
with regressions, a new failure, a fixed cell and speed changes inside and outside the noise.

Everything is deterministic (a seeded generator per cell). With ``encode=True`` (the default)
non-finite numbers are the strings ``"inf"``, ``"-inf"`` and ``"nan"``, exactly as the JSON
writer stores them.
"""

from __future__ import annotations

import copy
import math
import zlib
from fnmatch import fnmatchcase

import numpy as np

INF = math.inf
NAN = math.nan
DTYPES = ("float16", "bfloat16", "float32", "float64")
PRECISION = {"float16": 11, "bfloat16": 8, "float32": 24, "float64": 53}
EMIN = {"float16": -14, "bfloat16": -126, "float32": -126, "float64": -1022}
EXP_OVERFLOW = {"float16": 11.09, "bfloat16": 88.72, "float32": 88.72, "float64": 709.78}
BUDGETS = {
    "float64": {"loss_ulp": 4, "loss_scaled": 64, "grad_ulp": 4, "grad_scaled": 64},
    "float32": {"loss_ulp": 4, "loss_scaled": 64, "grad_ulp": 4, "grad_scaled": 64},
    "bfloat16": {"loss_ulp": 1, "loss_scaled": 8, "grad_ulp": 1, "grad_scaled": 8},
    "float16": {"loss_ulp": 1, "loss_scaled": 8, "grad_ulp": 1, "grad_scaled": 8},
}
HIST_EDGES = [0.0, *(2.0**k for k in range(-10, 41, 2)), INF]

#: Hostile strings: an implementation name and an error message that must come out escaped.
EVIL = "<script>alert(1)</script>\"quotes'"
PLUGIN = f"evil{EVIL}"
EVIL_MESSAGE = (
    "RuntimeError: </script><script>alert(1)</script> {{ 7*7 }} {% raw %} \"double\" 'single' & <b>"
)
CANARY = "numpy-naive"
#: Known failures as pyproject.toml's [[tool.xent-harness.known-failures]] would list them
#: (the second matches nothing in the synthetic run, as a stale entry would).
KNOWN_FAILURES = [
    {"cells": ["jax/*/special/masked-target"],
     "reason": "optax returns NaN where the target logit is -inf; PyTorch gives +inf"},
    {"cells": ["torch/float16/accuracy/at-max-one"],
     "reason": "torch sums float16 losses in float16 (cf. pytorch#85791)"},
]

_OPTION_DEFAULTS = {
    "reduction": "mean",
    "ignore_index": -100,
    "ignore_fraction": 0.0,
    "label_smoothing": 0.0,
    "weight": None,
    "target": "index",
}


def scenario(name, family, why, *, axis=None, tags=(), dtypes=DTYPES, shape=(16, 128), **opt):
    return {
        "name": name,
        "family": family,
        "why": why,
        "kind": "special" if "special" in tags else "normal",
        "dtypes": list(dtypes),
        "tags": sorted(tags),
        "axis": None if axis is None else [axis[0], float(axis[1])],
        "seed": zlib.crc32(name.encode()),
        "shape": list(shape),
        "logits": math.prod(shape),
        "options": {**_OPTION_DEFAULTS, **opt},
        "params": {},
    }


def small_scenarios() -> list[dict]:
    """~40 scenarios over the families the report groups by (a subset of the catalogue)."""
    out = []
    for s in (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1e3, 1e4, 1e5):
        dts = DTYPES[1:] if s == 1e5 else DTYPES
        out.append(
            scenario(f"scale-{s:g}", "scale", f"logits = {s:g}·N(0, 1)", axis=("scale", s),
                      dtypes=dts, shape=(32, 128))
        )
    for g in (0.0, 1.0, 5.0, 10.0, 20.0, 40.0, 100.0, 1e3, 1e4):
        out.append(
            scenario(f"dominant-gap-{g:g}", "dominant",
                      f"target logit = max(others) + {g:g} exactly: p_t → 1, the loss is tiny",
                      axis=("gap", g))
        )
    for g in (20.0, 100.0, 1e4):
        out.append(
            scenario(f"target-below-{g:g}", "target-below",
                      f"target logit = max(others) − {g:g}: the loss ≈ the gap", axis=("gap", -g))
        )
    special = ("special",)
    out += [
        scenario("masked-next", "masked", "a −inf logit next to the target", tags=special),
        scenario("masked-most", "masked", "90% of each row −inf", tags=special),
        scenario("masked-target", "masked", "the target logit −inf: the loss is +inf", tags=special),
        scenario("masked-rows", "masked", "every 4th row all −inf: NaN rows", tags=special,
                  reduction="none"),
        scenario("posinf-one", "nonfinite", "one +inf logit per row: NaN", tags=special,
                  reduction="none"),
        scenario("posinf-target", "nonfinite", "the target logit +inf: NaN", tags=special,
                  reduction="none"),
        scenario("nan-one", "nonfinite", "one NaN logit per row", tags=special, reduction="none"),
        scenario("nan-every-third", "nonfinite", "every third logit NaN", tags=special,
                  reduction="none"),
        scenario("at-max-one", "extremes", "one logit = max of the dtype", tags=special),
        scenario("weight-random-mean", "weight", "class weights, mean divides by Σ w[t]",
                  weight="random"),
        scenario("weight-zeros-sum", "weight", "a quarter of the weights 0, reduction sum",
                  weight="zeros", reduction="sum"),
        scenario("ignore-partial-mean", "ignore", "half the targets ignored",
                  ignore_fraction=0.5),
        scenario("ignore-all-mean", "ignore", "every target ignored: mean is NaN",
                  ignore_fraction=1.0),
        scenario("smoothing-0.1-none", "smoothing", "label_smoothing = 0.1, reduction none",
                  label_smoothing=0.1, reduction="none"),
        scenario("prob-soft-mean", "prob-target", "probability targets", target="prob"),
        scenario("kdim", "shape", "K-dimensional input (N, C, d1, d2)", shape=(4, 10, 8, 8),
                  reduction="none"),
        scenario("unbatched", "shape", "unbatched input (C,)", shape=(1000,)),
    ]
    return out


def catalogue_scenarios() -> list[dict]:
    """The real scenario catalogue (113 scenarios) as the sweep engine would describe it."""
    from harness import scenarios

    return [scenarios.describe(s) for s in scenarios.catalogue()]


# ----------------------------------------------------------------------------------------------
# Implementations


def implementation(name, description="", *, origin="builtin", dtypes=DTYPES, devices=("cpu",), canary=False,
          available=True, reason=None, features=None, grad=True):
    return {
        "name": name,
        "origin": origin,
        "available": available,
        "reason": reason,
        "description": description,
        "dtypes": list(dtypes),
        "devices": list(devices),
        "features": sorted(features or [
            "ignore_index", "kdim", "label_smoothing", "probability_target", "reduction:mean",
            "reduction:none", "reduction:sum", "unbatched", "weight",
        ]),
        "grad": grad,
        "canary": canary,
    }


def implementations(gpu: bool = False, extra: int = 0) -> list[dict]:
    impls = [
        implementation("numpy", "accurate and fast softmax cross-entropy in plain NumPy"),
        implementation(CANARY, "deliberately broken: log(sum(exp(x))) - x_t without max subtraction",
              canary=True),
        implementation("torch", "torch.nn.functional.cross_entropy on the CPU"),
        implementation("jax", "optax.softmax_cross_entropy_with_integer_labels (jit, CPU)",
              dtypes=DTYPES[1:]),
        implementation("torch-cuda", "torch.nn.functional.cross_entropy on a CUDA device",
              devices=("cuda",), available=gpu,
              reason=None if gpu else "no CUDA device (torch.cuda.is_available() is False)"),
        implementation("cupy", "our fused CuPy kernel (one block per row)", devices=("cuda",),
              available=gpu, reason=None if gpu else "python package 'cupy' is not installed"),
        implementation(PLUGIN, f"a hostile plugin name {EVIL}", origin=f"entry point {EVIL}",
              dtypes=("float32",), grad=False,
              features=["reduction:mean", "reduction:none", "reduction:sum", "kdim", "unbatched",
                        "ignore_index", "label_smoothing"]),
    ]
    for k in range(extra):
        impls.append(implementation(f"plugin-{k}", f"copy {k} of a well-behaved plugin",
                           origin=f"entry point plugin-{k}"))
    return impls


# ----------------------------------------------------------------------------------------------
# The cell model: plausible error figures for each (implementation, dtype, scenario, kind)


def _ulp(v: float, dtype: str) -> float:
    p, emin = PRECISION[dtype], EMIN[dtype]
    e = emin if v == 0 else max(math.frexp(abs(v))[1] - 1, emin)
    return 2.0 ** (e - p + 1)


def _hist(count: int, median: float, p99: float, top: float) -> dict:
    edges = np.asarray(HIST_EDGES)

    def b(x):
        if math.isnan(x) or x == INF:
            return len(edges) - 2
        return int(min(max(np.searchsorted(edges, x, side="right") - 1, 0), len(edges) - 2))

    counts = [0] * (len(edges) - 1)
    bm, bq, bt = b(median), b(p99), b(top)
    if count <= 0:
        return {"edges": list(HIST_EDGES), "counts": counts}
    counts[bt] += 1  # the worst element
    count -= 1
    low = count // 2
    counts[max(bm - 1, 0)] += low // 3
    counts[bm] += low - low // 3
    rest = count - low
    tail = max(1, count // 100) if bt > bq else 0
    mid = rest - tail
    span = list(range(bm, max(bq, bm) + 1))
    for i, k in enumerate(span):
        counts[k] += mid // len(span) + (1 if i < mid % len(span) else 0)
    if tail:
        counts[bt] += 1
        tspan = list(range(bq, bt + 1))
        for i in range(tail - 1):
            counts[tspan[i % len(tspan)]] += 1
    assert sum(counts) == count + 1
    return {"edges": list(HIST_EDGES), "counts": counts}


def _count(s: dict, kind: str) -> int:
    shape = s["shape"]
    n = s["logits"] if kind == "gradient" else (
        math.prod(shape) // shape[1] if len(shape) > 1 else 1
    )
    if kind == "accuracy" and s["options"]["reduction"] != "none":
        n = 1
    return int(n)


def _rng(*key) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("|".join(map(str, key)).encode()))


def _tiny_loss(s: dict) -> float | None:
    """The smallest true loss of the scenario's rows, when it is small enough to matter."""
    axis = s["axis"]
    if not axis:
        return None
    name, v = axis
    if name == "scale" and v >= 3:
        return 4.0 * math.exp(-0.35 * v)
    if name == "gap" and v > 0:
        return 8.0 * math.exp(-v)
    return None


def _max_abs_logit(s: dict) -> float:
    axis = s["axis"]
    if axis and axis[0] == "scale":
        return 3.6 * axis[1]
    if axis and axis[0] == "gap":
        return max(axis[1], 0.0) + 3.0
    if axis and axis[0] == "loc":
        return abs(axis[1]) + 3.0
    if s["family"] in ("exp-overflow",):
        return 700.0 if "float64" in s["name"] else (88.8 if "float32" in s["name"] else 11.1)
    if s["family"] == "extremes":
        return 6e4
    return 7.0


def _metrics(dtype, kind, count, ulp_max, ulp_median, ulp_p99, worst_y, worst_ref, *,
             scaled, rng, failing=0) -> dict:
    ulp_mean = ulp_median * 1.1 if math.isfinite(ulp_max) else INF
    abs_max = abs(worst_y - worst_ref) if math.isfinite(worst_y) else INF
    rel = abs_max / abs(worst_ref) if worst_ref else (0.0 if abs_max == 0 else INF)
    return {
        "count": count,
        "ulp_max": ulp_max,
        "ulp_median": ulp_median,
        "ulp_p99": ulp_p99,
        "ulp_mean": ulp_mean,
        "ulp_signed_max": -ulp_max if worst_y < worst_ref else ulp_max,
        "bits_max": math.log2(1 + ulp_max) if math.isfinite(ulp_max) else INF,
        "abs_max": abs_max,
        "rel_max": rel,
        "normwise": min(rel, 1.0) * 0.9 if math.isfinite(rel) else INF,
        "scaled_max": scaled,
        "nonfinite_mismatch": 0 if math.isfinite(worst_y) else 1,
        "failing": failing,
        "hist": _hist(count, ulp_median, ulp_p99, ulp_max),
        "worst": {
            "index": [int(rng.integers(0, max(count, 1)))],
            "y": worst_y,
            "ref": worst_ref,
            "ulp": ulp_max,
            "scaled": scaled,
        },
    }


def _outcome(impl, dtype, s, kind, variant):
    """(status, message, metrics) for a non-special cell."""
    rng = _rng(impl["name"], dtype, s["name"], kind)
    name = impl["name"]
    p = PRECISION[dtype]
    budget_key = "loss" if kind == "accuracy" else "grad"
    b_ulp = BUDGETS[dtype][f"{budget_key}_ulp"]
    b_scaled = BUDGETS[dtype][f"{budget_key}_scaled"]
    count = _count(s, kind)
    xmax = _max_abs_logit(s)
    tiny = _tiny_loss(s)
    compute_p = 53 if dtype == "float64" else 24
    ref = float(rng.uniform(0.5, 6.0)) if kind == "accuracy" else float(rng.uniform(1e-4, 0.3))
    base = float(rng.uniform(0.35, 0.5)) if (name == "numpy" or p <= 11) else float(
        rng.uniform(0.5, 1.8))
    ulp_max, y = base, ref + base * _ulp(ref, dtype)
    scaled = base * _ulp(ref, dtype) / (2.0**-p * (1 + xmax))

    lse_style = name in ("torch", "jax", "torch-cuda", PLUGIN, CANARY) or name.startswith("plugin")
    if lse_style and tiny is not None and kind == "accuracy":
        # lse(x) - x_t cancels: absolute error ~ u_compute * (1 + |x|)
        err = 2.0**-compute_p * (1 + xmax) * float(rng.uniform(0.3, 0.9))
        ref = tiny
        y = 0.0 if tiny < err else tiny + err
        if tiny < 2.0 ** (EMIN[dtype] - p) / 2:  # the true loss underflows in the dtype
            y, ulp_max = 0.0, tiny / _ulp(0.0, dtype)
        else:
            ulp_max = max(abs(y - tiny) / _ulp(tiny, dtype), base)
        scaled = abs(y - tiny) / (2.0**-p * (1 + xmax + math.log(128)))
    if lse_style and tiny is not None and kind == "gradient" and dtype != "float64":
        # p_t - 1 computed as softmax - 1 loses the digits of tiny gradient entries
        ref = -tiny
        y = 0.0 if tiny < 2.0**-compute_p else -tiny * (1 + 2.0**-compute_p / tiny)
        ulp_max = max(abs(y - ref) / _ulp(ref, dtype), base)
        scaled = abs(y - ref) / (2.0**-p * (1 + xmax))

    status, message, n_bad = "pass", None, 0
    if name == CANARY:
        over = xmax > EXP_OVERFLOW[dtype]
        if over:
            y = NAN if (kind == "gradient" or (s["axis"] or ["", 0])[0] == "scale") else INF
            ulp_max, scaled = INF, INF
        elif s["family"] == "ignore":
            y, ulp_max, scaled = ref * 1.9, 0.9 * ref / _ulp(ref, dtype), 3e3 * b_scaled
        elif s["family"] == "large-c" and p <= 11:
            y, ulp_max, scaled = ref * 0.97, 0.03 * ref / _ulp(ref, dtype), 40.0 * b_scaled
    if name == "torch" and dtype == "bfloat16" and s["name"] == "smoothing-0.1-none" \
            and kind == "accuracy" and variant == "current":
        y, ulp_max, scaled = ref + 24 * _ulp(ref, dtype), 24.0, 31.0
    if name == "jax" and dtype == "float32" and s["name"] == "weight-zeros-sum" \
            and kind == "accuracy":
        ulp_max = 3.2 if variant == "current" else 0.6
        y = ref + ulp_max * _ulp(ref, dtype)
    if name == "numpy" and dtype == "float64" and s["name"] == "scale-1" and variant == "baseline":
        ulp_max = 3.0
        y = ref + ulp_max * _ulp(ref, dtype)

    if not math.isfinite(ulp_max) or (ulp_max > b_ulp and scaled > b_scaled):
        status = "fail"
        what = "losses" if kind == "accuracy" else "gradient entries"
        n_bad = max(1, count // 3) if math.isfinite(ulp_max) else count
        message = (
            f"{n_bad} of {count} {what} exceed both budgets: worst {_g(ulp_max)} ULP "
            f"(budget {b_ulp}), scaled {_g(scaled)} (budget {b_scaled})"
        )
    ulp_median = min(ulp_max, float(rng.uniform(0.05, 0.3)))
    ulp_p99 = min(ulp_max, max(ulp_median, ulp_max * float(rng.uniform(0.3, 0.9))))
    metrics = _metrics(dtype, kind, count, ulp_max, ulp_median, ulp_p99, y, ref, scaled=scaled,
                       rng=rng, failing=n_bad)
    return status, message, metrics


def _g(x: float) -> str:
    return "inf" if x == INF else ("nan" if x != x else f"{x:.3g}")


_SPECIAL_REF = {  # scenario -> (count of non-finite reference positions, reference value)
    "masked-target": (16, INF),
    "masked-rows": (4, NAN),
    "masked-rows-mean": (1, NAN),
    "posinf-one": (16, NAN),
    "posinf-target": (16, NAN),
    "nan-one": (16, NAN),
    "nan-every-third": (16, NAN),
    "nan-target": (1, NAN),
}


def _special(impl, dtype, s, variant):
    ref_count, ref = _SPECIAL_REF.get(s["name"], (0, NAN))
    y, mismatch = ref, 0
    name = impl["name"]
    if name == CANARY and s["name"] in ("masked-target", "posinf-one", "posinf-target"):
        y, mismatch = (NAN if ref == INF else INF), ref_count
    if name == "jax" and s["name"] == "masked-target":
        y, mismatch = NAN, ref_count
    if name == "jax" and s["name"] == "masked-next" and dtype == "float32" \
            and variant == "baseline":
        ref_count, ref, y, mismatch = 16, 0.0, NAN, 16
    metrics = {
        "count": ref_count,
        "mismatch": mismatch,
        "examples": [{"index": [i * 4], "y": y, "ref": ref} for i in range(min(mismatch, 3))],
    }
    if mismatch:
        return "fail", (
            f"{mismatch} of {ref_count} special positions differ: y = {_g(y)} where the "
            f"reference is {_g(ref)}"
        ), metrics
    return "pass", None, metrics


def _supports(impl, dtype, s) -> str | None:
    if dtype not in impl["dtypes"]:
        return f"dtype {dtype} not supported"
    opts = s["options"]
    need = []
    if opts.get("weight"):
        need.append("weight")
    if opts.get("target", "index") != "index":
        need.append("probability_target")
    missing = [f for f in need if f not in impl["features"]]
    if missing:
        return f"feature {', '.join(missing)} not supported"
    return None


def _cells(impls, scens, variant):
    cells = []
    for impl in impls:
        if not impl["available"]:
            continue
        for s in scens:
            kinds = ["accuracy", "gradient"] + (["special"] if "special" in s["tags"] else [])
            for dtype in s["dtypes"]:
                for kind in kinds:
                    cell = {"kind": kind, "impl": impl["name"], "dtype": dtype,
                            "scenario": s["name"]}
                    key = "loss" if kind != "gradient" else "grad"
                    budget = {"ulp": BUDGETS[dtype][f"{key}_ulp"],
                              "scaled": BUDGETS[dtype][f"{key}_scaled"]}
                    why_not = _supports(impl, dtype, s)
                    if why_not is None and kind == "gradient" and not impl["grad"]:
                        why_not = "the implementation provides no gradient"
                    if why_not:
                        status, message, metrics = "unsupported", why_not, None
                    elif impl["name"] == PLUGIN and s["name"] in ("kdim", "masked-rows"):
                        status, message, metrics = "error", EVIL_MESSAGE, None
                    elif kind == "special":
                        status, message, metrics = _special(impl, dtype, s, variant)
                    else:
                        status, message, metrics = _outcome(impl, dtype, s, kind, variant)
                    rng = _rng("t", impl["name"], dtype, s["name"], kind)
                    cell.update(status=status, message=message, metrics=metrics, budget=budget,
                                seconds=round(float(rng.uniform(1e-4, 5e-3)), 6))
                    cells.append(cell)
    return cells


# ----------------------------------------------------------------------------------------------
# Throughput

SHAPES = ((256, 1024), (4096, 1024), (4096, 8192))
_COPY_GBPS = {(256, 1024): 48.0, (4096, 1024): 30.0, (4096, 8192): 22.0}
_FRACTION = {  # forward, forward+backward fractions of the copy bandwidth
    "numpy": (0.34, 0.41),
    CANARY: (0.12, 0.15),
    "torch": (0.52, 0.47),
    "jax": (0.44, 0.38),
    PLUGIN: (0.61, None),
}


def _throughput(impls, variant, gpu):
    rows, copies = [], []
    for n, c in SHAPES:
        nbytes = n * c * 4
        gbps = _COPY_GBPS[(n, c)]
        copies.append({"device": "cpu", "dtype": "float32", "N": n, "C": c, "bytes": nbytes,
                       "median_s": 2 * nbytes / (gbps * 1e9), "gbps": gbps})
        if gpu:
            copies.append({"device": "cuda", "dtype": "float32", "N": n, "C": c, "bytes": nbytes,
                           "median_s": 2 * nbytes / (2400e9), "gbps": 2400.0})
    for impl in impls:
        if not impl["available"]:
            continue
        name = impl["name"]
        fr = _FRACTION.get(name, (0.8, 0.7) if "cuda" in impl["devices"] else (0.3, 0.3))
        device = impl["devices"][0]
        for n, c in SHAPES:
            for i, pas in enumerate(("forward", "forward+backward")):
                nbytes = n * c * 4 * (1 if i == 0 else 2)
                copy_gbps = 2400.0 if device == "cuda" else _COPY_GBPS[(n, c)]
                row = {"impl": name, "dtype": "float32", "N": n, "C": c, "pass": pas,
                       "status": "ok", "message": None, "device": device, "threads": 2,
                       "repeats": 7}
                if fr[i] is None:
                    row.update(status="unsupported", message="the implementation provides no "
                               "gradient", median_s=None, iqr_s=None, noisy=False, bytes=nbytes,
                               gbps=None, copy_gbps=copy_gbps, fraction_of_copy=None,
                               peak_memory_bytes=None)
                    rows.append(row)
                    continue
                frac = fr[i] * (1 - 0.06 * SHAPES.index((n, c)))
                rel_iqr = 0.03
                if name == PLUGIN and (n, c) == (4096, 1024):
                    rel_iqr = 0.25  # a noisy measurement
                if variant == "baseline":
                    if name == "numpy" and (n, c) == (4096, 1024) and pas == "forward":
                        frac *= 1.30  # the baseline was faster: a speed regression now
                    elif name == "torch" and (n, c) == (4096, 1024):
                        frac *= 1.05  # inside the noise
                    elif name == "jax" and (n, c) == (4096, 8192) and pas == "forward+backward":
                        frac /= 1.40  # the baseline was slower: an improvement now
                    elif name == PLUGIN and (n, c) == (4096, 1024):
                        frac *= 1.20  # 20 % but the IQR is 25 %: noise
                gb = copy_gbps * frac
                median = nbytes / (gb * 1e9)
                row.update(median_s=median, iqr_s=median * rel_iqr, noisy=rel_iqr > 0.10,
                           bytes=nbytes, gbps=gb, copy_gbps=copy_gbps,
                           fraction_of_copy=gb / copy_gbps,
                           peak_memory_bytes=int(nbytes * (2.0 if i == 0 else 2.5)) + 131072)
                rows.append(row)
    if any(i["name"] == CANARY and i["available"] for i in impls):
        rows.append({"impl": CANARY, "dtype": "float16", "N": 4096, "C": 1024,
                     "pass": "forward", "status": "error", "message": EVIL_MESSAGE,
                     "device": "cpu", "threads": 2, "repeats": 0, "median_s": None,
                     "iqr_s": None, "noisy": False, "bytes": 4096 * 1024 * 2, "gbps": None,
                     "copy_gbps": None, "fraction_of_copy": None, "peak_memory_bytes": None})
    return rows, copies


# ----------------------------------------------------------------------------------------------
# The results file


def mark_known(cells, known=KNOWN_FAILURES) -> int:
    """Give failing cells that match a known failure its reason (as the sweep engine does)."""
    n = 0
    for c in cells:
        c.pop("known", None)
        if c["status"] not in ("fail", "error"):
            continue
        key = f"{c['impl']}/{c['dtype']}/{c['kind']}/{c['scenario']}"
        for k in known:
            if any(fnmatchcase(key, g) for g in k["cells"]):
                c["known"] = k["reason"]
                n += 1
                break
    return n


def _verdicts(impls, cells):
    """Implementation verdicts and counts and the summary, as the sweep engine writes them:
    known failures counted under "known" (not fail/error) and not gating; canaries expected
    to fail."""
    keys = ("pass", "fail", "error", "unsupported", "known")
    per = {i["name"]: dict.fromkeys(keys, 0) for i in impls}
    for c in cells:
        per[c["impl"]]["known" if c.get("known") else c["status"]] += 1
    total = dict.fromkeys(keys, 0)
    failing, ok = [], True
    for i in impls:
        counts = per[i["name"]]
        i["counts"] = counts
        if not i["available"]:
            i["verdict"] = "unavailable"
            continue
        for k, v in counts.items():
            total[k] += v
        i["verdict"] = "fail" if counts["fail"] else ("error" if counts["error"] else "pass")
        if i["verdict"] != "pass":
            failing.append(i["name"])
            if not i["canary"]:
                ok = False
    return {"verdict": "pass" if ok else "fail", "counts": total, "failing": failing}


def encode_nonfinite(obj):
    """inf/-inf/nan -> the strings the JSON writer stores (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if obj != obj else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, dict):
        return {k: encode_nonfinite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [encode_nonfinite(v) for v in obj]
    return obj


def make_results(variant: str = "current", *, full: bool = False, gpu: bool = False,
                 extra_impls: int = 0, encode: bool = True) -> dict:
    """A synthetic results dict (``variant`` "current" or "baseline", see the module doc).

    ``full``: the real scenario catalogue instead of ~40 scenarios; ``gpu``: torch-cuda and cupy
    available; ``extra_impls``: that many more well-behaved plugins (to reach ~10k cells).
    """
    if variant not in ("current", "baseline"):
        raise ValueError(variant)
    scens = catalogue_scenarios() if full else small_scenarios()
    if variant == "baseline":
        scens = [s for s in scens if s["name"] != "unbatched"]  # a scenario added since
    impls = implementations(gpu=gpu, extra=extra_impls)
    cells = _cells(impls, scens, variant)
    mark_known(cells)
    throughput, copies = _throughput(impls, variant, gpu)
    summary = _verdicts(impls, cells)
    current = variant == "current"
    run_id = "20261123T191500Z" if current else "20261120T083000Z"
    started = "2026-11-23T19:15:00+00:00" if current else "2026-11-20T08:30:00+00:00"
    finished = "2026-11-23T19:16:10+00:00" if current else "2026-11-20T08:31:02+00:00"
    results = {
        "schema": "xent-harness/results",
        "schema_version": 1,
        "run": {
            "id": run_id,
            "command": "xent-harness run" + (" --full" if full else ""),
            "argv": ["run", *(["--full"] if full else [])],
            "started": started,
            "finished": finished,
            "complete": True,
            "kinds": ["accuracy", "gradient", "special", "throughput"],
            "quick": False,
            "dtypes": list(DTYPES),
            "scenario_patterns": None,
        },
        "provenance": {
            "harness": "0.1.0",
            "git": {"commit": ("e459b36c0ffee" if current else "37d503abad1de") + "0" * 27,
                    "dirty": current},
            "python": "3.11.7",
            "platform": "Linux-6.1.0-x86_64-with-glibc2.36",
            "cpu": {"model": "Intel(R) Xeon(R) Platinum 8480+", "cores": 2},
            "gpu": {"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "cuda": "12.4",
                    "memory_bytes": 85520809984} if gpu else None,
            "libraries": {"numpy": "2.4.6", "mpmath": "1.3.0", "gmpy2": "2.3.2",
                          "torch": "2.13.0", "jax": "0.10.2", "matplotlib": "3.11.2"},
            "threads": 2,
            "date": started,
        },
        "budgets": copy.deepcopy(BUDGETS),
        "budgets_source": "defaults (harness/budgets.toml)",
        "implementations": impls,
        "scenarios": scens,
        "cells": cells,
        "throughput": throughput,
        "copy": copies,
        "summary": summary,
        "known_failures": copy.deepcopy(KNOWN_FAILURES),
    }
    return encode_nonfinite(results) if encode else results


def tiny_results(cells: list[dict], *, impls: list[dict] | None = None,
                 throughput: list[dict] | None = None, scenarios: list[dict] | None = None,
                 run_id: str = "t", known_failures: list[dict] | None = None) -> dict:
    """A minimal results dict around hand-made cells (for the findings/compare unit tests)."""
    names = sorted({c["impl"] for c in cells} | {t["impl"] for t in throughput or []})
    impls = impls or [implementation(n, n) for n in names]
    scen_names = sorted({c["scenario"] for c in cells})
    scenarios = scenarios or [scenario(n, n.rsplit("-", 1)[0], n) for n in scen_names]
    results = {
        "schema": "xent-harness/results", "schema_version": 1,
        "run": {"id": run_id, "command": "xent-harness run", "complete": True,
                "dtypes": list(DTYPES)},
        "provenance": {}, "budgets": copy.deepcopy(BUDGETS),
        "implementations": impls, "scenarios": scenarios, "cells": cells,
        "throughput": throughput or [], "copy": [],
    }
    if known_failures is not None:
        mark_known(cells, known_failures)
        results["known_failures"] = known_failures
    results["summary"] = _verdicts(impls, cells)
    return results
