"""Staging's knobs and the names it leaves on the volume.

The transfer engine (evals.weights.transfer), the staging protocol
(evals.weights.stage) and retention (evals.weights.retention) share these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evals import settings
from evals.errors import BadInput

MARKER = ".tollgate-staged.json"
STAGED_MANIFEST = ".tollgate-manifest.json"
PROGRESS = ".tollgate-progress.json"
PARTS_DIR = ".tollgate-parts"
IN_USE_DIR = ".in-use"
MiB = 1 << 20


@dataclass(frozen=True)
class StageConfig:
    """Transfer knobs; each has a TOLLGATE_STAGE_* environment override."""

    part_size: int = 64 * MiB
    concurrency: int = 16
    buffer_size: int = 4 * MiB  # per thread: memory stays <= concurrency x buffer_size
    part_attempts: int = 5  # mid-stream failures (reset, stall) per part, resumed at the byte reached
    backoff_base_s: float = 0.5
    backoff_cap_s: float = 10.0
    progress_interval_s: float = 5.0
    lock_timeout_s: float = 3600.0
    fsync: bool = True  # the marker must never name data still only in the page cache
    free_bytes: int | None = None  # override of the free-space probe (quota-backed volumes, tests)
    splice: bool = True  # plain-HTTP bodies go socket -> pipe -> file in the kernel (Linux splice)
    mmap_hash: bool = True  # hash parts through a read-only mapping instead of copying them back

    @classmethod
    def from_env(cls, **overrides: Any) -> StageConfig:
        """Defaults from the TOLLGATE_STAGE_* settings (validated there); explicit overrides win."""
        env = settings.current()
        values: dict[str, Any] = {
            "part_size": env.stage_part_mb * MiB,
            "concurrency": env.stage_concurrency,
            "part_attempts": env.stage_part_attempts,
            "backoff_base_s": env.stage_backoff_s,
            "progress_interval_s": env.stage_progress_s,
            "lock_timeout_s": env.stage_lock_timeout_s,
            "free_bytes": env.stage_free_bytes,
            "splice": env.stage_splice,
            "mmap_hash": env.stage_mmap_hash,
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        cfg = cls(**values)
        if cfg.part_size < MiB or cfg.concurrency < 1 or cfg.part_attempts < 1:
            raise BadInput("part size must be >= 1 MiB, concurrency and part attempts >= 1")
        return cfg
