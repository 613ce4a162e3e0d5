"""The command line, run as a user runs it: real Hydra runs, real TensorBoard event files."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from spiralmix.__main__ import cli
from tests.conftest import CONTROLS, REGULARIZERS, TINY, run_cli

EVALUATIONS = [0, 100, 200]
SCALARS = [
    "train/loss", "test/loss", "test/acc", "test/nll", "test/ece", "test/brier",
    "train_clean/loss", "train_clean/acc", "boundary/uncertain_fraction", "ood/confidence",
    *(f"flatten/layer{k}/{name}" for k in range(4)
      for name in ("top_sv", "n_significant", "effective_rank")),
]  # fmt: skip
IMAGES = [
    "boundary/probability", "boundary/probability_train", "calibration/reliability",
    "flatten/spectrum",
]  # fmt: skip
MIXUP = {"mixup", "input_mixup", "hidden_mixup", *CONTROLS} - {"label_smoothing"}


@pytest.mark.parametrize(
    "regularizer",
    [*REGULARIZERS, *(pytest.param(name, marks=pytest.mark.slow) for name in CONTROLS)],
)
def test_a_short_run_logs_everything(tmp_path, regularizer):
    result = run_cli(f"regularizer={regularizer}", *TINY, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    assert f"{regularizer} seed 123: test acc" in result.stdout

    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    expected = SCALARS + (["mixup/k", "mixup/lambda"] if regularizer in MIXUP else [])
    assert set(expected) <= set(tags["scalars"])
    assert ("mixup/k" in tags["scalars"]) == (regularizer in MIXUP)
    for tag in expected[1:]:
        if not tag.startswith("mixup/"):
            assert [e.step for e in events.Scalars(tag)] == EVALUATIONS, tag
    assert [e.step for e in events.Scalars("train/loss")] == list(range(1, 201))
    for tag in IMAGES:
        images = events.Images(tag)
        assert [i.step for i in images] == EVALUATIONS, tag
        assert images[0].width > 300 and images[0].height > 200
    assert len(events.Images("boundary/test_data")) == 1
    assert "config/text_summary" in tags["tensors"]
    if regularizer in MIXUP:
        k = {e.value for e in events.Scalars("mixup/k")}
        assert k <= {0.0} if regularizer == "input_mixup" else k <= {0.0, 1.0, 2.0, 3.0}

    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["regularizer"] == regularizer
    assert metrics["steps"] == 200 and metrics["seed"] == 123
    assert metrics["steps_per_s"] > 0 and metrics["wall_time_s"] > 0
    assert set(SCALARS) - {"train/loss"} <= set(metrics["final"])
    assert [h["step"] for h in metrics["history"]] == EVALUATIONS
    assert metrics["best"]["test/acc"] == max(h["test/acc"] for h in metrics["history"])
    assert metrics["final"]["test/acc"] == metrics["history"][-1]["test/acc"]
    assert metrics["config"]["regularizer_name"] == regularizer
    assert (tmp_path / "boundary.pt").is_file()
    assert (tmp_path / "checkpoints" / "last.ckpt").is_file()


BAD_VALUES = [
    ("regularizer=nonsense", "regularizer/nonsense"),
    ("model.p=1.0", "model.p"),
    ("model.p=-0.1", "model.p"),
    ("model.weight_decay=-0.1", "model.weight_decay"),
    ("model.lr=-1", "model.lr"),
    ("model.lr=0", "model.lr"),
    ("data.n_samples=999", "data.n_samples"),
    ("data.n_samples=0", "data.n_samples"),
    ("data.n_samples=-10", "data.n_samples"),
    ("data.test_fraction=1.0", "data.test_fraction"),
    ("data.test_fraction=0.0", "data.test_fraction"),
    ("data.val_fraction=0.2", "data.test_fraction + data.val_fraction"),
    ("mixup.alpha=0", "mixup.alpha"),  # moved keys name themselves and their new place
    ("mixup.layers=[0,4]", "mixup.layers"),
    ("regularizer=dropout regularizer.p=1.0", "regularizer.p"),
    ("regularizer.weight_decay=-0.1", "regularizer.weight_decay"),
    ("regularizer=mixup regularizer.alpha=0", "regularizer.alpha"),
    ("regularizer=mixup regularizer.alpha=-2", "regularizer.alpha"),
    ("regularizer=mixup regularizer.layers=[2,1]", "regularizer.layers"),
    ("regularizer=hidden_mixup regularizer.layers=[0,4]", "regularizer.layers"),
    ("+regularizer.alfa=1", "regularizer.alfa"),
    ("regularizer._target_=no.such.Class", "regularizer._target_"),
    ("model.hidden_dims=[]", "model.hidden_dims"),
    ("model.hidden_dims=[32,0]", "model.hidden_dims"),
    ("trainer.max_steps=0", "trainer.max_steps"),
    ("trainer.max_steps=-5", "trainer.max_steps"),
    ("data.batch_size=0", "data.batch_size"),
    ("trainer.eval_every_n_steps=0", "trainer.eval_every_n_steps"),
    ("trainer.eval_every_n_steps=333", "trainer.eval_every_n_steps"),
    ("data.batch_size=51", "data.batch_size"),  # 2 × 51 points > the 100 training points
    ("seed=1.5", "seed"),
    ("seed=abc", "seed"),
    ("data.n_sampels=1000", "n_sampels"),
    ("+data.extra=1", "data.extra"),
    ("resume=/nonexistent/run", "resume"),
    ("regularizers=[none,nonsense]", "regularizers"),
    ("data=nonsense", "data/nonsense"),
    ("data.n_classes=1", "data.n_classes"),
    ("data=moons data.n_classes=3", "data.n_classes"),
    ("data=checkerboard data.board_size=1", "data.board_size"),
    ("data=circles data.factor=1.5", "data.factor"),
    ("data=moons data.noise=-0.1", "data.noise"),
]


@pytest.mark.parametrize(("override", "key"), BAD_VALUES, ids=[o for o, _ in BAD_VALUES])
def test_bad_value_fails_with_one_line_naming_it(tmp_path, monkeypatch, capsys, override, key):
    monkeypatch.chdir(tmp_path)  # in process: the command line checks before Hydra runs
    with pytest.raises(SystemExit) as exit_:
        cli([*override.split(), f"hydra.run.dir={tmp_path / 'run'}"])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("spiralmix: error: ") and key in lines[0]
    assert "Traceback" not in err + out
    assert list(tmp_path.iterdir()) == []  # no run folder, no outputs/: nothing at all


def test_full_error_shows_the_traceback(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "spiralmix", "model.p=1.5", f"hydra.run.dir={tmp_path}"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert "Traceback" in result.stderr and "model.p" in result.stderr


def test_a_failed_run_exits_non_zero_and_keeps_its_logs(tmp_path):
    result = run_cli("model.lr=1e30", *TINY, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 1
    assert "non-finite at step" in result.stderr and "Traceback" not in result.stderr
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["status"] == "failed"
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_an_unknown_data_set_lists_the_available_ones(tmp_path):
    result = run_cli("data=spiral", f"hydra.run.dir={tmp_path}", timeout=120)
    assert result.returncode == 2
    line = result.stderr.strip()
    for name in ("spirals", "spirals3", "moons", "circles", "checkerboard", "blobs"):
        assert name in line
    assert "\n" not in line


def test_a_k_class_run_logs_everything(tmp_path):
    result = run_cli("data=spirals3", "regularizer=mixup", *TINY, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    events = EventAccumulator(str(tmp_path), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    tags = events.Tags()
    expected = [*SCALARS, "mixup/k", "mixup/lambda", "flatten/layer3/effective_rank"]
    assert set(expected) <= set(tags["scalars"])
    for tag in IMAGES:
        assert [i.step for i in events.Images(tag)] == EVALUATIONS, tag
    # Three classes: chance is 1/3, so far from the data confidence may go down to it.
    assert all(1 / 3 - 1e-6 <= e.value <= 1 for e in events.Scalars("ood/confidence"))
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["config"]["data"]["name"] == "spirals3"
    assert metrics["config"]["data"]["n_classes"] == 3


def test_a_run_logs_what_it_prints_and_keeps_tensorboard_tidy(tmp_path):
    result = run_cli("regularizer=mixup", "seed=7", *TINY, f"hydra.run.dir={tmp_path}")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("step       0/200") and lines[-1].startswith("mixup seed 7: test")
    log = (tmp_path / "spiralmix.log").read_text().splitlines()
    assert len(log) == len(lines)
    assert all(entry.endswith(f"[INFO] {line}") for entry, line in zip(log, lines))
    assert not (tmp_path / "hparams.yaml").exists()

    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    assert not [tag for tag in events.Tags()["scalars"] if tag.startswith("hparams/")]
    content = events.PluginTagToContent("hparams")["_hparams_/experiment"]
    experiment = HParamsPluginData.FromString(content).experiment
    names = [h.display_name for h in experiment.hparam_infos]
    assert names[:4] == ["regularizer_name", "data.name", "seed", "trainer.max_steps"]
    metrics = [m.name.tag for m in experiment.metric_infos]
    assert "test/acc" in metrics and set(metrics) <= set(events.Tags()["scalars"])
