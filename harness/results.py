"""The results file of a run (schema: docs/results-schema.md) and its provenance.

Writes are crash-safe: every finished cell is appended at once to ``cells.jsonl`` (a line is
either complete or ignored on reading), and ``results.json`` is rewritten atomically (temporary
file + rename) now and then and at the end. The journal is the record while a run is under way,
so the rewrites are spaced to cost at most ~5 % of the run: at least ``flush_seconds`` apart and
at least 20 times as long apart as this rewrite will take (the last one's time, scaled by how
many more cells there are now). A full sweep's file is ~5 MB; rewriting it every 2 s had made
the rewrites a quarter of the run's time. ``Results.open(..., resume=True)``
merges both, so a run killed at any point is continued without recomputing finished cells.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path

SCHEMA = "xent-harness/results"
SCHEMA_VERSION = 1
RESULTS = "results.json"
JOURNAL = "cells.jsonl"


class ResultsError(ValueError):
    """The run's files cannot be written (disk full, read-only, not a directory): one line
    naming the file; what was written before stays (resume continues from it)."""


def _unwritable(path: Path, exc: OSError) -> ResultsError:
    return ResultsError(f"results: cannot write {path} ({exc.strerror or exc}); the cells finished so far "
                        f"are kept in {path.parent / JOURNAL} (fix it, then --resume --out {path.parent})")


def _clean(obj):
    """JSON-safe copy: non-finite floats become "inf"/"-inf"/"nan", NumPy scalars Python ones."""
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    if hasattr(obj, "item") and not isinstance(obj, (str, bytes)):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def number(v):
    """Inverse of the encoding above for one value (reports use it)."""
    if isinstance(v, str) and v in ("inf", "-inf", "nan"):
        return float(v)
    return v


def dumps(obj) -> str:
    # compact separators keep json's C encoder (an indent makes it fall back to pure Python)
    return json.dumps(_clean(obj), allow_nan=False, separators=(",", ":"))


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def cell_key(cell: dict) -> tuple:
    return (cell["kind"], cell["impl"], cell["dtype"], cell["scenario"])


def throughput_key(row: dict) -> tuple:
    return (row["impl"], row["dtype"], row["N"], row["C"], row["pass"])


# -- provenance ------------------------------------------------------------------------------------


def _git() -> dict:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip() != ""
        return {"commit": commit or None, "dirty": dirty if commit else None}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def provenance(gpu: dict | None = None, threads: int | None = None) -> dict:
    from harness import __version__

    libs = {d: _version(d) for d in ("numpy", "mpmath", "gmpy2", "ml_dtypes", "torch", "jax", "jaxlib",
                                     "optax", "cupy-cuda12x", "cupy-cuda13x", "jinja2", "matplotlib")}
    return {
        "harness": __version__,
        "git": _git(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": {"model": _cpu_model(), "cores": os.cpu_count()},
        "gpu": gpu,
        "libraries": {k: v for k, v in libs.items() if v},
        "threads": threads,
        "date": now(),
    }


# -- the file --------------------------------------------------------------------------------------


class Results:
    """A run's results, persisted as it grows."""

    def __init__(self, directory: Path, data: dict, flush_seconds: float = 2.0):
        self.directory = Path(directory)
        self.data = data
        self.flush_seconds = flush_seconds
        self._last_flush = 0.0
        self._flush_cost = 0.0
        self._flush_size = 1
        self._cells = {cell_key(c): c for c in data.get("cells", [])}
        # cells that do not exist (a special-value cell where the contract has no inf/NaN): a
        # resumed run must not redo their problems to find that out again
        self._absent = {tuple(k) for k in data.get("not_applicable", [])}
        self._rows = {throughput_key(r): r for r in data.get("throughput", [])}
        # JSON-safe copies of cells and rows, made once when they are added (not at every rewrite)
        self._clean = {("cell", k): _clean(c) for k, c in self._cells.items()}
        self._clean |= {("row", k): _clean(r) for k, r in self._rows.items()}
        self._journal = None

    # construction ----------------------------------------------------------------------------
    @classmethod
    def open(cls, directory: Path, run: dict, *, resume: bool = False, **kw) -> Results:
        directory = Path(directory)
        try:
            directory.mkdir(parents=True, exist_ok=True)
            probe = directory / f".write-test.{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ResultsError(f"--out: cannot write to {directory} ({exc.strerror or exc}); name a writable directory") from None
        path = directory / RESULTS
        if resume and (path.exists() or (directory / JOURNAL).exists()):
            journal = list(_read_journal(directory / JOURNAL))
            if path.exists():
                data = load(path)
            else:  # killed before the first rewrite: the journal's first line holds the run
                first = next((e["run"] for e in journal if e.get("type") == "run" and isinstance(e.get("run"), dict)), None)
                if first is None:
                    raise ValueError(f"--resume: {directory} has no {RESULTS} and its journal does not say which "
                                     "run it was; start again with --force")
                data = _skeleton(first)
            data.setdefault("cells", [])
            data.setdefault("throughput", [])
            self = cls(directory, data, **kw)
            for entry in journal:
                try:
                    if entry.get("type") == "cell":
                        key = cell_key(entry["cell"])
                        self._cells[key] = self._clean["cell", key] = entry["cell"]
                    elif entry.get("type") == "not_applicable":
                        self._absent.add(tuple(entry["key"]))
                    elif entry.get("type") == "throughput":
                        key = throughput_key(entry["row"])
                        self._rows[key] = self._clean["row", key] = entry["row"]
                except (KeyError, TypeError, AttributeError):
                    continue  # a line without its keys: like a cut line, that cell is redone
            self.data["run"]["resumed"] = self.data["run"].get("resumed", 0) + 1
            self.data["run"]["finished"] = None
            self.data["run"]["complete"] = False
            return self
        for stale in (path, directory / JOURNAL):
            stale.unlink(missing_ok=True)
        self = cls(directory, _skeleton(run), **kw)
        self._append({"type": "run", "run": _clean(run)}, flush=False)  # a resume can start from the journal alone
        return self

    @property
    def path(self) -> Path:
        return self.directory / RESULTS

    # cells -------------------------------------------------------------------------------------
    def has(self, key: tuple) -> bool:
        """True when the cell is recorded, or known not to exist."""
        return key in self._cells or key in self._absent

    def mark_not_applicable(self, key: tuple) -> None:
        """Record that cell ``key`` does not exist (journaled, so resume skips it)."""
        if key not in self._absent:
            self._absent.add(key)
            self._append({"type": "not_applicable", "key": list(key)})

    def has_row(self, key: tuple) -> bool:
        return key in self._rows

    def add_cell(self, cell: dict) -> None:
        key = cell_key(cell)
        self._cells[key] = cell
        self._clean["cell", key] = clean = _clean(cell)
        self._append({"type": "cell", "cell": clean})

    def add_row(self, row: dict) -> None:
        key = throughput_key(row)
        self._rows[key] = row
        self._clean["row", key] = clean = _clean(row)
        self._append({"type": "throughput", "row": clean})

    @property
    def cells(self) -> list[dict]:
        return list(self._cells.values())

    @property
    def rows(self) -> list[dict]:
        return list(self._rows.values())

    def _append(self, entry: dict, flush: bool = True) -> None:
        try:
            if self._journal is None:
                self._journal = open(self.directory / JOURNAL, "a", encoding="utf-8")
            self._journal.write(json.dumps(entry, allow_nan=False) + "\n")
            self._journal.flush()
        except OSError as exc:
            raise _unwritable(self.directory / JOURNAL, exc) from None
        if not flush:
            return
        size = len(self._cells) + len(self._rows)
        # a rewrite's cost grows with the file (below ~256 cells it is mostly the fixed cost)
        expected = self._flush_cost * max(1.0, size / max(self._flush_size, 256))
        if time.monotonic() - self._last_flush >= max(self.flush_seconds, 20 * expected):
            self.flush()

    # persistence -------------------------------------------------------------------------------
    def flush(self, *, reclean: bool = False) -> None:
        """Rewrite results.json atomically. Cells are written as cleaned when they were added;
        ``reclean`` cleans them again (close() does: annotations such as known failures are made
        in place after the sweep)."""
        t0 = time.monotonic()
        if reclean:
            self._clean = {("cell", k): _clean(c) for k, c in self._cells.items()}
            self._clean |= {("row", k): _clean(r) for k, r in self._rows.items()}
        self.data["cells"] = self.cells
        self.data["throughput"] = self.rows
        self.data["not_applicable"] = [list(k) for k in sorted(self._absent)]
        rest = _clean({k: v for k, v in self.data.items() if k not in ("cells", "throughput")})
        rest["cells"] = [self._clean["cell", k] for k in self._cells]
        rest["throughput"] = [self._clean["row", k] for k in self._rows]
        order = {k: i for i, k in enumerate(self.data)}
        text = json.dumps(dict(sorted(rest.items(), key=lambda kv: order[kv[0]])), allow_nan=False,
                          separators=(",", ":"))
        tmp = self.path.with_name(f".{RESULTS}.{os.getpid()}.tmp")
        try:
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise _unwritable(self.path, exc) from None
        self._last_flush = time.monotonic()
        self._flush_cost = self._last_flush - t0
        self._flush_size = max(1, len(self._cells) + len(self._rows))

    def close(self) -> None:
        self.flush(reclean=True)
        if self._journal is not None:
            self._journal.close()
            self._journal = None


def _skeleton(run: dict) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, "run": run, "provenance": {},
            "budgets": {}, "budgets_source": None, "implementations": [], "scenarios": [],
            "cells": [], "throughput": [], "copy": [], "summary": None}


def _read_journal(path: Path):
    if not path.exists():
        return
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill: that cell is simply redone
            if isinstance(entry, dict):
                yield entry


def load(path: str | Path) -> dict:
    """Read a results file; ValueError with a one-line reason when it is not one."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"results: {path} does not exist") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"results: {path} is not valid JSON ({exc.msg} at line {exc.lineno})") from None
    except UnicodeDecodeError:
        raise ValueError(f"results: {path} is not text (a binary file?); name a results.json") from None
    except OSError as exc:
        raise ValueError(f"results: cannot read {path} ({exc.strerror or exc})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"results: {path} is not an xent-harness results file")
    version = data.get("schema_version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise ValueError(f"results: {path} has schema_version {version!r}; expected an integer (this harness writes {SCHEMA_VERSION})")
    if version > SCHEMA_VERSION:
        raise ValueError(f"results: {path} has schema_version {data['schema_version']}; upgrade xent-harness")
    return data


def argv_command(argv: list[str]) -> str:
    import shlex

    return "xent-harness " + " ".join(shlex.quote(a) for a in argv)
