"""Training throughput of one spiralmix ensemble, in process, on one torch thread.

    python benchmarks/ensemble.py --regularizer mixup --members 30 --steps 3000

Builds the module and data of ``python -m spiralmix regularizer=<r> seeds=[1..E]`` and times
its training loop: every chunk's batches (``datamodule.chunk``), draws, optimizer steps and
per-step TensorBoard scalars (:class:`spiralmix.step.EnsembleStep`; one event file per
member); no evaluations or figures (the grid in benchmarks/run.py measures those).
Prints one JSON object: steps/s, model-steps/s (steps/s × E), the matrix-product FLOPs of a
step, and the FLOP rate of a plain batched matrix product of the model's largest layer shape
for all members, the per-core peak that the achieved rate is set against.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from spiralmix.config import register  # noqa: E402
from spiralmix.events import RunLogger  # noqa: E402
from spiralmix.train import build_datamodule, build_module  # noqa: E402


def members(regularizer: str, n: int, overrides: list[str]) -> list:
    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"regularizer={regularizer}", *overrides])
    out = []
    for seed in range(1, n + 1):
        member = cfg.copy()
        member.seed, member.seeds = seed, None
        out.append(member)
    return out


def step_flops(dims: list[int], members: int, rows: int) -> int:
    """Matrix-product FLOPs of one step: forward, and backward to the weights and (except
    for the input layer) to the layer's input; 2 FLOPs per multiply-add."""
    total = 0
    for layer, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
        products = 2 if layer == 0 else 3  # forward, weight gradient, input gradient
        total += products * 2 * members * rows * fan_in * fan_out
    return total


def matmul_peak(members: int, rows: int, width: int, seconds: float = 1.0) -> float:
    """FLOP/s of torch.bmm (members, rows, width) @ (members, width, width), best of 5."""
    a, w = torch.randn(members, rows, width), torch.randn(members, width, width)
    flops = 2 * members * rows * width * width
    n = 20
    best = 0.0
    for _ in range(5):
        torch.bmm(a, w)
        start = time.perf_counter()
        for _ in range(n):
            torch.bmm(a, w)
        elapsed = time.perf_counter() - start
        best = max(best, n * flops / elapsed)
        n = max(20, int(n * seconds / 5 / max(elapsed, 1e-6)))
    return best


def measure(regularizer: str, n_members: int, steps: int, overrides: list[str]) -> dict:
    torch.set_num_threads(1)
    cfgs = members(regularizer, n_members, overrides)
    datamodule, ensemble = build_datamodule(cfgs), build_module(cfgs).ensemble
    datamodule.setup()
    optimizer = ensemble.optimizer()
    S = ensemble.steps_per_call
    n_chunks = max(1, math.ceil(steps / S))

    # Per-step scalars go to real event files, one per member, as in a run.
    log_dir = Path(tempfile.mkdtemp(prefix="spiralmix-ensemble-"))
    loggers = [RunLogger(log_dir / str(e), name="", version="") for e in range(n_members)]

    def chunk(index: int) -> None:
        batch = datamodule.chunk(index)
        draws = ensemble.draw(index, S)
        losses = ensemble.train_chunk(batch["x"], batch["y"], draws, optimizer)
        steps, values = ensemble.scalars(index * S, losses, draws)
        for logger, member_values in zip(loggers, values):
            logger.events.write_scalars(steps, member_values)

    chunk(0)  # warm-up: first-call allocations, the optimizer's state
    start, cpu = time.perf_counter(), time.process_time()
    for index in range(1, n_chunks + 1):
        chunk(index)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    for logger in loggers:
        logger.finalize("success")
    shutil.rmtree(log_dir)
    measured = n_chunks * S
    rows = ensemble.rows
    flops = step_flops(ensemble.net.dims, n_members, rows)
    width = max(ensemble.net.dims[1:-1])
    peak = matmul_peak(n_members, rows, width)
    steps_per_s = measured / wall
    return {
        "regularizer": regularizer,
        "members": n_members,
        "steps": measured,
        "wall_s": wall,
        "cpu_s": cpu,
        "steps_per_s": steps_per_s,
        "model_steps_per_s": steps_per_s * n_members,
        "model_steps_per_cpu_s": measured * n_members / cpu,
        "flops_per_step": flops,
        "flops_per_s": flops * steps_per_s,
        "peak_flops_per_s": peak,
        "peak_shape": [n_members, rows, width, width],
        "fraction_of_peak": flops * steps_per_s / peak,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--regularizer", default="mixup")
    parser.add_argument("--members", type=int, default=30)
    parser.add_argument("--steps", type=int, default=3000, help="timed steps (whole chunks)")
    parser.add_argument("overrides", nargs="*", help="config overrides, e.g. regularizer.alpha=1")
    args = parser.parse_args(argv)
    result = measure(args.regularizer, args.members, args.steps, args.overrides)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()
