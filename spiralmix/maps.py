"""Every member's probability maps at every evaluation, kept as arrays, and drawn on demand.

An ensemble of many members draws its figures for a few of them only (``evaluation.
figure_seeds``); :class:`ProbabilityMaps` keeps every member's map at every evaluation in
its own event file as uint8 probabilities (``maps/probability``, 10 kB per map on the
default 100 × 100 grid, and once ``maps/true_posterior``), and ``spiralmix-render`` draws
any of them as the figure TensorBoard would have shown (``boundary/probability_train``).
The arrays live in the event file so that a resumed run drops the maps of the steps it
repeats exactly as it drops their scalars.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from spiralmix.evaluation import Evaluation

PROBABILITY, TRUTH = "maps/probability", "maps/true_posterior"


def quantize(p: torch.Tensor) -> np.ndarray:
    """Probabilities in [0, 1] as uint8 in 0..255 (rounded: within 1/510 of p)."""
    return (p.float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def dequantize(q: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(q.astype(np.float32) / 255)


class ProbabilityMaps:
    """An evaluation consumer: each member's map on its grid, ``maps/probability``, (R²,)
    of class 1 or (R², K), at every evaluation into its own run; where the data have one,
    the true posterior ``maps/true_posterior`` at step 0."""

    def __init__(self, runs: Sequence) -> None:
        self.runs = list(runs)

    def on_evaluation(self, evaluation: Evaluation) -> None:
        maps = {PROBABILITY: quantize(evaluation.grid_p)}  # every member's at once
        if evaluation.step == 0 and evaluation.grid_truth is not None:
            maps[TRUTH] = quantize(evaluation.grid_truth)
        for e, run in enumerate(self.runs):
            run.events.write_arrays(evaluation.step, {tag: q[e] for tag, q in maps.items()})


class MapsError(ValueError):
    """A folder without a finished run's maps, or a step it did not evaluate."""


def read_maps(member_dir: Path, tag: str = PROBABILITY) -> dict[int, torch.Tensor]:
    """A member's maps by step from its event files (as TensorBoard reads them: a resumed
    run's repeated steps once), probabilities in [0, 1]."""
    # The accumulator TensorBoard's server uses: the older one drops a resumed run's
    # repeated steps of scalars and images only, never of tensors.
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator
    from tensorboard.util.tensor_util import make_ndarray

    events = EventAccumulator(str(member_dir), size_guidance={"tensors": 0})
    events.Reload()
    if tag not in events.Tags()["tensors"]:
        return {}
    return {t.step: dequantize(make_ndarray(t.tensor_proto)) for t in events.Tensors(tag)}


def member_dirs(path: Path) -> list[Path]:
    """The run folders (those with a metrics.json) at or under ``path``, sorted."""
    if (path / "metrics.json").is_file():
        return [path]
    return sorted(p.parent for p in path.rglob("metrics.json"))


@dataclass
class Selection:
    """What :func:`select` found of one run: its maps at the chosen steps, its grid and
    training data (``boundary.pt``), and its title."""

    member_dir: Path
    maps: dict[int, torch.Tensor]
    saved: dict
    label: str
    truth: bool

    def images(self):
        """(step, RGB image (H, W, 3) uint8) for each chosen step, drawn as
        ``boundary/probability_train`` (or as ``boundary/true_posterior``)."""
        from spiralmix import plots

        for step, p in self.maps.items():
            title = f"{'true posterior · ' if self.truth else ''}{self.label}"
            title += "" if self.truth else f" · step {step:,}"
            yield (
                step,
                plots.probability_map(
                    self.saved["grid"], p, title, self.saved["train_X"], self.saved["train_y"]
                ),
            )


def select(member_dir: Path, steps: Sequence[int | str], truth: bool = False) -> Selection:
    """Member ``member_dir``'s maps at ``steps`` (ints, "first", "last" or "all"), or with
    ``truth`` its true posterior; :class:`MapsError` names what is missing."""
    from spiralmix.config import dataset_label

    result = json.loads((member_dir / "metrics.json").read_text())
    if not (member_dir / "boundary.pt").is_file():
        raise MapsError(f"{member_dir} has no boundary.pt (its grid and data): the run ended "
                        f"before it finished ({result.get('status')})")  # fmt: skip
    maps = read_maps(member_dir, TRUTH if truth else PROBABILITY)
    if not maps:
        what = "true posterior (its data have no noise)" if truth else "maps"
        raise MapsError(f"{member_dir} keeps no {what}")
    if not truth:
        maps = {step: maps[step] for step in _steps(maps, steps, member_dir)}
    saved = torch.load(member_dir / "boundary.pt", weights_only=True)
    data = result["config"]["data"]
    label = f"{dataset_label(data['name'], data['n_classes'])} · {result['regularizer']}"
    return Selection(member_dir, maps, saved, f"{label} · seed {result['seed']}", truth)


def _steps(maps: dict, wanted: Sequence[int | str], member_dir: Path) -> list[int]:
    have = sorted(maps)
    chosen: list[int] = []
    for step in wanted:
        if step == "all":
            chosen += have
        elif step in ("first", "last"):
            chosen.append(have[0] if step == "first" else have[-1])
        elif step in maps:
            chosen.append(step)
        else:
            shown = ", ".join(f"{s:,}" for s in have[:6]) + (" …" if len(have) > 6 else "")
            raise MapsError(f"--step {step}: {member_dir} has maps at steps {shown}")
    return list(dict.fromkeys(chosen))


def parse_step(text: str) -> int | str:
    if text in ("first", "last", "all"):
        return text
    try:
        return int(text.replace(",", "").replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--step {text} is invalid: give a step, first, last or all"
        ) from None


def main(argv: Sequence[str] | None = None) -> int:
    """``spiralmix-render RUN [RUN ...] [--step N ...] [--truth] [--out DIR]``."""
    parser = argparse.ArgumentParser(
        prog="spiralmix-render",
        description="Draw a run's probability map at any evaluated step from the maps it "
        "keeps (every member of every run keeps them), as TensorBoard's "
        "boundary/probability_train shows it. A folder that holds several runs (an ensemble, "
        "a sweep) draws each of them.",
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run folders, or folders of them")
    parser.add_argument(
        "--step", type=parse_step, action="append", metavar="STEP",
        help="a step, first, last or all; repeatable (default: last)",
    )  # fmt: skip
    parser.add_argument(
        "--truth", action="store_true",
        help="the generator's true posterior instead (data with noise)",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, default=None,
        help="where the PNGs go (default: each run's folder, maps/)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    found = []
    for path in args.runs:
        dirs = member_dirs(path) if path.is_dir() else []
        if not dirs:
            error = f"spiralmix-render: error: {path} holds no run (no metrics.json)"
            print(error, file=sys.stderr)
            return 2
        found += dirs
    try:  # every run and step is found before any file is written
        selections = [select(d, args.step or ["last"], args.truth) for d in found]
    except MapsError as err:
        print(f"spiralmix-render: error: {err}", file=sys.stderr)
        return 2
    from PIL import Image

    for selection in selections:
        d = selection.member_dir
        out = args.out or d / "maps"
        if args.out is not None and len(found) > 1:
            out = args.out / _relative_name(d, found)
        out.mkdir(parents=True, exist_ok=True)
        for step, image in selection.images():
            name = "true_posterior.png" if args.truth else f"probability_step{step:07d}.png"
            Image.fromarray(image).save(out / name)
            print(out / name)
    return 0


def _relative_name(member_dir: Path, found: Sequence[Path]) -> str:
    """A run's folder below the runs' common parent, as one name (seed=1, or
    none+mixup__mixup_seed=1 for a sweep's job folder and run folder)."""
    parts = [d.parts for d in found]
    n = 0
    while all(len(p) > n for p in parts) and len({p[n] for p in parts}) == 1:
        n += 1
    return "__".join(member_dir.parts[n:]) or member_dir.name


if __name__ == "__main__":
    sys.exit(main())
