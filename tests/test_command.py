"""The command line's checks, in process: a refused command writes nothing at all."""

from __future__ import annotations

import datetime
import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from spiralmix.__main__ import cli
from spiralmix.command import accept, quote_paths
from spiralmix.rundir import unlock
from tests.conftest import TINY, run_cli

# One worker makes the finished run and sweep (the module's fixture) once, not once per worker.
pytestmark = pytest.mark.xdist_group("finished_run")

SHORT = [*TINY, "trainer.max_steps=100", "evaluation.grid_resolution=20",
         "evaluation.diagnostic_figures=false"]  # fmt: skip


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file and folder under root, with its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes() if p.is_file() else b"<dir>"
        for p in sorted(root.rglob("*"))
    }


def refused(argv: list[str], capsys) -> str:
    """Run the command line in process; return its one error line (it must exit 2)."""
    with pytest.raises(SystemExit) as exit_:
        cli(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("spiralmix: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, Path]:
    """A finished run and a finished two-job sweep, made once by the real command line."""
    root = tmp_path_factory.mktemp("finished")
    run = run_cli(*SHORT, f"hydra.run.dir={root / 'run'}")
    assert run.returncode == 0, run.stderr
    sweep = run_cli("-m", "seed=1,2", *SHORT, f"hydra.sweep.dir={root / 'sweep'}")
    assert sweep.returncode == 0, sweep.stderr
    return root / "run", root / "sweep"


@pytest.fixture
def folders(tmp_path, finished, monkeypatch) -> Path:
    """Copies of the finished run and sweep in tmp_path, which is also the working folder."""
    shutil.copytree(finished[0], tmp_path / "run")
    shutil.copytree(finished[1], tmp_path / "sweep")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def hold_lock(folder: Path):
    """Lock a folder as a running spiralmix process does (another open file: another holder)."""
    handle = open(folder / ".lock", "a+")  # noqa: SIM115
    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return handle


REFUSALS = {
    "bad value": (["model.p=1.5"], "model.p=1.5"),
    "bad value, sweep": (["-m", "seed=1,5000000000"], "seed=5000000000"),
    "rerun, other settings": (
        [*SHORT, "trainer.max_steps=200", "hydra.run.dir=run"], "trainer.max_steps=100"),
    "resume, other settings": (["resume=run", "trainer.max_steps=200"], "trainer.max_steps=100"),
    "resume, other preset": (["resume=run", "regularizer=mixup"], "regularizer_name='none'"),
    "rerun sweep, other settings": (
        ["-m", "seed=1,2", *SHORT, "trainer.max_steps=200", "hydra.sweep.dir=sweep"],
        "holds another sweep"),
    "another sweep": (["-m", "seed=3,4", *SHORT, "hydra.sweep.dir=sweep"], "holds another sweep"),
}  # fmt: skip


@pytest.mark.parametrize("kind", REFUSALS)
def test_a_refused_command_writes_nothing(folders, capsys, kind):
    argv, named = REFUSALS[kind]
    before = snapshot(folders)
    assert named in refused(argv, capsys)
    assert snapshot(folders) == before


@pytest.mark.parametrize("kind", ["rerun", "resume", "sweep job", "sweep", "rerun of a sweep job"])
def test_a_folder_in_use_is_refused_and_left_as_it_is(folders, capsys, kind):
    folder, argv = {
        "rerun": ("run", [*SHORT, "hydra.run.dir=run"]),
        "resume": ("run", ["resume=run"]),
        "sweep job": ("sweep/seed=1", ["resume=sweep/seed=1"]),
        "sweep": ("sweep", ["-m", "seed=1,2", *SHORT, "hydra.sweep.dir=sweep"]),
        "rerun of a sweep job": (
            "sweep/seed=2",
            ["-m", "seed=1,2", *SHORT, "hydra.sweep.dir=sweep"],
        ),
    }[kind]
    handle = hold_lock(folders / folder)
    before = snapshot(folders)
    try:
        assert "in use" in refused(argv, capsys)
    finally:
        handle.close()
    assert snapshot(folders) == before


def test_a_refused_run_without_a_folder_creates_none(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert "data.n_classes=1" in refused(["data.n_classes=1"], capsys)
    assert list(tmp_path.iterdir()) == []


NEW_BAD_VALUES = [
    (["seed=4294967296"], "seed=4294967296 is invalid: must be in 0 … 4294967295"),
    (["seed=-1"], "seed=-1"),
    (["seeds=[1,4294967296]"], "4294967296 is not in 0 … 4294967295"),
    # Too few points per class: named, not blamed on the fractions.
    (["data.n_classes=1000"], "data.n_classes=1000 is invalid: gives 1 point per class"),
    (["data.n_samples=8"], "data.n_samples=8 is invalid: gives 4 points per class"),
    # Numbers as written: 1.1, not 1.1000000000000001.
    (["data.val_fraction=0.2"], "data.test_fraction + data.val_fraction=1.1 is invalid"),
    (["data.test_fraction=0.99", "data.val_fraction=0.9"], "val_fraction=1.89 is invalid"),
    (["regularizers=[none,nonsense]"], "no such preset; available: dropout, hidden_mixup"),
    (["evaluation.figure_seeds=-1"], "evaluation.figure_seeds=-1 is invalid: must be null"),
]


@pytest.mark.parametrize(("argv", "expected"), NEW_BAD_VALUES, ids=str)
def test_bad_values_name_the_real_cause(tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.chdir(tmp_path)
    line = refused(argv, capsys)
    assert expected in line
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_preset_in_regularizers_lists_the_available_ones(tmp_path, capsys):
    line = refused(["regularizers=[none,nonsense]", f"hydra.run.dir={tmp_path}/r"], capsys)
    for name in ("dropout", "hidden_mixup", "input_mixup", "mixup", "weight_decay"):
        assert name in line


def test_a_bad_override_is_refused_without_importing_torch_lightning_or_matplotlib(tmp_path):
    probe = (
        "import sys\nfrom spiralmix.__main__ import cli\ntry:\n    cli(['regularizer.p=1.5'])\n"
        "except SystemExit as e:\n    code = e.code\n"
        "print(code, [m for m in ('torch', 'pytorch_lightning', 'matplotlib') if m in sys.modules])"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=tmp_path, timeout=60)  # fmt: skip
    assert result.stdout.strip() == "2 []", result.stderr
    assert "regularizer.p=1.5" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "name",
    ["regularizers=[none,mixup],seed=1", "my runs/über", "it's", "back\\slash", "end\\", "q\\'x"],
)
def test_paths_are_given_to_hydra_exactly_as_printed(name):
    (quoted,) = quote_paths([f"resume={name}"])
    (override,) = OverridesParser.create().parse_overrides([quoted])
    assert override.value() == name
    assert quote_paths(["seed=1", "hydra.run.dir='a b'"]) == ["seed=1", "hydra.run.dir='a b'"]


def test_resume_takes_a_sweep_jobs_folder_as_printed(folders):
    job = "sweep/seed=1"
    (folders / job).rename(folders / "sweep/regularizers=[none,mixup],seed=1")
    accepted = accept(["resume=sweep/regularizers=[none,mixup],seed=1"])
    unlock(accepted.folder)
    assert accepted.folder == Path("sweep/regularizers=[none,mixup],seed=1")


def test_a_sweep_folder_with_spaces_and_accents_is_accepted(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    accepted = accept(["-m", "seed=1,2", *SHORT, "hydra.sweep.dir=my sweep/été"])
    unlock(accepted.folder)
    assert accepted.sweeping and accepted.folder == Path("my sweep/été")
    assert list(tmp_path.iterdir()) == [tmp_path / "my sweep"]  # claimed once accepted


def test_resume_with_settings_that_change_nothing_is_accepted(folders):
    accepted = accept(["resume=run", "trainer.progress_bar=true", "regularizer=none"])
    unlock(accepted.folder)
    assert accepted.folder == Path("run")


class OneSecond(datetime.datetime):
    """Every command started in the same second, as two started together are."""

    @classmethod
    def now(cls, tz=None):
        return cls(2026, 1, 1, 12, 0, 0)


def test_default_folders_name_the_data_set_and_never_collide(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("hydra.core.utils.datetime", OneSecond)  # what ${now:...} reads
    first = accept(["data=moons"])
    second = accept(["data=moons"])
    third = accept(["data=spirals", "data.n_classes=5", "data.n_samples=1000"])
    for accepted in (first, second, third):
        unlock(accepted.folder)
    assert first.folder == Path("outputs/2026-01-01/12-00-00_moons_none_seed123")
    assert second.folder == first.folder.with_name(first.folder.name + "_2")
    assert "_spirals_K5_none_seed123" in third.folder.name
    assert f"hydra.run.dir='{second.folder}'" in second.argv
    sweep = accept(["-m", "data=moons,circles", "seed=1,2", *SHORT])
    unlock(sweep.folder)
    assert sweep.folder == Path("outputs/multirun/2026-01-01/12-00-00_moons+circles")
