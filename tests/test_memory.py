"""Memory estimates: absurd sizes are refused up front with what they would need."""

from __future__ import annotations

import pytest

from spiralmix.config import ConfigError
from spiralmix.memory import GIB, available_bytes, check_memory, estimate_bytes
from tests.conftest import compose_config, members, run_cli


def test_an_absurd_data_set_is_refused_before_anything_is_trained(tmp_path):
    result = run_cli("data.n_samples=200000000", f"hydra.run.dir={tmp_path}", timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith("spiralmix: error: data.n_samples=200000000 is invalid: needs about")
    assert "GiB of memory" in lines[0] and "available" in lines[0]
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("metrics.json"))


def test_the_estimate_grows_with_the_data_the_grid_and_the_members():
    cfg = compose_config()
    small = estimate_bytes([cfg])
    bigger = estimate_bytes([compose_config(["data.n_samples=2000"])])
    assert bigger["data.n_samples"] == 2 * small["data.n_samples"]
    assert bigger["evaluation.grid_resolution"] > small["evaluation.grid_resolution"]
    five = estimate_bytes(members(cfg, [1, 2, 3, 4, 5]))
    assert five == {key: 5 * value for key, value in small.items()}
    # The 200 000 000-point case: over 100 GiB, which no laptop has.
    assert sum(estimate_bytes([compose_config(["data.n_samples=200000000"])]).values()) > 100 * GIB


@pytest.mark.parametrize(
    ("override", "key"),
    [("data.n_samples=20000000", "data.n_samples"),
     ("evaluation.grid_resolution=10000", "evaluation.grid_resolution")],
)  # fmt: skip
def test_a_run_that_does_not_fit_names_its_largest_need(override, key):
    cfg = compose_config([override])
    check_memory([cfg], available=64 * GIB)  # fits a big machine
    with pytest.raises(ConfigError, match=f"^{key}=.*needs about .* GiB .* but 2.0 GiB"):
        check_memory([cfg], available=2 * GIB)
    check_memory([compose_config()], available=2 * GIB)  # the default fits anywhere


def test_available_memory_is_positive_and_below_the_machine_total():
    with open("/proc/meminfo") as f:
        total_kib = int(f.readline().split()[1])  # MemTotal comes first
    assert 0 < available_bytes() <= total_kib * 1024
