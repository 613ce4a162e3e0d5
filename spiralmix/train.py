"""train(cfg): build data, model, callbacks, loggers and trainer from a config; fit; report."""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger

from spiralmix.callbacks import BoundaryImages, HparamsWithResults, RunProgress
from spiralmix.config import validate
from spiralmix.data import SpiralDataModule
from spiralmix.module import MixupClassifier

log = logging.getLogger(__name__)

# Lightning's own chatter (GPU availability, "max_steps reached") says nothing useful here.
for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON via a temporary file and a rename: readers see the old or the new file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def member_dirs(cfg: DictConfig, run_dir: Path) -> list[Path]:
    """Where each seed's logs and metrics go: the run directory, or one folder per seed."""
    if cfg.seeds is None:
        return [run_dir]
    return [run_dir / f"seed={seed}" for seed in cfg.seeds]


def build_module(cfg: DictConfig, seeds: list[int]) -> MixupClassifier:
    return MixupClassifier(
        seeds=seeds,
        hidden_dims=list(cfg.model.hidden_dims),
        p=cfg.model.p,
        lr=cfg.model.lr,
        weight_decay=cfg.model.weight_decay,
        mixup_enabled=cfg.mixup.enabled,
        mixup_alpha=cfg.mixup.alpha,
        mixup_layers=None if cfg.mixup.layers is None else list(cfg.mixup.layers),
        pairing=cfg.mixup.pairing,
        batch_size=cfg.data.batch_size,
        steps_per_call=cfg.trainer.steps_per_call,
        eval_every_n_steps=cfg.trainer.eval_every_n_steps,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        ece_bins=cfg.evaluation.ece_bins,
        flatten_fraction=cfg.evaluation.flatten_fraction,
        grid_resolution=cfg.evaluation.grid_resolution,
    )


def build_datamodule(cfg: DictConfig, seeds: list[int]) -> SpiralDataModule:
    return SpiralDataModule(
        seeds=seeds,
        n_samples=cfg.data.n_samples,
        noise=cfg.data.noise,
        n_cycles=cfg.data.n_cycles,
        test_fraction=cfg.data.test_fraction,
        val_fraction=cfg.data.val_fraction,
        batch_size=cfg.data.batch_size,
        pairing=cfg.mixup.pairing,
        steps_per_call=cfg.trainer.steps_per_call,
    )


def summarize(history: list[dict], member: int) -> dict:
    """Final and best test metrics of one member from the evaluation history."""
    final = {k: v[member] for k, v in history[-1].items() if k != "step"}
    accs = [h["test/acc"][member] for h in history]
    losses = [h["test/loss"][member] for h in history]
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


def train(cfg: DictConfig, run_dir: Path | str) -> list[dict]:
    """Train the configured regularizer for each seed; return one metrics dict per seed.

    Writes into ``run_dir`` (one sub-folder per seed when ``cfg.seeds`` is set): TensorBoard
    events, checkpoints and ``metrics.json``.
    """
    validate(cfg)
    run_dir = Path(run_dir)
    torch.set_num_threads(cfg.trainer.torch_threads)
    seeds = list(cfg.seeds) if cfg.seeds is not None else [cfg.seed]
    pl.seed_everything(seeds[0], verbose=False)  # nothing should use the global RNG; be safe
    dirs = member_dirs(cfg, run_dir)

    datamodule = build_datamodule(cfg, seeds)
    module = build_module(cfg, seeds)
    loggers = [
        # A deep queue lets a chunk's per-step events go out without waiting on the writer thread.
        TensorBoardLogger(
            save_dir=d, name="", version="", default_hp_metric=False, max_queue=10_000
        )
        for d in dirs
    ]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for logger, seed in zip(loggers, seeds):
        member_cfg = yaml_of({**resolved, "seed": seed, "seeds": None})
        logger.experiment.add_text("config", f"```yaml\n{member_cfg}\n```", 0)
    checkpoints = ModelCheckpoint(
        dirpath=run_dir / "checkpoints",
        filename="step={step}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.trainer.checkpoint_every_n_steps,
        save_top_k=-1,
        save_last=True,
    )
    progress = cfg.trainer.progress_bar
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=cfg.trainer.max_steps,
        max_epochs=-1,
        logger=loggers,
        callbacks=[
            BoundaryImages(cfg.regularizer_name, cfg.evaluation.diagnostic_figures),
            HparamsWithResults(
                [flatten_config({**resolved, "seed": seed, "seeds": None}) for seed in seeds]
            ),
            RunProgress(interactive=progress),
            checkpoints,
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        log_every_n_steps=cfg.trainer.steps_per_call,
        default_root_dir=run_dir,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    wall = time.perf_counter() - start

    results = []
    for e, (seed, d, logger) in enumerate(zip(seeds, dirs, loggers)):
        summary = summarize(module.history, e)
        result = {
            "status": "completed",
            "regularizer": cfg.regularizer_name,
            "seed": seed,
            "steps": trainer.global_step,
            "wall_time_s": wall,
            "steps_per_s": trainer.global_step / wall,
            "members_in_process": len(seeds),
            **summary,
            "history": [
                {"step": h["step"], **{k: v[e] for k, v in h.items() if k != "step"}}
                for h in module.history
            ],
        }
        hparams = flatten_config({**resolved, "seed": seed, "seeds": None})
        logger.log_hyperparams(
            hparams,
            {f"hparams/{k}": v for k, v in summary["final"].items() if k.startswith("test/")},
        )
        logger.finalize("success")
        save_boundary(d / "boundary.pt", module.last_eval, datamodule, e)
        write_json_atomic(d / "metrics.json", result)
        results.append(result)
        final = summary["final"]
        rate = trainer.global_step / wall
        print(
            f"{cfg.regularizer_name} seed {seed}: test acc {final['test/acc']:.3f}  "
            f"test loss {final['test/loss']:.3f}  ECE {final['test/ece']:.3f}  "
            f"{trainer.global_step:,} steps in {wall:.0f} s ({rate:,.0f} steps/s)  → {d}",
            flush=True,
        )
    return results


def save_boundary(path: Path, last_eval: dict, datamodule: SpiralDataModule, e: int) -> None:
    """The final probability grid and the data of member e, for reports (tensors only)."""
    data = {
        "step": torch.tensor(last_eval["step"]),
        "grid": last_eval["grid"][e],
        "grid_p": last_eval["grid_p"][e],
        "test_p": last_eval["test_p"][e],
        "spectra": [sv[e] for sv in last_eval["spectra"]],  # per layer: (2 classes, width)
        **{
            f"{split}_{t}": getattr(datamodule, f"{split}_{t}")[e]
            for split in ("train", "val", "test")
            for t in ("X", "y")
        },
    }
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, path)


def yaml_of(container: dict) -> str:
    return OmegaConf.to_yaml(OmegaConf.create(container))


def flatten_config(container: dict, prefix: str = "") -> dict:
    """{'a': {'b': 1}} → {'a.b': 1}; lists become strings (TensorBoard hparams are scalars)."""
    flat = {}
    for key, value in container.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten_config(value, f"{name}."))
        elif isinstance(value, (list, tuple)) or value is None:
            flat[name] = str(value)
        else:
            flat[name] = value
    return flat
