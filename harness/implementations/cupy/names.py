"""The CUDA source (``kernels/xent.cu``) and the name expressions of its kernel instantiations."""

from __future__ import annotations

from pathlib import Path

KERNEL_PATH = Path(__file__).resolve().parent.parent / "kernels" / "xent.cu"

#: CUDA type name and elements per 16-byte pack, per dtype name.
CUDA_TYPES: dict[str, tuple[str, int]] = {
    "float16": ("half_t", 8),
    "bfloat16": ("bfloat16_t", 8),
    "float32": ("float", 4),
    "float64": ("double", 2),
}


def _b(flag: bool) -> str:
    return "true" if flag else "false"


def row_kernel_name(layout: str, dtype: str, vec: int, mode: int, backward: bool) -> str:
    t = CUDA_TYPES[dtype][0]
    if layout == "strided":
        return f"xent_strided<{t}, {mode}, {_b(backward)}>"
    return f"xent_{layout}<{t}, {vec}, {mode}, {_b(backward)}>"


def split_kernel_names(dtype: str, vec: int, mode: int, backward: bool) -> list[str]:
    """xent_split_stats, xent_split_finish and (backward) xent_split_grad, in launch order."""
    t = CUDA_TYPES[dtype][0]
    names = [
        f"xent_split_stats<{t}, {vec}, {mode}>",
        f"xent_split_finish<{t}, {mode}, {_b(backward)}>",
    ]
    if backward:
        names.append(f"xent_split_grad<{t}, {vec}, {mode}>")
    return names


def weight_sum_name(dtype: str) -> str:
    return f"xent_weight_sum<{CUDA_TYPES[dtype][0]}>"


def all_name_expressions(dtypes=tuple(CUDA_TYPES)) -> list[str]:
    """Every kernel instantiation the implementation can launch."""
    names: list[str] = []
    for dt in dtypes:
        vw = CUDA_TYPES[dt][1]
        for vec in (1, vw):
            for mode in (0, 1, 2):
                for bwd in (False, True):
                    names.append(row_kernel_name("group", dt, vec, mode, bwd))
                    names.append(row_kernel_name("block", dt, vec, mode, bwd))
                names += [n for n in split_kernel_names(dt, vec, mode, True) if "finish" not in n]
        for mode in (0, 1, 2):
            for bwd in (False, True):
                names.append(row_kernel_name("strided", dt, 1, mode, bwd))
                names.append(split_kernel_names(dt, 1, mode, bwd)[1])
        names.append(weight_sum_name(dt))
    return names


def kernel_source() -> tuple[str, list[str]]:
    """The CUDA source and the name expressions of every kernel instantiation it provides."""
    return KERNEL_PATH.read_text(encoding="utf-8"), all_name_expressions()
