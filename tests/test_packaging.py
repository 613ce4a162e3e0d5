"""The package as users install it: a wheel built from the sdist, in a fresh environment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import spiralmix

ROOT = Path(__file__).resolve().parents[1]
# The CPU build of torch that this machine holds; pyproject itself asks for torch>=2.2.
TORCH = os.environ.get("SPIRALMIX_TEST_TORCH", "torch==2.13.0")
DEBUG = ["trainer=debug", "trainer.progress_bar=false", "evaluation.grid_resolution=20"]


def pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_is_in_the_wheel_list():
    packages = (ROOT / "spiralmix").rglob("__init__.py")
    on_disk = {".".join(p.parent.relative_to(ROOT).parts) for p in packages}
    setuptools = pyproject()["tool"]["setuptools"]
    listed = set(setuptools["packages"])
    assert on_disk <= listed, f"add {sorted(on_disk - listed)} to [tool.setuptools] packages"
    assert "spiralmix.conf" in listed
    assert setuptools["package-dir"] == {"spiralmix.conf": "conf"}


def test_version_has_one_source():
    project = pyproject()
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]["version"]
    assert dynamic == {"attr": "spiralmix.__version__"} and spiralmix.__version__.count(".") == 2


def build(hook: str, source: Path, out: Path) -> Path:
    """Run setuptools' PEP 517 hook (build_sdist or build_wheel) in source; the file made."""
    code = f"from setuptools import build_meta; print(build_meta.{hook}({str(out)!r}))"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return out / result.stdout.strip().splitlines()[-1]


def run(args: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """A command as a user runs it: no PYTHONPATH, so only the installed package is seen."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env["PYTHONWARNINGS"] = "ignore"
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, env=env, timeout=timeout)
    assert result.returncode == 0, f"{args}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_the_wheel_from_the_sdist_installs_and_runs_anywhere(tmp_path):
    sdist = build("build_sdist", ROOT, tmp_path)
    with tarfile.open(sdist) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path / "src", filter="data")
    assert any(n.endswith("/conf/regularizer/mixup.yaml") for n in names)
    assert any(n.endswith("/LICENSE") for n in names)
    wheel = build("build_wheel", next((tmp_path / "src").iterdir()), tmp_path)
    with zipfile.ZipFile(wheel) as whl:
        wheel_names = whl.namelist()
    assert "spiralmix/conf/config.yaml" in wheel_names
    assert "spiralmix/conf/hydra/launcher/slurm.yaml" in wheel_names
    entry_points = next(n for n in wheel_names if n.endswith("entry_points.txt"))
    with zipfile.ZipFile(wheel) as whl:
        scripts = whl.read(entry_points).decode()
    assert "spiralmix-report = spiralmix.report.__main__:main" in scripts
    assert "spiralmix-render = spiralmix.maps:main" in scripts

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=120)
    bin_dir = venv / "bin"
    run([bin_dir / "pip", "install", "--quiet", TORCH, wheel], tmp_path, timeout=600)
    work = tmp_path / "elsewhere"
    work.mkdir()

    run([bin_dir / "spiralmix", *DEBUG], work)
    run([bin_dir / "python", "-m", "spiralmix", *DEBUG, "regularizer=mixup"], work)
    runs = sorted(work.glob("outputs/*/*/metrics.json"))
    assert [json.loads(p.read_text())["regularizer"] for p in runs] == ["none", "mixup"]
    assert all((p.parent / "spiralmix.log").stat().st_size > 0 for p in runs)

    run([bin_dir / "spiralmix", "-m", "seed=1,2", *DEBUG, "hydra.sweep.dir=sweep"], work)
    # Job folders name what varies; trainer=debug and the others are shared by both jobs.
    assert {p.parent.name for p in (work / "sweep").rglob("metrics.json")} == {"seed=1", "seed=2"}
    report = run([bin_dir / "spiralmix-report", "sweep"], work)
    assert "wrote report.md" in report.stdout and (work / "sweep" / "report.md").is_file()
    run([bin_dir / "spiralmix-render", "sweep", "--step", "first", "--out", "maps"], work)
    assert sorted(p.parent.name for p in (work / "maps").rglob("*.png")) == ["seed=1", "seed=2"]

    help_text = run([bin_dir / "spiralmix", "--help"], work).stdout
    assert "spiralmix regularizer=mixup" in help_text and "regularizer: dropout" in help_text
    completion = run([bin_dir / "spiralmix", "-sc", "install=bash"], work).stdout
    assert completion.strip().endswith("-F hydra_bash_completion spiralmix")
    env_line = {"COMP_LINE": "spiralmix regularizer=hidden", "COMP_POINT": "28"}
    query = subprocess.run(
        [bin_dir / "spiralmix", "-sc", "query=bash"], cwd=work, capture_output=True,
        text=True, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | env_line,
        timeout=120,
    )  # fmt: skip
    assert "regularizer=hidden_mixup" in query.stdout.split()
