"""Accuracy over time: the largest ULP error of the loss and of the gradient over hard golden
cases (tiny losses, a dominant logit 30 above the rest, logits of scale 1e3, class weights with
label smoothing), per implementation × dtype, against the exact references in references/.

ULP errors are Zimmermann's (harness.metrics.ulp_error) over the elements whose correctly
rounded reference is finite; a non-finite output where the reference is finite counts as
NONFINITE_ULP so the figure stays plottable. Lower is better, as asv assumes.
"""

from __future__ import annotations

import fnmatch
import math

from ._common import DTYPES, IMPLS, REFERENCES, implementation

HARD_CASES = ("tiny-loss-*", "dominant-gap-30-*", "scale-1e3-*", "weights-smoothing-*")
NONFINITE_ULP = 1e30


def hard_cases(dtype: str) -> list[str]:
    from harness import golden

    cases = golden.load_manifest(REFERENCES)["cases"]
    return sorted(name for name, c in cases.items()
                  if c["dtype"] == dtype and any(fnmatch.fnmatchcase(name, p) for p in HARD_CASES))


class Accuracy:
    params = (list(IMPLS), list(DTYPES))
    param_names = ("impl", "dtype")
    unit = "ULP"
    timeout = 180

    def setup(self, impl, dtype):
        import numpy as np

        from harness import golden, metrics

        if not (REFERENCES / "manifest.json").is_file():
            raise NotImplementedError(f"no golden references at {REFERENCES}")
        self.impl = implementation(impl)
        self.worst = {"loss": None, "grad": None}
        for name in hard_cases(dtype):
            g = golden.load(name, REFERENCES)
            p = g.problem
            if self.impl.supports(p):
                continue
            quantities = [("loss", self.impl.loss, g.loss_hi, g.loss_lo)]
            if self.impl.has_grad:
                quantities.append(("grad", self.impl.grad, g.grad_hi, g.grad_lo))
            for q, fn, hi, lo in quantities:
                y = np.asarray(fn(p))
                ref = metrics.round_to_format(np.atleast_1d(hi), np.atleast_1d(lo), p.format)
                finite = np.isfinite(ref.reshape(np.shape(hi)).astype(np.float64))
                ulps = metrics.ulp_error(y[finite], np.asarray(hi)[finite], np.asarray(lo)[finite], p.format)
                worst = float(np.max(ulps, initial=0.0))
                worst = worst if math.isfinite(worst) else NONFINITE_ULP
                self.worst[q] = max(self.worst[q] or 0.0, worst)

    def track_loss_ulp_max(self, impl, dtype):
        if self.worst["loss"] is None:
            raise NotImplementedError("no supported hard case")
        return self.worst["loss"]

    def track_grad_ulp_max(self, impl, dtype):
        if self.worst["grad"] is None:
            raise NotImplementedError("no gradient or no supported hard case")
        return self.worst["grad"]
