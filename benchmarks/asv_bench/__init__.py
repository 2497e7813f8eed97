"""asv benchmarks of xent-harness (configuration: asv.conf.json at the repository root).

* ``bench_throughput``: forward and forward+backward time and peak memory of every
  implementation × dtype × shape, on the prepared, device-synchronized callable;
* ``bench_accuracy``: max ULP error of the loss and the gradient over hard golden cases
  (``track_`` benchmarks, unit "ULP");
* ``bench_reference``: the MPFR reference's own speed on a fixed problem.

Combinations that cannot run here (backend not installed, no GPU, unsupported dtype) raise
NotImplementedError in ``setup``, which asv records as skipped (n/a). Nothing heavy is imported
at module level: asv imports every module to discover the benchmarks.

The benchmarks come from the working tree while the measured code is whatever is installed in
the environment (with environment_type "existing") or the commit asv built (virtualenv), so
they use only long-standing harness APIs: registry, problem, golden, metrics, reference.
"""
