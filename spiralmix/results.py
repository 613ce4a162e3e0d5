"""Each member's results on disk: ``metrics.json`` and ``boundary.pt``, or a failed run's record.

:class:`RunResults` is handed the members' configs and folders when a run starts, and at its
end what training produced (the evaluation history, the latest record, the data, the
failures, the step count and the wall time); it reads nothing from the module or the
datamodule.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from spiralmix.atomic import write_json_atomic, write_torch_atomic
from spiralmix.evaluation import Evaluation

log = logging.getLogger("spiralmix")  # shown and kept by Hydra's job logging


def _nan_to(value: float, replacement: float) -> float:
    return replacement if math.isnan(value) else value


def member_history(history: list[dict], member: int) -> list[dict]:
    """One member's evaluations from the ensemble's history (step, metric → (E,) lists)."""
    return [
        {"step": h["step"], **{k: v[member] for k, v in h.items() if k != "step"}} for h in history
    ]


def summarize(history: list[dict], member: int) -> dict:
    """Final and best test metrics of one member from the evaluation history."""
    final = {k: v[member] for k, v in history[-1].items() if k != "step"}
    # A diverged member's NaNs never count as its best.
    accs = [_nan_to(h["test/acc"][member], -math.inf) for h in history]
    losses = [_nan_to(h["test/loss"][member], math.inf) for h in history]
    best_acc = max(range(len(accs)), key=accs.__getitem__)
    best_loss = min(range(len(losses)), key=losses.__getitem__)
    return {
        "final": final,
        "best": {
            "test/acc": accs[best_acc],
            "test/acc_step": history[best_acc]["step"],
            "test/loss": losses[best_loss],
            "test/loss_step": history[best_loss]["step"],
        },
    }


def save_boundary(path: Path, evaluation: Evaluation, data: object, e: int) -> None:
    """The final probability grid and the data of member e, for reports (tensors only).

    ``data`` holds the members' splits, ``{train,val,test}_{X,y}`` with a leading member
    axis. ``grid_p`` is (R²,), the probability of class 1, for two classes and (R², K) for
    K > 2. Each tensor is a copy: ``torch.save`` writes a view's whole storage, which is
    every member's.
    """
    saved = {
        "step": torch.tensor(evaluation.step),
        "grid": evaluation.grid[e],
        "grid_p": evaluation.grid_p[e],
        "test_p": evaluation.test_p[e],
        "spectra": [sv[e] for sv in evaluation.spectra],  # per layer: (K classes, width)
        # The true posterior on the grid, where the data have one (noise > 0).
        **({} if evaluation.grid_truth is None else {"grid_truth": evaluation.grid_truth[e]}),
        **{
            f"{split}_{t}": getattr(data, f"{split}_{t}")[e]
            for split in ("train", "val", "test")
            for t in ("X", "y")
        },
    }
    saved["spectra"] = [sv.clone() for sv in saved["spectra"]]
    write_torch_atomic(path, {k: v if k == "spectra" else v.clone() for k, v in saved.items()})


class RunResults:
    """Writes each member's ``metrics.json`` (and ``boundary.pt``) into its folder.

    Args:
        members: each member's config (its regularizer's name, seed and ``trainer.max_steps``).
        configs: each member's resolved config, as saved in its metrics.json.
        dirs: each member's folder.
        run_dir: the run's folder (named in a failed run's error).
    """

    def __init__(
        self,
        members: Sequence[DictConfig],
        configs: Sequence[dict],
        dirs: Sequence[Path],
        run_dir: Path,
    ) -> None:
        if not len(members) == len(configs) == len(dirs):
            raise ValueError(f"{len(members)} members, {len(configs)} configs, {len(dirs)} dirs")
        self.members, self.configs, self.dirs = list(members), list(configs), list(dirs)
        self.run_dir = run_dir

    def _header(self, e: int, status: str, steps: int) -> dict:
        cfg = self.members[e]
        return {
            "status": status,
            "regularizer": cfg.regularizer_name,
            "seed": cfg.seed,
            "steps": steps,
            "max_steps": cfg.trainer.max_steps,
        }

    def completed(
        self,
        history: list[dict],
        latest: Evaluation,
        data: object,
        failures: Mapping[int, int],
        steps: int,
        wall_s: float,
    ) -> list[dict]:
        """Every member's metrics.json and boundary.pt after training: its final and best
        metrics from ``history``, ``latest``'s grid, and a failed status for the members in
        ``failures`` (member → step whose training loss was not finite). Logs a line each."""
        return [
            self._complete(e, history, latest, data, failures, steps, wall_s)
            for e in range(len(self.members))
        ]

    def _complete(self, e, history, latest, data, failures, steps, wall_s) -> dict:
        cfg, member_dir = self.members[e], self.dirs[e]
        result = {
            **self._header(e, "completed", steps),
            "wall_time_s": wall_s,
            "steps_per_s": steps / wall_s,
            "members_in_process": len(self.members),
            **summarize(history, e),
            "history": member_history(history, e),
            "config": self.configs[e],
        }
        if e in failures:
            step = failures[e]
            result.update(
                status="failed",
                failed_step=step,
                error=f"training loss became non-finite at step {step}",
            )
        save_boundary(member_dir / "boundary.pt", latest, data, e)
        write_json_atomic(member_dir / "metrics.json", result)
        final = result["final"]
        outcome = (
            f"FAILED: {result['error']}"
            if e in failures
            else f"test acc {final['test/acc']:.3f}  test loss {final['test/loss']:.3f}  "
            f"ECE {final['test/ece']:.3f}"
        )
        log.info(
            f"{cfg.regularizer_name} seed {cfg.seed}: {outcome}  {steps:,} steps in "
            f"{wall_s:.0f} s ({steps / wall_s:,.0f} steps/s)  → {member_dir}"
        )
        return result

    def failed(
        self, err: OSError, history: list[dict], steps: int, last_checkpoint: str
    ) -> list[dict]:
        """metrics.json with status failed and why, for each member of a run that could not
        write its files; the last checkpoint written stays (checkpoints are atomic)."""
        where = f" ({err.filename})" if err.filename else ""
        saved = "no checkpoint written"
        if last_checkpoint:
            saved = f"last good checkpoint {last_checkpoint}"
        error = (
            f"cannot write in {self.run_dir} at step {steps}: {err.strerror or err}{where}; {saved}"
        )
        results = []
        for e, (cfg, member_dir) in enumerate(zip(self.members, self.dirs)):
            header = self._header(e, "failed", steps)
            result = {
                "status": header.pop("status"),
                "error": error,
                **header,
                "history": member_history(history, e),
                "config": self.configs[e],
            }
            try:
                write_json_atomic(member_dir / "metrics.json", result)
            except OSError as again:
                result["error"] += f" (metrics.json not written either: {again.strerror or again})"
            # Printed, not logged: the run's spiralmix.log may be on the disk that failed.
            print(f"{cfg.regularizer_name} seed {cfg.seed}: FAILED: {result['error']}", flush=True)
            results.append(result)
        return results
