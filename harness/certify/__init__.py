"""A second, independent oracle of the cross-entropy contract in ball arithmetic (python-flint's
``arb``), and the certification of reference values against it.

It shares no code with :mod:`harness.reference`: the contract of ``docs/semantics.md`` is written
again, directly, and every finite result is an ``arb`` ball *guaranteed* to contain the true value
(Arb's rigorous error propagation), so correctness comes from the balls, not from the formulas.
python-flint is an optional dependency (``pip install 'xent-harness[certify]'``); it is imported
on first use so that ``import harness`` neither needs nor pays for it.

The package, module by module: ``arb`` (python-flint on first use, precisions), ``ieee_classes``
(the special-value rules), ``exact`` and ``row`` (exact values, one row's statistics), ``oracle``
(the contract in balls; its docstring is the formulation), ``rounding`` (exact IEEE rounding),
``balls`` (the public ball API), ``certificate`` (checking values, findings, the report) and
``reference_values`` (certifying the reference and stored double-doubles).
"""

from harness.certify.arb import INSTALL_HINT, MAX_PREC, START_PREC, CertifyUnavailable, require
from harness.certify.balls import grad_balls, loss_balls
from harness.certify.certificate import DD_FLOOR, GOOD_BITS, Finding, Report, Values, certify
from harness.certify.reference_values import certify_double_double, certify_reference
from harness.certify.rounding import rounded_ball

__all__ = [
    "DD_FLOOR", "GOOD_BITS", "INSTALL_HINT", "MAX_PREC", "START_PREC",
    "CertifyUnavailable", "Finding", "Report", "Values",
    "certify", "certify_double_double", "certify_reference", "grad_balls", "loss_balls", "require", "rounded_ball",
]
