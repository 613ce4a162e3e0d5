"""Shared fixtures: composed configs, tiny training runs, the CLI as a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from spiralmix.config import register

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
REGULARIZERS = ["none", "weight_decay", "dropout", "mixup", "input_mixup", "hidden_mixup"]
# The controls of mixup (spiralmix/regularizers/controls.py), by preset name.
CONTROLS = ["label_smoothing", "mixup_io", "regmixup", "local_mixup", "kernel_mixup",
            "noisy_mixup"]  # fmt: skip

# A few evaluations and figures in a few hundred steps: enough to see every code path.
TINY = [
    "trainer.max_steps=200",
    "trainer.steps_per_call=50",
    "trainer.eval_every_n_steps=100",
    "trainer.checkpoint_every_n_steps=100",
    "trainer.progress_bar=false",
    "evaluation.grid_resolution=30",
]

register()


def compose_config(overrides: list[str] = ()) -> DictConfig:
    """The app's config as ``python -m spiralmix <overrides>`` would see it."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides))


def members(cfg: DictConfig, seeds: list[int]) -> list[DictConfig]:
    """One member config per seed, as a ``seeds=[...]`` run makes them."""
    out = []
    for seed in seeds:
        member = cfg.copy()
        member.seed, member.seeds = seed, None
        out.append(member)
    return out


@pytest.fixture
def tiny_config():
    """compose_config with TINY training settings first (later overrides win)."""
    return lambda *overrides: compose_config([*TINY, *overrides])


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m spiralmix *args`` and capture its output."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run(
        [sys.executable, "-m", "spiralmix", *args],
        capture_output=True, text=True, timeout=timeout, env=env, **kwargs,
    )  # fmt: skip
