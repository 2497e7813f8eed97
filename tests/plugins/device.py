"""A plugin that declares a CUDA device (and computes on the CPU): what placement by Dask worker
resources sees of a GPU implementation, on a machine without one (tests/test_dask.py)."""

from tests.plugins.faulty import Correct


class NeedsCuda(Correct):
    devices = ("cuda",)
