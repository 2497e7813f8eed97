"""Compiling xent.cu with NVRTC (``cupy.cuda.nvrtc``), cached in memory and on disk.

The kernels are compiled with NVRTC directly rather than with ``cupy.RawModule``, because
RawModule appends ``-ftz=true`` after the user's options (the last one wins), and flushing
subnormals to zero would destroy the tiny probabilities, gradients and losses the harness
measures. All 49 kernels of a dtype are built at once (about 10 s, on the first use of that
dtype, outside the timed call) and cached in memory and in ``$XENT_HARNESS_KERNEL_CACHE``
(default ``cupy/`` in the harness's cache directory).

For a real GPU: :func:`kernel_attributes` / :func:`local_size_bytes` report registers and local
memory (spills) of the loaded kernels; :func:`compile_report` gives ptxas' view of an NVRTC build
for any architecture without a GPU.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from functools import cache
from pathlib import Path

from harness.implementations.cupy.names import KERNEL_PATH, all_name_expressions

#: NVRTC options. No -ftz / fast math: subnormals matter here (see the module docstring).
NVRTC_OPTIONS: tuple[str, ...] = (
    "-std=c++17",
    "--ftz=false",
    "--prec-div=true",
    "--prec-sqrt=true",
    "--fmad=true",
)


def _cache_dir() -> Path:
    """$XENT_HARNESS_KERNEL_CACHE, else ``cupy/`` in the harness's cache directory (XENT_CACHE)."""
    env = os.environ.get("XENT_HARNESS_KERNEL_CACHE")
    if env:
        return Path(env)
    from harness.cache import default_dir

    return default_dir() / "cupy"


def nvrtc_arch_option(
    compute_capability: str | int, supported: list[int] | None = None
) -> tuple[str, str]:
    """``(-arch option, 'cubin' | 'ptx')`` for a device, given NVRTC's supported archs."""
    cc = int(compute_capability)
    if supported is None:
        from cupy.cuda import nvrtc

        supported = list(nvrtc.getSupportedArchs())
    if cc in supported:
        return f"-arch=sm_{cc}", "cubin"
    lower = [a for a in supported if a <= cc]
    return f"-arch=compute_{max(lower) if lower else min(supported)}", "ptx"


def nvrtc_compile(
    names: list[str] | tuple[str, ...],
    arch_option: str,
    *,
    extra_options: tuple[str, ...] = (),
    source: str | None = None,
) -> tuple[bytes, dict[str, str], str]:
    """Compile ``names`` with NVRTC: (cubin or PTX bytes, name expression -> lowered name,
    program log). Needs the NVRTC library but no GPU."""
    from cupy.cuda import nvrtc

    src = KERNEL_PATH.read_text(encoding="utf-8") if source is None else source
    prog = nvrtc.createProgram(src, "xent.cu", (), ())
    try:
        for n in names:
            nvrtc.addNameExpression(prog, n)
        options = [*NVRTC_OPTIONS, arch_option, *extra_options]
        try:
            nvrtc.compileProgram(prog, options)
        except nvrtc.NVRTCError as exc:
            log = nvrtc.getProgramLog(prog)
            raise RuntimeError(f"NVRTC failed to compile xent.cu ({exc}):\n{log}") from None
        log = nvrtc.getProgramLog(prog)
        mapping = {n: nvrtc.getLoweredName(prog, n) for n in names}
        binary = nvrtc.getCUBIN(prog) if arch_option.startswith("-arch=sm_") else nvrtc.getPTX(prog)
    finally:
        nvrtc.destroyProgram(prog)
    if isinstance(binary, str):
        binary = binary.encode()
    return binary, mapping, log


def parse_ptxas_log(log: str) -> dict[str, dict[str, int]]:
    """``-Xptxas -v`` output -> {mangled kernel name: registers, stack, spill_stores, spill_loads}.

    Works for nvcc's and NVRTC's (``--ptxas-options=-v``) logs.
    """
    out: dict[str, dict[str, int]] = {}
    current = None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            current = m.group(1)
            out[current] = {}
            continue
        if current is None:
            continue
        m = re.search(
            r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line
        )
        if m:
            out[current].update(stack=int(m[1]), spill_stores=int(m[2]), spill_loads=int(m[3]))
            continue
        m = re.search(r"Used (\d+) registers", line)
        if m:
            out[current]["registers"] = int(m[1])
    return out


def compile_report(
    arch: str | int = 90, names: list[str] | None = None
) -> dict[str, dict[str, int]]:
    """Registers / stack / spills of every kernel as ptxas reports them for sm_<arch> when
    NVRTC builds it (no GPU needed). Keys are the name expressions."""
    names = list(all_name_expressions() if names is None else names)
    _, mapping, log = nvrtc_compile(
        names, f"-arch=sm_{int(arch)}", extra_options=("--ptxas-options=-v",)
    )
    by_lowered = parse_ptxas_log(log)
    return {n: by_lowered.get(mapping[n], {}) for n in names}


@cache
def device_properties(device_id: int) -> tuple[str, int]:
    """(compute capability, multiprocessors) of a CUDA device."""
    import cupy

    dev = cupy.cuda.Device(device_id)
    return str(dev.compute_capability), int(dev.attributes["MultiProcessorCount"])


def _read_cached(bin_path: Path, map_path: Path, names: list[str]):
    """The binary and name mapping stored for this build, or (None, None)."""
    try:
        if bin_path.is_file() and map_path.is_file():
            binary, mapping = bin_path.read_bytes(), json.loads(map_path.read_text())
            if set(mapping) == set(names):
                return binary, mapping
    except (OSError, ValueError):
        pass
    return None, None


def _write_cached(bin_path: Path, map_path: Path, binary: bytes, mapping: dict) -> None:
    """Best effort: a read-only home only costs a recompile next time."""
    try:
        bin_path.parent.mkdir(parents=True, exist_ok=True)
        for path, data in ((bin_path, binary), (map_path, json.dumps(mapping).encode())):
            fd, tmp = tempfile.mkstemp(dir=path.parent)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
    except OSError:
        pass


#: (device id, name expressions) -> (the loaded module, name expression -> kernel)
_MODULES: dict[tuple, tuple[object, dict[str, object]]] = {}


def load_kernels(names: tuple[str, ...]) -> dict[str, object]:
    """Compiled ``cupy.cuda.function.Function`` objects for ``names`` on the current device."""
    import cupy
    from cupy.cuda import function, nvrtc

    device_id = cupy.cuda.Device().id
    key = (device_id, tuple(sorted(set(names))))
    hit = _MODULES.get(key)
    if hit is not None:
        return hit[1]
    cc, _ = device_properties(device_id)
    arch_option, kind = nvrtc_arch_option(cc)
    source = KERNEL_PATH.read_text(encoding="utf-8")
    names_sorted = list(key[1])
    digest = hashlib.sha256(
        "\0".join(
            [source, *NVRTC_OPTIONS, arch_option, repr(nvrtc.getVersion()), *names_sorted]
        ).encode()
    ).hexdigest()[:32]
    cache_dir = _cache_dir()
    bin_path, map_path = cache_dir / f"{digest}.{kind}", cache_dir / f"{digest}.json"
    binary, mapping = _read_cached(bin_path, map_path, names_sorted)
    if binary is None:
        binary, mapping, _ = nvrtc_compile(names_sorted, arch_option, source=source)
        _write_cached(bin_path, map_path, binary, mapping)
    module = function.Module()
    module.load(binary)
    kernels = {n: module.get_function(mapping[n]) for n in names_sorted}
    _MODULES[key] = (module, kernels)
    return kernels


def kernel_attributes() -> dict[str, dict[str, int]]:
    """For every kernel compiled so far in this process: registers, local (spill) memory,
    static shared memory and the largest block it can launch, as the driver reports them."""
    import cupy

    drv = cupy.cuda.driver
    attrs = {
        "num_regs": drv.CU_FUNC_ATTRIBUTE_NUM_REGS,
        "local_size_bytes": drv.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES,
        "shared_size_bytes": drv.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
        "max_threads_per_block": drv.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
    }
    out: dict[str, dict[str, int]] = {}
    for _, kernels in _MODULES.values():
        for name, fn in kernels.items():
            out[name] = {k: int(drv.funcGetAttribute(a, fn.ptr)) for k, a in attrs.items()}
    return out


def local_size_bytes() -> dict[str, int]:
    """Local memory (register spills, stack) per compiled kernel; 0 everywhere is the goal."""
    return {n: a["local_size_bytes"] for n, a in kernel_attributes().items()}
