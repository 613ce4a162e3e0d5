"""Speed and memory of spiralmix against the plain-PyTorch reference loop.

One command, one machine, one torch thread per training process:

    .venv/bin/python benchmarks/run.py            # full: ~45 min on 2 cores
    .venv/bin/python benchmarks/run.py --quick    # every part, shorter: ~5 min

It measures, each training in its own subprocess:

a. steps/s of one run, ``none`` and ``mixup``: spiralmix's CLI (``python -m spiralmix``,
   rate read from its metrics.json) against benchmarks/plain_loop.py, same steps, same
   evaluation cadence, runs alternated and repeated (best of ``--repeats``);
b. the wall time of the 6 regularizers × 10 seeds grid with ``experiment=compare
   hydra/launcher=joblib``, measured end to end, against the plain loop's serial time,
   computed as Σ_regularizers 10 × N / rate from one plain run per regularizer (seed 123);
c. peak RSS of one run of each, and of the grid's process tree;
d. ensemble training throughput, ``none`` and ``mixup``, E = 1, 10, 30, 60, 120 members
   (benchmarks/ensemble.py: model-steps/s = steps/s × E, FLOPs per step and the fraction of
   a measured batched-matmul peak) beside the plain loop's steps/s, alternated;
e. each control of mixup (``label_smoothing`` … ``noisy_mixup``) at E = 1 and 30 over the
   plain loop's mixup training steps/s, measured in part e itself, alternated with them;
f. an E = 30 ``mixup`` ensemble through the command line (``seeds=[1..30]``, evaluations
   and figures included: steps/s × 30 from its metrics.json) at 20 000 and 5 000 steps,
   against the plain loop's mixup at as many steps, same evaluation cadence, alternated.

The grid's output on disk (every file of its sweep folder) is measured too. The table
"Scale" at the top of latest.md gathers the goals: one run, the grid's speed and disk, the
E = 30 ensemble through the command line.

Results: ``<out>/latest.json`` (every measurement) and ``<out>/latest.md`` (a summary table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAIN_LOOP = ROOT / "benchmarks" / "plain_loop.py"
ENSEMBLE = ROOT / "benchmarks" / "ensemble.py"
REGULARIZERS = ("none", "weight_decay", "dropout", "mixup", "input_mixup", "hidden_mixup")
SINGLE_REGULARIZERS = ("none", "mixup")
ENSEMBLE_REGULARIZERS = ("none", "mixup")
ENSEMBLE_SIZES = (1, 10, 30, 60, 120)
# e. the controls of mixup, one run and an E = 30 loop each, against the plain loop's mixup
CONTROLS = ("label_smoothing", "mixup_io", "regmixup", "local_mixup", "kernel_mixup",
            "noisy_mixup")  # fmt: skip
CONTROL_SIZES = (1, 30)
SEED = 123
FULL_STEPS = 100_000
CLI_MEMBERS = 30
CLI_STEPS = (20_000, 5_000)
TARGETS = {
    "single_speedup": 2.5,
    "grid_speedup": 40.0,
    "grid_output_mb": 200,
    "cli_speedup_20000": 15.0,
    "cli_speedup_5000": 10.0,
    "rss_ratio": 1.5,
    "ensemble_speedup_e30_mixup": 15.0,
    "control_speedup_e1": 2.5,
    "control_speedup_e30": 15.0,
    "grid_peak_rss_mb": 3000,
}
# --quick: every part, short enough for a check after a change (~5 minutes on 2 cores).
QUICK = {
    "steps": 3000,
    "grid_steps": 1000,
    "grid_seeds": 10,
    "repeats": 1,
    "ensemble_steps": 1000,
    "ensemble_sizes": "1,10,30",
    "cli_steps": "4000,1000",
}


class BenchmarkError(RuntimeError):
    pass


@dataclass
class Process:
    """What one measured subprocess cost."""

    wall_s: float  # the whole process, interpreter start-up and imports included
    peak_rss_mb: float  # peak RSS of the process itself (wait4), see `measure`
    tree_peak_rss_mb: float  # largest sampled sum of RSS over the process and its descendants
    max_process_peak_rss_mb: float  # largest peak RSS (VmHWM) of any process of the tree
    max_workers: int  # most joblib (loky) worker processes alive at once
    samples: int  # /proc samples taken


@dataclass
class TreeSampler:
    """Polls /proc every ``interval`` s for the process tree rooted at ``root``.

    Sums VmRSS over the tree (memory in use at once) and keeps each process's VmHWM (its
    own peak, kept by the kernel, so a spike between two samples is not missed as long
    as the process is still alive at the next sample). Sums can miss short spikes.
    """

    root: int
    interval: float = 0.5
    tree_peak_kb: int = 0
    hwm_kb: dict[int, int] = field(default_factory=dict)
    max_workers: int = 0
    samples: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while True:
            self.sample()
            if self._stop.wait(self.interval):
                return

    def sample(self) -> None:
        total, workers = 0, 0
        for pid in _tree(self.root):
            status = _read(f"/proc/{pid}/status")
            if status is None:
                continue  # it ended meanwhile
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            rss = int(fields.get("VmRSS", "0 kB").split()[0])
            hwm = int(fields.get("VmHWM", "0 kB").split()[0])
            total += rss
            self.hwm_kb[pid] = max(self.hwm_kb.get(pid, 0), hwm)
            if "LokyProcess" in (_read(f"/proc/{pid}/cmdline") or ""):
                workers += 1
        self.tree_peak_kb = max(self.tree_peak_kb, total)
        self.max_workers = max(self.max_workers, workers)
        self.samples += 1


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read()
    except OSError:  # gone, or not ours to read
        return None


def _tree(root: int) -> list[int]:
    """root and all its live descendants, from the parent pid in /proc/<pid>/stat."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        stat = _read(f"/proc/{name}/stat")
        if stat is None:
            continue
        # Field 2, the command name, may hold spaces and ')': the rest starts after the last ')'.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def measure(cmd: list[str], log_dir: Path, name: str) -> Process:
    """Run cmd to completion; its output goes to log_dir/name.{out,err}.

    Peak RSS of the process comes from wait4(), which returns the rusage of exactly that
    child: ru_maxrss is its own peak (or that of a descendant it reaped, if larger) and is
    exact, with no sampling gap. RUSAGE_CHILDREN of this process would instead give the
    largest of *all* children so far, useless after the first run. The tree's sum and the
    per-process peaks of a multi-process grid come from polling /proc (TreeSampler).
    """
    out, err = log_dir / f"{name}.out", log_dir / f"{name}.err"
    start = time.perf_counter()
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fo, stderr=fe)
        sampler = TreeSampler(proc.pid)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # Ctrl-C: leave no training running behind
            proc.kill()
            proc.wait()
            raise
        finally:
            sampler.stop()
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # we reaped it, not Popen
    if proc.returncode != 0:
        tail = err.read_text(errors="replace").splitlines()[-40:]
        raise BenchmarkError(
            f"{name} failed with exit status {proc.returncode}: {' '.join(cmd)}\n"
            f"--- last lines of {err} ---\n" + "\n".join(tail)
        )
    kb = 1024  # ru_maxrss and /proc are in KiB on Linux
    return Process(
        wall_s=wall,
        peak_rss_mb=usage.ru_maxrss / kb,
        tree_peak_rss_mb=sampler.tree_peak_kb / kb,
        max_process_peak_rss_mb=max(sampler.hwm_kb.values(), default=0) / kb,
        max_workers=sampler.max_workers,
        samples=sampler.samples,
    )


def load_json(path: Path, name: str) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise BenchmarkError(f"{name} exited 0 but left no readable {path}: {err}") from err


def run_spiralmix(regularizer: str, steps: int, eval_every: int, work: Path, tag: str) -> dict:
    run_dir = work / tag
    cmd = [
        sys.executable,
        "-m",
        "spiralmix",
        f"regularizer={regularizer}",
        f"seed={SEED}",
        f"trainer.max_steps={steps}",
        f"trainer.eval_every_n_steps={eval_every}",
        "trainer.progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]
    process = measure(cmd, work, tag)
    metrics = load_json(run_dir / "metrics.json", tag)
    shutil.rmtree(run_dir)  # TensorBoard figures and checkpoints add up over a long benchmark
    return {
        "steps": metrics["steps"],
        "steps_per_s": metrics["steps_per_s"],
        "fit_wall_s": metrics["wall_time_s"],
        "test_acc": metrics["final"]["test/acc"],
        "process": asdict(process),
    }


def run_plain(regularizer: str, steps: int, eval_every: int, work: Path, tag: str) -> dict:
    run_dir = work / tag
    result_file = work / f"{tag}.json"
    cmd = [
        sys.executable,
        str(PLAIN_LOOP),
        f"--regularizer={regularizer}",
        f"--seed={SEED}",
        f"--steps={steps}",
        f"--eval-every={eval_every}",
        f"--log-dir={run_dir}",
        f"--json={result_file}",
    ]
    process = measure(cmd, work, tag)
    result = load_json(result_file, tag)
    shutil.rmtree(run_dir, ignore_errors=True)
    return {
        "steps": result["steps"],
        "steps_per_s": result["steps_per_s"],
        "fit_wall_s": result["wall_time_s"],
        "test_acc": result["test_acc"],
        "process": asdict(process),
    }


def grid_seeds(n: int) -> list[int]:
    return [SEED + i for i in range(n)]


def run_grid(steps: int, eval_every: int, n_seeds: int, work: Path, out: Path) -> dict:
    sweep_dir = work / "grid"
    seeds = ",".join(map(str, grid_seeds(n_seeds)))
    cmd = [
        sys.executable,
        "-m",
        "spiralmix",
        "-m",
        "experiment=compare",
        "hydra/launcher=joblib",
        f"seeds=[{seeds}]",
        f"trainer.max_steps={steps}",
        f"trainer.eval_every_n_steps={eval_every}",
        "trainer.progress_bar=false",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    process = measure(cmd, work, "grid")
    jobs = {}
    files = sorted(sweep_dir.glob("*/regularizer=*,seed=*/metrics.json"))
    expected = len(REGULARIZERS) * n_seeds
    if len(files) != expected:
        raise BenchmarkError(
            f"the grid finished with {len(files)} of {expected} metrics.json files"
        )
    for path in files:  # the runs of a job share one fit loop: one rate per job
        metrics = load_json(path, "grid")
        jobs[path.parent.parent.name] = {
            "steps_per_s": metrics["steps_per_s"],
            "fit_wall_s": metrics["wall_time_s"],
            "runs_in_process": metrics["members_in_process"],
        }
    for name in ("report.md", "report.csv", "boundaries.png", "curves.png"):
        if (sweep_dir / name).is_file():  # the grid's own comparison, kept with the results
            out.mkdir(parents=True, exist_ok=True)
            shutil.copy(sweep_dir / name, out / f"grid_{name}")
    output = disk_usage(sweep_dir)
    shutil.rmtree(sweep_dir)
    return {"command": " ".join(cmd), "jobs": jobs, "process": asdict(process), "output": output}


def disk_usage(folder: Path) -> dict:
    """MB of the files under ``folder``: in all, and by kind (event files, checkpoints,
    boundary.pt, metrics.json, everything else)."""
    kinds: dict[str, int] = {}
    for path in folder.rglob("*"):
        if path.is_file():
            name = path.name
            kind = ("events" if name.startswith("events.out.tfevents") else
                    "checkpoints" if name.endswith(".ckpt") else
                    name if name in ("boundary.pt", "metrics.json") else "other")  # fmt: skip
            kinds[kind] = kinds.get(kind, 0) + path.stat().st_size
    return {"total_mb": sum(kinds.values()) / 1e6, "mb": {k: v / 1e6 for k, v in kinds.items()}}


def run_ensemble(regularizer: str, members: int, steps: int, work: Path, tag: str) -> dict:
    cmd = [
        sys.executable,
        str(ENSEMBLE),
        f"--regularizer={regularizer}",
        f"--members={members}",
        f"--steps={steps}",
    ]
    measure(cmd, work, tag)
    return load_json(work / f"{tag}.out", tag)


def training_rate(steps: int, short: int, wall: float, wall_short: float) -> float:
    """Steps/s of the steps between a short run and a long one; when noise makes the long
    run no slower than the short one, the long run's own rate (evaluations included)."""
    if wall <= wall_short:
        return steps / wall
    return (steps - short) / (wall - wall_short)


def plain_training_rate(regularizer: str, steps: int, work: Path, tag: str) -> tuple:
    """The plain loop's training steps/s (per-step scalars included): a run of ``steps`` and
    one of a fifth as many, each evaluating only at its first and last step, so that the
    evaluations cancel. Returns (rate, wall of the long run, wall of the short one)."""
    short = max(1, steps // 5)
    wall = run_plain(regularizer, steps, steps, work, tag)["fit_wall_s"]
    wall_short = run_plain(regularizer, short, short, work, f"{tag}_short")["fit_wall_s"]
    return training_rate(steps, short, wall, wall_short), wall, wall_short


def ensembles(args: argparse.Namespace, work: Path) -> dict:
    """d. Ensemble training throughput against the plain loop, alternated, best of repeats.

    The plain loop's rate is that of its training steps (per-step TensorBoard scalars
    included): (N − N/5) / (wall(N) − wall(N/5)) from a run of N and one of N/5 steps, both
    evaluating only at their first and last step, so the evaluations cancel. The ensembles run
    their training loop (benchmarks/ensemble.py). Ratios: model-steps/s over plain steps/s.
    """
    sizes = args.ensemble_sizes
    say(f"d. ensembles: E = {', '.join(map(str, sizes))}, {args.ensemble_steps:,} steps")
    runs: dict[str, dict] = {r: {"plain": [], "ensembles": {}} for r in ENSEMBLE_REGULARIZERS}
    for rep in range(args.repeats):
        for regularizer in ENSEMBLE_REGULARIZERS:
            steps = args.ensemble_steps
            rate, *walls = plain_training_rate(
                regularizer, steps, work, f"eplain_{regularizer}_{rep}"
            )
            runs[regularizer]["plain"].append(tuple(walls))
            say(f"  plain     {regularizer:<12} {rate:>9,.0f} steps/s (training steps)")
            for members in sizes if rep % 2 == 0 else sizes[::-1]:
                tag = f"ensemble_{regularizer}_{members}_{rep}"
                e = run_ensemble(regularizer, members, steps, work, tag)
                runs[regularizer]["ensembles"].setdefault(members, []).append(e)
                say(
                    f"  ensemble  {regularizer:<12} E={members:<4} {e['steps_per_s']:>7,.0f} "
                    f"steps/s  {e['model_steps_per_s']:>8,.0f} model-steps/s  "
                    f"{e['fraction_of_peak']:.1%} of peak"
                )
    out: dict = {}
    for regularizer, r in runs.items():
        # The fastest run of each length (the least disturbed), then their difference.
        steps, short = args.ensemble_steps, max(1, args.ensemble_steps // 5)
        wall, wall_short = min(w for w, _ in r["plain"]), min(w for _, w in r["plain"])
        plain = training_rate(steps, short, wall, wall_short)
        table = {}
        for members, measured in r["ensembles"].items():
            best = max(measured, key=lambda e: e["model_steps_per_s"])
            table[members] = {**best, "speedup": best["model_steps_per_s"] / plain}
        out[regularizer] = {
            "plain_steps_per_s": plain,
            "plain_fit_wall_s": {
                str(steps): [w for w, _ in r["plain"]],
                str(short): [w for _, w in r["plain"]],
            },  # fmt: skip
            "sizes": table,
        }
    return out


def controls(args: argparse.Namespace, work: Path) -> dict:
    """e. Each control's training throughput at E = 1 and 30 (benchmarks/ensemble.py) over
    the plain loop's mixup, measured here, at the start of every repeat, alternated with the
    controls (whose order reverses from one repeat to the next); best of the repeats."""
    say(f"e. controls: E = 1, 30, {args.ensemble_steps:,} steps, against plain mixup")
    plain, measured = [], {name: {members: [] for members in CONTROL_SIZES} for name in CONTROLS}
    for rep in range(args.repeats):
        rate, *_ = plain_training_rate("mixup", args.ensemble_steps, work, f"cplain_{rep}")
        plain.append(rate)
        say(f"  plain     mixup        {rate:>9,.0f} steps/s (training steps)")
        for name in CONTROLS if rep % 2 == 0 else CONTROLS[::-1]:
            for members in CONTROL_SIZES:
                tag = f"control_{name}_{members}_{rep}"
                e = run_ensemble(name, members, args.ensemble_steps, work, tag)
                measured[name][members].append(e)
                rate_e = e["model_steps_per_s"]
                say(f"  {name:<16} E={members:<3} {rate_e:>8,.0f} model-steps/s "
                    f"{rate_e / rate:>6.1f}× this repeat's plain mixup")  # fmt: skip
    best_plain = max(plain)
    out: dict = {"plain_mixup_steps_per_s": best_plain, "plain_mixup_repeats": plain}
    for name in CONTROLS:
        out[name] = {}
        for members, runs in measured[name].items():
            best = max(runs, key=lambda e: e["model_steps_per_s"])
            out[name][members] = {**best, "speedup": best["model_steps_per_s"] / best_plain}
    return out


def control_markdown(res: dict) -> list[str]:
    if "controls" not in res:
        return []
    t = res["targets"]
    plain = res["controls"]["plain_mixup_steps_per_s"]
    lines = [
        "",
        "## e. The controls of mixup: model-steps/s over the plain loop's mixup "
        f"({plain:,.0f} steps/s)",
        "",
        f"| control | E = 1 | / plain (≥ {t['control_speedup_e1']}×) | E = 30 "
        f"| / plain (≥ {t['control_speedup_e30']}×) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in CONTROLS:
        sizes = {int(e): r for e, r in res["controls"][name].items()}  # str keys from JSON
        one, thirty = sizes[1], sizes[30]
        lines.append(
            f"| {name} | {one['model_steps_per_s']:,.0f} | {one['speedup']:.1f}× "
            f"{mark(one['speedup'] >= t['control_speedup_e1'])} "
            f"| {thirty['model_steps_per_s']:,.0f} | {thirty['speedup']:.1f}× "
            f"{mark(thirty['speedup'] >= t['control_speedup_e30'])} |"
        )
    return lines


def run_cli_ensemble(steps: int, eval_every: int, work: Path, tag: str) -> dict:
    """f. ``python -m spiralmix regularizer=mixup seeds=[1..30]``: its metrics.json's rate
    (training with its evaluations and figures) times the members."""
    run_dir = work / tag
    seeds = ",".join(str(s) for s in range(1, CLI_MEMBERS + 1))
    cmd = [
        sys.executable, "-m", "spiralmix", "regularizer=mixup", f"seeds=[{seeds}]",
        f"trainer.max_steps={steps}", f"trainer.eval_every_n_steps={eval_every}",
        "trainer.progress_bar=false", f"hydra.run.dir={run_dir}",
    ]  # fmt: skip
    process = measure(cmd, work, tag)
    metrics = load_json(run_dir / "seed=1" / "metrics.json", tag)
    output = disk_usage(run_dir)
    shutil.rmtree(run_dir)
    return {
        "steps_per_s": metrics["steps_per_s"],
        "model_steps_per_s": metrics["steps_per_s"] * CLI_MEMBERS,
        "fit_wall_s": metrics["wall_time_s"],
        "process": asdict(process),
        "output": output,
    }


def cli_ensembles(args: argparse.Namespace, work: Path) -> dict:
    """f. The E = 30 mixup ensemble through the command line against the plain loop's
    mixup at the same steps and evaluation cadence, alternated, best of the repeats."""
    out: dict = {}
    for steps in args.cli_steps:
        say(f"f. E = {CLI_MEMBERS} mixup through the command line, {steps:,} steps")
        runs: dict[str, list[dict]] = {"spiralmix": [], "plain": []}
        for rep in range(args.repeats):
            order = ("spiralmix", "plain") if rep % 2 == 0 else ("plain", "spiralmix")
            for side in order:
                tag = f"cli_{side}_{steps}_{rep}"
                if side == "spiralmix":
                    r = run_cli_ensemble(steps, args.eval_every, work, tag)
                    say(f"  spiralmix E={CLI_MEMBERS} {r['model_steps_per_s']:>8,.0f} "
                        f"model-steps/s (fit {r['fit_wall_s']:.1f} s)")  # fmt: skip
                else:
                    r = run_plain("mixup", steps, args.eval_every, work, tag)
                    say(describe("plain", "mixup", r))
                runs[side].append(r)
        best = max(runs["spiralmix"], key=lambda r: r["model_steps_per_s"])
        plain = max(r["steps_per_s"] for r in runs["plain"])
        out[steps] = {
            "runs": runs,
            "model_steps_per_s": best["model_steps_per_s"],
            "plain_steps_per_s": plain,
            "speedup": best["model_steps_per_s"] / plain,
            "output_mb": best["output"]["total_mb"],
        }
    return out


def machine() -> dict:
    cpuinfo = _read("/proc/cpuinfo") or ""
    models = [
        line.split(":", 1)[1].strip()
        for line in cpuinfo.splitlines()
        if line.startswith("model name")
    ]
    return {
        "cpu": models[0] if models else platform.processor() or "unknown",
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "torch": version("torch"),
        "pytorch_lightning": version("pytorch-lightning"),
        "hydra_joblib_launcher": version("hydra-joblib-launcher"),
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def say(message: str) -> None:
    print(message, flush=True)


def describe(side: str, regularizer: str, r: dict) -> str:
    p = r["process"]
    return (
        f"  {side:<9} {regularizer:<12} {r['steps_per_s']:>7,.0f} steps/s  "
        f"(fit {r['fit_wall_s']:.1f} s, process {p['wall_s']:.1f} s, "
        f"peak RSS {p['peak_rss_mb']:.0f} MB, test acc {r['test_acc']:.3f})"
    )


def grid_part(args: argparse.Namespace, work: Path, single: dict) -> dict:
    """Part b: the grid end to end, and the plain loop's serial time for it, from one
    plain run per regularizer (or the best of part a's, in ``single``, at as many steps)."""
    say(f"b. grid: 6 regularizers × {args.grid_seeds} seeds, {args.grid_steps:,} steps")
    grid = run_grid(args.grid_steps, args.eval_every, args.grid_seeds, work, Path(args.out))
    p = grid["process"]
    say(
        f"  spiralmix grid: {p['wall_s']:.1f} s end to end, {p['max_workers']} jobs at once, "
        f"tree peak RSS {p['tree_peak_rss_mb']:.0f} MB"
    )
    plain_rates = {}
    reuse = bool(single)
    for regularizer in REGULARIZERS:
        if regularizer in single:
            rate = single[regularizer]["best_steps_per_s"]["plain"]
            say(f"  plain     {regularizer:<12} {rate:>7,.0f} steps/s  (from a.)")
        else:
            tag = f"rate_{regularizer}"
            r = run_plain(regularizer, args.grid_steps, args.eval_every, work, tag)
            rate = r["steps_per_s"]
            say(describe("plain", regularizer, r))
        plain_rates[regularizer] = rate
    plain_serial = sum(args.grid_seeds * args.grid_steps / r for r in plain_rates.values())
    grid.update(
        plain_steps_per_s=plain_rates,
        plain_serial_s=plain_serial,
        plain_serial_method=(
            f"computed: Σ_regularizers {args.grid_seeds} × N / (steps/s of one plain run, seed 123"
            + (", best of part a for none and mixup)" if reuse else ")")
        ),
        speedup=plain_serial / p["wall_s"],
    )
    if args.grid_steps < FULL_STEPS:
        scale = FULL_STEPS / args.grid_steps
        grid["extrapolated_to_full"] = {
            "method": (
                f"linear: × {FULL_STEPS:,} / {args.grid_steps:,}, start-up and evaluations "
                "scaled too, so both are overestimates"
            ),
            "spiralmix_grid_s": p["wall_s"] * scale,
            "plain_serial_s": plain_serial * scale,
        }
    return grid


def benchmark(args: argparse.Namespace, work: Path) -> dict:
    results: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "settings": {
            "steps": args.steps,
            "grid_steps": args.grid_steps,
            "eval_every": args.eval_every,
            "repeats": args.repeats,
            "seed": SEED,
            "grid_seeds": grid_seeds(args.grid_seeds),
            "ensemble_steps": args.ensemble_steps,
            "ensemble_sizes": list(args.ensemble_sizes),
            "cli_steps": list(args.cli_steps),
            "torch_threads": 1,
        },
        "load_average": {"start": load()},
        "targets": TARGETS,
    }

    if args.grid_only:  # part b
        results["grid"] = grid_part(args, work, {})
        results["load_average"]["end"] = load()
        return results

    if args.controls_only or args.ensembles_only:  # parts (d and) e
        if args.ensembles_only:
            results["ensembles"] = ensembles(args, work)
        results["controls"] = controls(args, work)
        results["load_average"]["end"] = load()
        return results

    # a. One run each, alternated so that a busy moment hits both sides; best of the repeats.
    say(f"a. single runs: {args.steps:,} steps, best of {args.repeats}, alternated")
    single: dict[str, dict[str, list[dict]]] = {
        r: {"spiralmix": [], "plain": []} for r in SINGLE_REGULARIZERS
    }
    runners = {"spiralmix": run_spiralmix, "plain": run_plain}
    for rep in range(args.repeats):
        for regularizer in SINGLE_REGULARIZERS:
            order = ("spiralmix", "plain") if rep % 2 == 0 else ("plain", "spiralmix")
            for side in order:
                tag = f"{side}_{regularizer}_{rep}"
                r = runners[side](regularizer, args.steps, args.eval_every, work, tag)
                single[regularizer][side].append(r)
                say(describe(side, regularizer, r))
    results["single"] = {}
    for regularizer, sides in single.items():
        best = {side: max(runs, key=lambda r: r["steps_per_s"]) for side, runs in sides.items()}
        rss = {side: max(r["process"]["peak_rss_mb"] for r in runs) for side, runs in sides.items()}
        results["single"][regularizer] = {
            "runs": sides,
            "best_steps_per_s": {side: b["steps_per_s"] for side, b in best.items()},
            "speedup": best["spiralmix"]["steps_per_s"] / best["plain"]["steps_per_s"],
            "peak_rss_mb": rss,
            "rss_ratio": rss["spiralmix"] / rss["plain"],
        }
    results["load_average"]["after_single"] = load()

    # b. The grid, end to end, against the plain loop's serial time.
    results["grid"] = grid_part(args, work, results["single"] if args.grid_steps == args.steps
                                else {})  # fmt: skip
    results["load_average"]["after_grid"] = load()

    # d. Ensembles of 1 to 120 members against the plain loop.
    results["ensembles"] = ensembles(args, work)
    results["controls"] = controls(args, work)
    results["cli"] = cli_ensembles(args, work)
    results["load_average"]["end"] = load()
    return results


def mark(ok: bool) -> str:
    return "yes" if ok else "**no**"


def markdown(res: dict) -> str:
    m, s, t = res["machine"], res["settings"], res["targets"]
    lines = [
        "# spiralmix vs the plain-PyTorch loop",
        "",
        f"- date: {res['date']}",
        f"- machine: {m['cpu']}, {m['cores']} cores ({m['usable_cores']} usable); "
        f"Python {m['python']}, torch {m['torch']}, pytorch-lightning {m['pytorch_lightning']}",
        f"- load average (1/5/15 min): start {res['load_average']['start']}, "
        f"end {res['load_average']['end']}",
        f"- one torch thread per process; evaluation (test metrics + figures) every "
        f"{s['eval_every']:,} steps, step 0 and the last step included; seed {s['seed']}",
    ]
    if "single" not in res:  # --grid-only, --ensembles-only or --controls-only
        parts = grid_markdown(res) if "grid" in res else []
        return "\n".join(lines + parts + ensemble_markdown(res) + control_markdown(res)) + "\n"
    lines += scale_markdown(res)
    lines += [
        "",
        f"## a. One run, {s['steps']:,} steps (steps/s, best of {s['repeats']} alternated runs)",
        "",
        "steps/s = steps / wall time of the training loop, evaluations and figures included "
        "(spiralmix: its metrics.json; plain: benchmarks/plain_loop.py).",
        "",
        "| regularizer | spiralmix | plain loop | spiralmix / plain | target | met |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for reg, r in res["single"].items():
        b = r["best_steps_per_s"]
        ok = r["speedup"] >= t["single_speedup"]
        lines.append(
            f"| {reg} | {b['spiralmix']:,.0f} | {b['plain']:,.0f} | {r['speedup']:.2f}× "
            f"| ≥ {t['single_speedup']}× | {mark(ok)} |"
        )
    lines += [
        "",
        "Wall times of the fastest runs (s): training loop / whole process incl. start-up:",
        "",
        "| regularizer | spiralmix | plain loop |",
        "| --- | ---: | ---: |",
    ]
    for reg, r in res["single"].items():
        cells = []
        for side in ("spiralmix", "plain"):
            best = max(r["runs"][side], key=lambda x: x["steps_per_s"])
            cells.append(f"{best['fit_wall_s']:.1f} / {best['process']['wall_s']:.1f}")
        lines.append(f"| {reg} | {cells[0]} | {cells[1]} |")
    lines += grid_markdown(res)
    lines += [
        "",
        "## c. Peak RSS of one run (MB, largest of the repeats; wait4 ru_maxrss)",
        "",
        "| regularizer | spiralmix | plain loop | spiralmix / plain | target | met |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for reg, r in res["single"].items():
        rss = r["peak_rss_mb"]
        ok = r["rss_ratio"] <= t["rss_ratio"]
        lines.append(
            f"| {reg} | {rss['spiralmix']:.0f} | {rss['plain']:.0f} | {r['rss_ratio']:.2f}× "
            f"| ≤ {t['rss_ratio']}× | {mark(ok)} |"
        )
    lines += ensemble_markdown(res) + control_markdown(res) + cli_markdown(res)
    return "\n".join(lines) + "\n"


def grid_markdown(res: dict) -> list[str]:
    """Part b: the grid's wall time, the plain loop's serial time, the jobs, the memory."""
    s, t = res["settings"], res["targets"]
    lines: list[str] = []
    g = res["grid"]
    gp = g["process"]
    ok = g["speedup"] >= t["grid_speedup"]
    lines += [
        "",
        f"## b. Grid: 6 regularizers × {len(s['grid_seeds'])} seeds, {s['grid_steps']:,} steps",
        "",
        "| | wall time (s) |",
        "| --- | ---: |",
        "| spiralmix `python -m spiralmix -m experiment=compare hydra/launcher=joblib`, "
        f"{gp['max_workers']} jobs at once (measured end to end, start-up included) "
        f"| {gp['wall_s']:,.1f} |",
        f"| plain loop, serial ({g['plain_serial_method']}) | {g['plain_serial_s']:,.1f} |",
        f"| **plain serial / spiralmix grid** (target ≥ {t['grid_speedup']}×, met: {mark(ok)}) "
        f"| **{g['speedup']:.2f}×** |",
        "",
    ]
    if "extrapolated_to_full" in g:
        x = g["extrapolated_to_full"]
        lines += [
            f"Rough extrapolation to {FULL_STEPS:,} steps ({x['method']}; not measured): "
            f"spiralmix grid {x['spiralmix_grid_s']:,.0f} s, "
            f"plain serial {x['plain_serial_s']:,.0f} s.",
            "",
        ]
    lines += ["| plain loop (seed 123) | steps/s |", "| --- | ---: |"]
    lines += [f"| {reg} | {rate:,.0f} |" for reg, rate in g["plain_steps_per_s"].items()]
    lines += ["", "| spiralmix job | runs side by side | steps/s |", "| --- | ---: | ---: |"]
    lines += [
        f"| {job} | {j['runs_in_process']} | {j['steps_per_s']:,.0f} |"
        for job, j in g["jobs"].items()
    ]
    lines += [
        "",
        f"Grid memory (polled from /proc every 0.5 s): at most {gp['max_workers']} jobs at once; "
        f"peak sum of RSS over the process tree {gp['tree_peak_rss_mb']:,.0f} MB; "
        f"largest per-process peak RSS {gp['max_process_peak_rss_mb']:,.0f} MB.",
        "",
        f"Grid output on disk: {g['output']['total_mb']:,.0f} MB ({output_kinds(g['output'])}; "
        f"target ≤ {t['grid_output_mb']} MB).",
    ]
    return lines


def output_kinds(output: dict) -> str:
    """The grid's output by kind of file, largest first: "events 138.0, checkpoints 23.4"."""
    by_size = sorted(output["mb"].items(), key=lambda kv: -kv[1])
    return ", ".join(f"{kind} {mb:,.1f}" for kind, mb in by_size)


def scale_markdown(res: dict) -> list[str]:
    """The goals in one table: ratios against the plain loop measured in this sitting."""
    s, t, g = res["settings"], res["targets"], res["grid"]
    out = g["output"]
    kinds = output_kinds(out)
    rows = [
        (f"one run, `{reg}`, {s['steps']:,} steps: steps/s over the plain loop's",
         f"{r['speedup']:.2f}×", f"≥ {t['single_speedup']}×", r["speedup"] >= t["single_speedup"])
        for reg, r in res["single"].items()
    ]  # fmt: skip
    rows += [
        (f"grid, 6 regularizers × {len(s['grid_seeds'])} seeds, {s['grid_steps']:,} steps: "
         "plain loop serial / spiralmix end to end", f"{g['speedup']:.1f}×",
         f"≥ {t['grid_speedup']:.0f}×", g["speedup"] >= t["grid_speedup"]),
        (f"the grid's output on disk ({s['grid_steps']:,} steps; MB: {kinds})",
         f"{out['total_mb']:,.0f} MB", f"≤ {t['grid_output_mb']} MB",
         out["total_mb"] <= t["grid_output_mb"]),
    ]  # fmt: skip
    for steps, c in res.get("cli", {}).items():
        target = t.get(f"cli_speedup_{steps}")
        rows.append(
            (f"E = {CLI_MEMBERS} `mixup` through the command line, {int(steps):,} steps "
             "(evaluations included): model-steps/s over the plain loop's steps/s",
             f"{c['speedup']:.1f}×", "" if target is None else f"≥ {target:.0f}×",
             None if target is None else c["speedup"] >= target)
        )  # fmt: skip
    lines = ["", "## Scale", "", "| | measured | target | met |", "| --- | ---: | ---: | --- |"]
    lines += [f"| {a} | {b} | {c} | {'' if d is None else mark(d)} |" for a, b, c, d in rows]
    return lines


def cli_markdown(res: dict) -> list[str]:
    if "cli" not in res:
        return []
    lines = [
        "",
        f"## f. E = {CLI_MEMBERS} `mixup` through the command line (best of "
        f"{res['settings']['repeats']}, alternated with the plain loop)",
        "",
        "`python -m spiralmix regularizer=mixup seeds=[1..30]`: steps/s of its metrics.json "
        "(training, evaluations and figures) × 30; plain: benchmarks/plain_loop.py's mixup at "
        "the same steps and evaluation cadence.",
        "",
        "| steps | spiralmix model-steps/s | plain steps/s | ratio | output on disk |",
        "| ---: | ---: | ---: | ---: | ---: |",
    ]
    for steps, c in res["cli"].items():
        lines.append(
            f"| {int(steps):,} | {c['model_steps_per_s']:,.0f} | {c['plain_steps_per_s']:,.0f} "
            f"| **{c['speedup']:.1f}×** | {c['output_mb']:,.1f} MB |"
        )
    return lines


def ensemble_markdown(res: dict) -> list[str]:
    if "ensembles" not in res:  # --controls-only
        return []
    s, t, ens = res["settings"], res["targets"], res["ensembles"]
    lines = [
        "",
        f"## d. Ensembles: training throughput, {s['ensemble_steps']:,} steps "
        f"(best of {s['repeats']})",
        "",
        "spiralmix: benchmarks/ensemble.py, the training loop of `seeds=[1..E]` (batches, "
        "draws, steps, per-step TensorBoard scalars; no evaluation or figures). plain: "
        "benchmarks/plain_loop.py's training steps, (N − N/5) / (wall(N) − wall(N/5)) from its "
        "fastest runs of N and N/5 steps, each evaluating at its first and last step only, so "
        "evaluations cancel (per-step TensorBoard scalars included). "
        "model-steps/s = steps/s × E; "
        "ratio = model-steps/s / plain steps/s, both one torch thread (one core). "
        "GFLOP/s: matrix-product FLOPs per step × steps/s; peak: torch.bmm of the model's "
        "32×32 layer for all E members at once, measured in the same process.",
        "",
        "| regularizer | E | steps/s | model-steps/s | / plain | MFLOP/step | GFLOP/s "
        "| peak GFLOP/s | of peak |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for reg, r in ens.items():
        lines.append(
            f"| {reg} (plain loop) | 1 | {r['plain_steps_per_s']:,.0f} "
            f"| {r['plain_steps_per_s']:,.0f} | 1.00× | | | | |"
        )
        for members, e in sorted(r["sizes"].items(), key=lambda item: int(item[0])):
            lines.append(
                f"| {reg} | {members} | {e['steps_per_s']:,.0f} | {e['model_steps_per_s']:,.0f} "
                f"| **{e['speedup']:.1f}×** | {e['flops_per_step'] / 1e6:.1f} "
                f"| {e['flops_per_s'] / 1e9:.1f} | {e['peak_flops_per_s'] / 1e9:.1f} "
                f"| {e['fraction_of_peak']:.0%} |"
            )
    e30 = ens.get("mixup", {}).get("sizes", {}).get(30)
    if e30 is not None:
        target = t["ensemble_speedup_e30_mixup"]
        lines += [
            "",
            f"mixup, E = 30: {e30['speedup']:.1f}× the plain loop in model-steps/s per core "
            f"(target ≥ {target}×, met: {mark(e30['speedup'] >= target)}).",
        ]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--steps", type=int, default=FULL_STEPS, help="steps of each single run")
    parser.add_argument("--grid-steps", type=int, default=FULL_STEPS, help="steps of the grid")
    parser.add_argument("--eval-every", type=int, default=2500, help="evaluation cadence")
    parser.add_argument("--repeats", type=int, default=2, help="runs per side (best counts)")
    parser.add_argument("--grid-seeds", type=int, default=10, help="seeds of the grid")
    parser.add_argument(
        "--ensemble-steps", type=int, default=4000, help="steps of each ensemble measurement"
    )
    parser.add_argument(
        "--ensemble-sizes",
        default=",".join(map(str, ENSEMBLE_SIZES)),
        help="ensemble sizes E, comma-separated",
    )
    parser.add_argument(
        "--cli-steps",
        default=",".join(map(str, CLI_STEPS)),
        help="steps of the E = 30 ensemble through the command line (part f), comma-separated",
    )
    parser.add_argument(
        "--ensembles-only", action="store_true", help="only parts d and e, the ensembles"
    )
    parser.add_argument("--controls-only", action="store_true", help="only part e, the controls")
    parser.add_argument("--grid-only", action="store_true", help="only part b, the grid")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="every part, shorter: "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in QUICK.items()),
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--keep", action="store_true", help="keep the subprocess logs")
    args = parser.parse_args(argv)
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    try:
        args.ensemble_sizes = [int(e) for e in str(args.ensemble_sizes).split(",")]
        args.cli_steps = [int(e) for e in str(args.cli_steps).split(",")]
    except ValueError:
        parser.error("--ensemble-sizes and --cli-steps must be comma-separated integers")
    numbers = (args.steps, args.grid_steps, args.eval_every, args.repeats, args.grid_seeds,
               args.ensemble_steps, *args.ensemble_sizes, *args.cli_steps)  # fmt: skip
    if min(numbers) < 1:
        parser.error(
            "--steps, --grid-steps, --eval-every, --repeats, --grid-seeds, --ensemble-steps, "
            "--ensemble-sizes and --cli-steps must be >= 1"
        )

    work = Path(tempfile.mkdtemp(prefix="spiralmix-bench-"))
    try:
        results = benchmark(args, work)
    except BenchmarkError as err:
        print(f"benchmark failed: {err}\n(logs kept in {work})", file=sys.stderr)
        return 1
    if args.keep:
        say(f"logs: {work}")
    else:
        shutil.rmtree(work)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "latest.json").write_text(json.dumps(results, indent=2) + "\n")
    table = markdown(results)
    (args.out / "latest.md").write_text(table)
    say("\n" + table)
    say(f"written: {args.out / 'latest.json'}, {args.out / 'latest.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
