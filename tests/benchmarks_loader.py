"""Load a benchmark script as a module, as its smoke test needs it.

The scripts import their shared harness and their parts as siblings (``from
harness import ...``, ``from _push_drain import ...``), the way they run from
``python benchmarks/NAME.py``; so the folder goes on ``sys.path`` here, for
every smoke test alike, whatever order they run in.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _on_path() -> None:
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))


def benchmark_module(name: str) -> ModuleType:
    """A shared module of the benchmarks (``harness``, ``_push_backlog``, ...),
    imported under its own name, as the scripts import it."""
    _on_path()
    return importlib.import_module(name)


def load_benchmark(name: str) -> ModuleType:
    """A benchmark script (``push``, ``pull``, ``outbox_write``)."""
    _on_path()
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Registered before exec: dataclasses look their module up in sys.modules.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[spec.name]
        raise
    return module
