"""A run's numbers do not depend on its neighbours: every member of an ensemble equals the
same seed and settings trained alone, bit for bit (same machine, same torch build) — its
metrics.json (final, best and the whole history), its TensorBoard scalars, figures and kept
maps and its checkpoints' weights and optimizer moments. The ensembles here draw every
member's figures (``evaluation.figure_seeds=null``), so that each can be compared."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from spiralmix.train import train
from tests.conftest import CONF_DIR, REGULARIZERS, TINY


def _train(tmp_path: Path, name: str, overrides: list[str]) -> list[dict]:
    overrides = [*TINY, *overrides]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return train(compose("config", overrides=overrides), tmp_path / name, overrides)


def _events(run_dir: Path) -> dict[str, list[tuple[int, float | bytes]]]:
    """Every scalar (step, value), figure (step, PNG bytes) and kept map (step, bytes) by tag."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0,
                                                           "tensors": 0})  # fmt: skip
    events.Reload()
    tags = events.Tags()
    return {
        **{tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in tags["scalars"]},
        **{tag: [(e.step, e.encoded_image_string) for e in events.Images(tag)]
           for tag in tags["images"]},
        **{tag: [(e.step, e.tensor_proto.tensor_content) for e in events.Tensors(tag)]
           for tag in tags["tensors"] if tag.startswith("maps/")},
    }  # fmt: skip


def _checkpoints(run_dir: Path) -> dict[str, dict]:
    return {
        path.name: torch.load(path, weights_only=True)
        for path in sorted((run_dir / "checkpoints").glob("*.ckpt"))
    }


def _assert_member_equals_alone(
    tmp_path: Path, together: list[dict], together_dir: Path, e: int, overrides: list[str]
) -> None:
    member = together[e]
    name = f"{member['regularizer']}-{member['seed']}"
    settings = [f"regularizer={member['regularizer']}", f"seed={member['seed']}", *overrides]
    alone = _train(tmp_path, name, settings)[0]
    for key in ("status", "steps", "final", "best", "history"):
        assert member[key] == alone[key], (name, key)

    member_dir = together_dir / f"regularizer={member['regularizer']},seed={member['seed']}"
    mine, theirs = _events(member_dir), _events(tmp_path / name)
    assert mine.keys() == theirs.keys()
    assert {"train/loss", "flatten/spectrum", "maps/probability"} <= mine.keys()
    for tag in theirs:
        assert mine[tag] == theirs[tag], (name, tag)

    ensemble, single = _checkpoints(together_dir), _checkpoints(tmp_path / name)
    assert ensemble.keys() == single.keys() and "last.ckpt" in single, name
    for file, checkpoint in single.items():
        weights = checkpoint["state_dict"]
        assert weights.keys() == ensemble[file]["state_dict"].keys()
        for key, value in weights.items():
            assert torch.equal(ensemble[file]["state_dict"][key][e], value[0]), (name, file, key)
        states = ensemble[file]["optimizer_states"][0]["state"]
        for index, state in checkpoint["optimizer_states"][0]["state"].items():
            for moment in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(states[index][moment][e], state[moment][0]), (name, moment)


def test_six_regularizers_in_one_ensemble_equal_their_runs_alone(tmp_path):
    """18 members, so that members sit in the CPU vector lanes of every batched kernel
    (one-logit output biases fill a 16-float vector only from 16 members on)."""
    settings = [
        "trainer.max_steps=2000", "trainer.steps_per_call=250",
        "trainer.eval_every_n_steps=500", "trainer.checkpoint_every_n_steps=1000",
    ]  # fmt: skip
    grid = [
        f"regularizers=[{','.join(REGULARIZERS)}]",
        "seeds=[4,5,6]",
        "evaluation.figure_seeds=null",
    ]
    together = _train(tmp_path, "together", [*grid, *settings])
    assert [m["seed"] for m in together[:3]] == [4, 5, 6] and len(together) == 18
    assert len(together[0]["history"]) == 5  # evaluations at 0, 500, ..., 2000
    # One seed of each regularizer, and the last member (past the last full vector).
    for e in [*range(0, 18, 3), 17]:
        _assert_member_equals_alone(tmp_path, together, tmp_path / "together", e, settings)


@pytest.mark.parametrize(
    "overrides",
    [
        ["mixup.pairing=permute"],
        ["data=spirals3"],
        # the same model code as spirals, spirals3 and blobs4: the long tier (`make test-slow`)
        pytest.param(["data=moons"], marks=pytest.mark.slow),
        pytest.param(["data=circles"], marks=pytest.mark.slow),
        pytest.param(["data=checkerboard", "data.board_size=3"], marks=pytest.mark.slow),
        ["data=blobs", "data.n_classes=4", "data.n_samples=1000"],
        ["data.batch_size=10"],
        ["data=spirals3", "data.batch_size=12"],
        pytest.param(
            ["data=spirals", "data.n_classes=5", "data.n_samples=1000"], marks=pytest.mark.slow
        ),
        [
            "data.noise=0.2",
            "data.test_fraction=0.8",
            "data.val_fraction=0.1",
            "evaluation.temperature_scaling=true",
        ],
    ],
    ids=[
        "permute",
        "spirals3",
        "moons",
        "circles",
        "checkerboard3",
        "blobs4",
        "batch10",
        "spirals3_batch12",
        "spirals5",
        "temperature",
    ],
)
def test_members_equal_their_runs_alone_for_every_pairing_and_data_set(tmp_path, overrides):
    """Mixing and not mixing members side by side, for each data set and class count."""
    names = ["none", "dropout", "mixup", "input_mixup", "hidden_mixup"]
    together = _train(
        tmp_path,
        "together",
        [
            f"regularizers=[{','.join(names)}]",
            "seeds=[4,5]",
            "evaluation.figure_seeds=null",
            *overrides,
        ],
    )
    for e in (1, 5, 9):  # none, mixup and hidden mixup, seed 5
        _assert_member_equals_alone(tmp_path, together, tmp_path / "together", e, overrides)
