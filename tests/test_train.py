"""train(cfg): reproducibility, vectorized seeds, failures and resuming, in process."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time

import pytest
import torch
from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator

from spiralmix.train import build_module, overridden_keys, tensorboard_hparams, train
from tests.conftest import TINY, members

TIMINGS = {"wall_time_s", "steps_per_s"}


def _without_timings(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMINGS}


def test_same_config_and_seed_give_identical_results(tmp_path, tiny_config):
    cfg = tiny_config("regularizer=mixup", "regularizer.p=0.1")
    first = train(cfg, tmp_path / "a")[0]
    second = train(cfg, tmp_path / "b")[0]
    assert _without_timings(first) == _without_timings(second)
    assert first["history"][-1]["step"] == 200


def test_different_seeds_give_different_data_and_results(tmp_path, tiny_config):
    first = train(tiny_config("seed=1"), tmp_path / "a")[0]
    second = train(tiny_config("seed=2"), tmp_path / "b")[0]
    assert first["final"]["test/loss"] != second["final"]["test/loss"]
    data_a = torch.load(tmp_path / "a" / "boundary.pt", weights_only=True)
    data_b = torch.load(tmp_path / "b" / "boundary.pt", weights_only=True)
    assert not torch.equal(data_a["train_X"], data_b["train_X"])


@pytest.mark.parametrize("regularizer", ["mixup", "dropout"])
def test_vectorized_seed_trains_like_a_separate_run(tmp_path, tiny_config, regularizer):
    """Member e of seeds=[...] draws exactly what a run of seeds[e] draws, and its metrics
    are those of that run, bit for bit (tests/test_members_exact.py checks every file)."""
    together = train(tiny_config(f"regularizer={regularizer}", "seeds=[7,8,9]"), tmp_path / "e")
    alone = train(tiny_config(f"regularizer={regularizer}", "seed=8"), tmp_path / "s")[0]
    member = together[1]
    assert member["seed"] == 8 and (tmp_path / "e" / "seed=8" / "metrics.json").is_file()
    assert member["history"] == alone["history"] and member["final"] == alone["final"]

    cfg = tiny_config(f"regularizer={regularizer}")
    together = build_module(members(cfg, [7, 8, 9])).ensemble.draw(chunk=2, n_steps=50)
    alone = build_module(members(cfg, [8])).ensemble.draw(chunk=2, n_steps=50)
    for group_together, group_alone in zip(together.groups, alone.groups, strict=True):
        for key, value in group_alone.items():
            assert torch.equal(group_together[key][:, 1:2], value), key
    for mask_together, mask_alone in zip(together.masks or [], alone.masks or [], strict=True):
        assert torch.equal(mask_together[:, 1:2], mask_alone)


def test_non_finite_loss_stops_the_run_and_is_recorded(tmp_path, tiny_config):
    result = train(tiny_config("model.lr=1e30"), tmp_path)[0]
    assert result["status"] == "failed"
    assert result["failed_step"] >= 1 and str(result["failed_step"]) in result["error"]
    assert result["steps"] < 200  # it stopped early
    saved = json.loads((tmp_path / "metrics.json").read_text())  # strict JSON: NaN → null
    assert saved["status"] == "failed" and saved["final"]["test/loss"] is None
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()
    assert list(tmp_path.glob("events.out.tfevents.*"))


def _event_steps(run_dir, tag: str) -> list[int]:
    """The steps of a tag as TensorBoard shows them (its server's accumulator, in which
    scalars, images and kept maps are all tensors)."""
    acc = EventAccumulator(str(run_dir), size_guidance={"tensors": 0})
    acc.Reload()
    return [event.step for event in acc.Tensors(tag)]


def test_killed_run_resumes_to_the_same_result(tmp_path):
    args = [
        "regularizer=mixup", "regularizer.p=0.1", *TINY, "trainer.max_steps=1000",
        "trainer.checkpoint_every_n_steps=200", "trainer.eval_every_n_steps=200",
    ]  # fmt: skip
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    run = [sys.executable, "-m", "spiralmix", *args]
    subprocess.run([*run, f"hydra.run.dir={reference}"], check=True, capture_output=True)

    process = subprocess.Popen([*run, f"hydra.run.dir={interrupted}"], stdout=subprocess.DEVNULL)
    checkpoint = interrupted / "checkpoints" / "step=400.ckpt"
    deadline = time.monotonic() + 120
    while not checkpoint.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "metrics.json").exists(), "killed too late to test resuming"

    resumed = subprocess.run(
        [sys.executable, "-m", "spiralmix", f"resume={interrupted}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    expected = json.loads((reference / "metrics.json").read_text())
    result = json.loads((interrupted / "metrics.json").read_text())
    assert _without_timings(result) == _without_timings(expected)
    # Every evaluation and every step appears once in TensorBoard's view of the run.
    evaluations = list(range(0, 1001, 200))
    assert _event_steps(interrupted, "test/acc") == evaluations
    assert _event_steps(interrupted, "boundary/probability") == evaluations
    assert _event_steps(interrupted, "maps/probability") == evaluations
    assert _event_steps(interrupted, "train/loss") == list(range(1, 1001))
    # The saved config is the original one, not the resume command's.
    assert "trainer.max_steps=1000" in (interrupted / ".hydra" / "overrides.yaml").read_text()


def test_checkpoints_load_without_unpickling_objects(tmp_path, tiny_config):
    train(tiny_config(), tmp_path)
    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["global_step"] == 200
    assert [h["step"] for h in checkpoint["spiralmix"]["history"]] == [0, 100, 200]
    assert math.isfinite(checkpoint["spiralmix"]["train_time_s"])


def test_fewer_points_per_class_than_hidden_units_train_and_draw(tmp_path, tiny_config):
    """experiment=data_size's smallest set: 10 points per class, 32 hidden units, so each
    layer's spectrum has 10 values; the live spectrum figure must fit them."""
    cfg = tiny_config("experiment=data_size", "data.n_samples=920", "seeds=null", "seed=1")
    result = train(cfg, tmp_path)[0]
    assert result["status"] == "completed"
    spectra = torch.load(tmp_path / "boundary.pt", weights_only=True)["spectra"]
    assert [sv.shape[-1] for sv in spectra] == [2, 10, 10, 10]


def test_hparams_show_the_regularizer_data_set_seed_and_the_command_line_keys_first():
    config = {"seed": 1, "regularizer": {"alpha": 2.0, "layers": None}, "regularizer_name": "mixup",
              "data": {"n_classes": 2, "name": "moons"}}  # fmt: skip
    overrides = ["regularizer.alpha=0.5", "regularizer=mixup", "+x=1", "hydra.run.dir=/a",
                 "hydra/launcher=joblib", "data=moons"]  # fmt: skip
    first = overridden_keys(overrides)
    assert first == ["regularizer.alpha", "regularizer_name", "x", "data.name"]
    hparams = tensorboard_hparams(config, first)
    assert list(hparams) == ["regularizer_name", "data.name", "seed", "regularizer.alpha",
                             "regularizer.layers", "data.n_classes"]  # fmt: skip
    assert hparams["regularizer.layers"] == "None"  # TensorBoard takes no None or lists


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks the GPU where there is one")
def test_auto_accelerator_without_a_gpu_gives_the_cpu_result(tmp_path, tiny_config):
    cpu = train(tiny_config("regularizer=mixup"), tmp_path / "cpu")[0]
    auto = train(tiny_config("regularizer=mixup", "trainer.accelerator=auto"), tmp_path / "auto")[0]
    assert auto["history"] == cpu["history"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("regularizer", ["mixup", "dropout", "weight_decay"])
def test_gpu_run_trains_like_the_cpu_run(tmp_path, tiny_config, regularizer):
    overrides = [f"regularizer={regularizer}", "seeds=[1,2]"]
    cpu = train(tiny_config(*overrides), tmp_path / "cpu")
    gpu = train(tiny_config(*overrides, "trainer.accelerator=gpu"), tmp_path / "gpu")
    for c, g in zip(cpu, gpu):
        assert g["status"] == "completed" and g["steps"] == c["steps"] == 200
        # The same draws; only GPU rounding differs over 200 steps.
        assert abs(g["final"]["test/loss"] - c["final"]["test/loss"]) < 1e-2
    checkpoint = next((tmp_path / "gpu").rglob("last.ckpt"))
    state = torch.load(checkpoint, weights_only=True, map_location="cpu")["state_dict"]
    assert all(t.device.type == "cpu" for t in state.values())


def test_a_members_boundary_file_holds_that_member_only(tmp_path, tiny_config):
    """torch.save writes a view's whole storage: a member's boundary.pt must not carry its
    neighbours' grids and data."""
    train(tiny_config("seeds=[7,8,9]"), tmp_path / "e")
    train(tiny_config("seed=8"), tmp_path / "s")
    member, alone = tmp_path / "e" / "seed=8" / "boundary.pt", tmp_path / "s" / "boundary.pt"
    assert abs(member.stat().st_size - alone.stat().st_size) < 512
    mine, theirs = torch.load(member, weights_only=True), torch.load(alone, weights_only=True)
    assert mine.keys() == theirs.keys()
    for key in mine:
        if key == "spectra":
            assert [a.shape for a in mine[key]] == [b.shape for b in theirs[key]]
        else:
            assert mine[key].shape == theirs[key].shape, key
            assert mine[key].untyped_storage().nbytes() == theirs[key].untyped_storage().nbytes()
    for key in ("train_X", "train_y", "test_X", "test_y"):  # the member's own data set
        assert torch.equal(mine[key], theirs[key]), key
