"""A hand-written CUDA softmax cross-entropy, compiled at run time through CuPy's NVRTC.

The kernels live in ``../kernels/xent.cu`` (its header comment explains the numerics): one pass
over each row with an online (max, sum-of-exp) whose sum leaves out the max's own term, so
``-log p_t = (m - x_t) + log1p(s)`` keeps the digits of tiny losses; the gradient is written by
the same kernel in a second sweep, with the target class computed without cancellation.

Which kernel runs is chosen from the shape (:func:`plan_launch`):

* ``group``   C up to 128 packs of 16 bytes: G = 1..32 lanes of a warp per row;
* ``block``   larger C: one block of 64..512 threads per row;
* ``split``   huge C with fewer rows than SMs: several blocks per row, three kernels;
* ``strided`` K-dim (N, C, d1, ...) with d1*...*dk >= 32 and C <= 256: one thread per row,
  reading the logits in place; other K-dim shapes are transposed to rows on the device first
  (and the gradient back), inside the timed call.

Forward-only kernels read the logits once; the fused forward+backward kernels also write the
gradient. 'mean' and 'sum' are reduced on the device in double, deterministically; the fused
'mean' over index targets first runs ``xent_weight_sum`` (it reads only the targets) because
the gradient needs the denominator. Nothing synchronises with the host inside a call.

Modules: ``names`` (the source and its kernel instantiations), ``build`` (NVRTC, the caches,
ptxas reports), ``plan`` (the launch policy), ``params`` (the kernels' parameter structs),
``run`` (one problem on the device), ``kernel`` (the registry's :class:`CupyKernel`). CuPy is
imported lazily: importing this package needs NumPy only.
"""

from harness.implementations.cupy.build import (
    NVRTC_OPTIONS,
    compile_report,
    kernel_attributes,
    load_kernels,
    local_size_bytes,
    nvrtc_arch_option,
    nvrtc_compile,
    parse_ptxas_log,
)
from harness.implementations.cupy.kernel import CupyKernel
from harness.implementations.cupy.names import (
    CUDA_TYPES,
    KERNEL_PATH,
    all_name_expressions,
    kernel_source,
    row_kernel_name,
    split_kernel_names,
    weight_sum_name,
)
from harness.implementations.cupy.params import STRUCTS, CStruct
from harness.implementations.cupy.plan import (
    GROUP_MAX_PACKS,
    PACKS_PER_THREAD,
    STRIDED_MAX_C,
    LaunchPlan,
    kernel_mode,
    plan_launch,
)
from harness.implementations.cupy.run import DeviceRun

__all__ = [
    "CUDA_TYPES",
    "GROUP_MAX_PACKS",
    "KERNEL_PATH",
    "NVRTC_OPTIONS",
    "PACKS_PER_THREAD",
    "STRIDED_MAX_C",
    "STRUCTS",
    "CStruct",
    "CupyKernel",
    "DeviceRun",
    "LaunchPlan",
    "all_name_expressions",
    "compile_report",
    "kernel_attributes",
    "kernel_mode",
    "kernel_source",
    "load_kernels",
    "local_size_bytes",
    "nvrtc_arch_option",
    "nvrtc_compile",
    "parse_ptxas_log",
    "plan_launch",
    "row_kernel_name",
    "split_kernel_names",
    "weight_sum_name",
]
