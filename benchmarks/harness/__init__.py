"""What the benchmark scripts share: the machine and code measured, how results
read and leave, the scratch server and its baselines, fresh local databases.

The scripts import it as a sibling (``from harness import ...``), the way they
run: ``python benchmarks/NAME.py`` puts ``benchmarks/`` first on ``sys.path``.
"""

from harness.local import CONTENT, drop_capture_triggers, floor_capture, fresh_local
from harness.machine import (
    MEMORY_FILESYSTEMS,
    Machine,
    describe_machine,
    filesystem_of,
    load_average,
    machine_lines,
)
from harness.report import (
    Latency,
    Phase,
    ProfileEntry,
    emit,
    percentile,
    profile_lines,
    progress,
    read_profile,
    verdict,
)
from harness.server import (
    COPY_TABLE,
    DEFAULT_ADMIN_URL,
    DEVICE_ROLE,
    FLOOR_BATCH,
    copy_rows,
    floor_rows,
    reset_server,
    scratch_database,
    with_params,
)

__all__ = [
    "CONTENT",
    "COPY_TABLE",
    "DEFAULT_ADMIN_URL",
    "DEVICE_ROLE",
    "FLOOR_BATCH",
    "MEMORY_FILESYSTEMS",
    "Latency",
    "Machine",
    "Phase",
    "ProfileEntry",
    "copy_rows",
    "describe_machine",
    "drop_capture_triggers",
    "emit",
    "filesystem_of",
    "floor_capture",
    "floor_rows",
    "fresh_local",
    "load_average",
    "machine_lines",
    "percentile",
    "profile_lines",
    "progress",
    "read_profile",
    "reset_server",
    "scratch_database",
    "verdict",
    "with_params",
]
