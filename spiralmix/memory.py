"""What a run needs in memory, against what the machine has: absurd sizes fail up front.

Without this check, ``data.n_samples=200000000`` generates data for minutes and then runs
out of memory (or swaps) at the first evaluation, which runs the network on the whole
test set at once.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from spiralmix.config import ConfigError, split_sizes

# Measured peaks (ru_maxrss) of a process at n_samples = 4·10⁶ with hidden widths 4 and 64,
# checked at 2·10⁶ with width 32 (1.63 GiB measured, 1.66 GiB estimated):
# per point while the data set is generated, shuffled and split (float64 spirals, int64
# indices, per-split copies), per evaluated point and hidden unit (float32 activations
# of the whole split at once), and the interpreter with torch and Lightning loaded.
DATA_BYTES_PER_POINT = 350
EVAL_BYTES_PER_UNIT = 12
BASELINE_BYTES = 450 * 2**20
GIB = 2**30
CGROUP = Path("/sys/fs/cgroup")


def estimate_bytes(members: list[DictConfig]) -> dict[str, int]:
    """Peak memory of a process training ``members``, split into what data and what
    evaluation (whole splits and the probability grid at once) need."""
    cfg, n = members[0], len(members)
    width = max(cfg.model.hidden_dims)
    sizes = split_sizes(cfg)
    evaluated = max(sizes.values()) + cfg.evaluation.grid_resolution**2
    return {
        "data.n_samples": n * DATA_BYTES_PER_POINT * cfg.data.n_samples,
        "evaluation.grid_resolution": n * EVAL_BYTES_PER_UNIT * evaluated * width,
    }


def available_bytes() -> int:
    """Memory this process may still use: the system's available memory, or less under a
    container's (cgroup v2 or v1) limit."""
    available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (
        ("memory.max", "memory.current"),  # cgroup v2
        ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes"),  # cgroup v1
    ):
        try:
            limit = int((CGROUP / limit_file).read_text())
            usage = int((CGROUP / usage_file).read_text())
        except (OSError, ValueError):  # no such file, or "max"
            continue
        available = min(available, max(limit - usage, 0))
    return available


def check_memory(members: list[DictConfig], available: int | None = None) -> None:
    """Raise :class:`ConfigError` naming the largest need when the run cannot fit."""
    needs = estimate_bytes(members)
    total = BASELINE_BYTES + sum(needs.values())
    available = available_bytes() if available is None else available
    if total <= available:
        return
    key = max(needs, key=needs.get)
    value = OmegaConf.select(members[0], key)
    runs = f"{len(members)} runs" if len(members) > 1 else "1 run"
    raise ConfigError(
        key, value,
        f"needs about {total / GIB:.1f} GiB of memory ({runs}: data "
        f"{needs['data.n_samples'] / GIB:.1f} GiB, evaluation "
        f"{needs['evaluation.grid_resolution'] / GIB:.1f} GiB) but {available / GIB:.1f} GiB "
        "is available",
    )  # fmt: skip
