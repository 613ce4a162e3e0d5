"""train(cfg): build data, module, loggers, the evaluation pipeline and its consumers and the
Trainer from a config, wire them, fit, and hand what training produced to results.py."""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.plugins import TorchCheckpointIO

from spiralmix import regularizers
from spiralmix.atomic import write_torch_atomic
from spiralmix.callbacks import BoundaryImages, EvaluationScalars, HparamsWithResults, RunProgress
from spiralmix.config import dataset_label, flatten
from spiralmix.data import SpiralDataModule
from spiralmix.evaluation import Evaluations, EvaluationSettings
from spiralmix.events import EnsembleLogger, RunLogger
from spiralmix.hparams import LEADING, Hparams
from spiralmix.maps import ProbabilityMaps
from spiralmix.module import MixupClassifier
from spiralmix.plan import RunPlan, plan_run
from spiralmix.results import RunResults
from spiralmix.rundir import lock, unlock
from spiralmix.stopping import StopOnSignal

# Lightning's own chatter (GPU availability, "max_steps reached") says nothing useful here.
for _name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric"):
    logging.getLogger(_name).setLevel(logging.WARNING)
# Result lines; under the command line, Hydra's job logging shows them on stdout as they are
# and keeps them, with times, in the run's spiralmix.log (conf/config.yaml).
log = logging.getLogger("spiralmix")


def build_module(members: list[DictConfig]) -> MixupClassifier:
    """The LightningModule for these members: shared settings from the first, each
    member's own regularizer (:func:`spiralmix.regularizers.build`)."""
    cfg = members[0]
    return MixupClassifier(
        regularizers=[regularizers.build(m) for m in members],
        seeds=[m.seed for m in members],
        hidden_dims=list(cfg.model.hidden_dims),
        lr=cfg.model.lr,
        pairing=cfg.mixup.pairing,
        batch_size=cfg.data.batch_size,
        steps_per_call=cfg.trainer.steps_per_call,
        log_every_n_steps=cfg.trainer.log_every_n_steps,
        n_classes=cfg.data.n_classes,
    )


def evaluation_settings(cfg: DictConfig) -> EvaluationSettings:
    """What an evaluation measures: ``evaluation.*`` (each key a field of
    :class:`EvaluationSettings`, the figures' switches aside) and the data set's classes and
    extent."""
    figures = ("diagnostic_figures", "figure_seeds")
    keys = {k: v for k, v in cfg.evaluation.items() if k not in figures}
    return EvaluationSettings(
        **keys,
        n_classes=cfg.data.n_classes,
        ood_center=tuple(cfg.data.center),
        ood_radius=cfg.data.radius,
    )


def build_datamodule(members: list[DictConfig]) -> SpiralDataModule:
    cfg = members[0]
    return SpiralDataModule(
        seeds=[m.seed for m in members],
        n_samples=cfg.data.n_samples,
        noise=cfg.data.noise,
        dataset=cfg.data._target_,
        # datasets.generate passes on the keys its generator takes (n_cycles, factor, ...).
        options=dict(cfg.data),
        n_classes=cfg.data.n_classes,
        test_fraction=cfg.data.test_fraction,
        val_fraction=cfg.data.val_fraction,
        batch_size=cfg.data.batch_size,
        pairing=cfg.mixup.pairing,
        steps_per_call=cfg.trainer.steps_per_call,
    )


def train(cfg: DictConfig, run_dir: Path | str, overrides: list[str] = ()) -> list[dict]:
    """Train every member of the run that ``cfg`` describes; return their metrics.

    Writes into ``run_dir`` (one sub-folder per member when ``cfg.seeds`` or
    ``cfg.regularizers`` is set): TensorBoard events, checkpoints, ``metrics.json`` and
    ``boundary.pt``. With ``cfg.resume`` set, the run in that directory continues from its
    last checkpoint with its own saved config. See :func:`spiralmix.plan.plan_run`.
    """
    return fit(plan_run(cfg, run_dir, overrides), overrides)


def fit(plan: RunPlan, overrides: Sequence[str] = ()) -> list[dict]:
    """Train the planned members side by side and write each one's results.

    ``overrides`` (the command line's) decide which config keys TensorBoard's HPARAMS tab
    shows first, after the regularizer, the data set and the seed.

    Members that ended before (``plan.finished``) are not trained again. Raises
    :class:`spiralmix.rundir.RunDirError` when another process writes into the run folder.
    """
    for note in plan.notes:
        logging.getLogger("spiralmix.errors").error(f"spiralmix: error: {note}")
    if plan.finished is not None:
        for r, member_dir in zip(plan.finished, plan.dirs):
            ended = f"ended before ({r['status']}), not trained again"
            log.info(f"{r['regularizer']} seed {r['seed']}: {ended}  → {member_dir}")
        return plan.finished
    lock(plan.run_dir)
    thread_hook, threading.excepthook = threading.excepthook, _quiet_write_errors
    try:
        return _fit_locked(plan, overrides)
    finally:
        threading.excepthook = thread_hook
        unlock(plan.run_dir)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints through :func:`spiralmix.atomic.write_atomic`: a full disk or
    a kill while ``last.ckpt`` is rewritten leaves the previous one intact (Lightning's own
    writer copies a temporary file over it, which a full disk truncates)."""

    def save_checkpoint(self, checkpoint: dict, path: str | Path, storage_options=None) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        write_torch_atomic(Path(path), checkpoint)


class RunConfigsInCheckpoints(pl.Callback):
    """Saves the members' configs in each checkpoint: a run continued in its folder must
    have the settings it was started with."""

    def __init__(self, configs: list[dict]) -> None:
        self.configs = configs

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["run_configs"] = self.configs


class WriteFailures(pl.Callback):
    """Records a failed write (a full disk) in each member's metrics.json as soon as it
    happens, before the loggers flush their buffers into whatever space is left.

    ``record(error, step)`` writes the records and returns them."""

    def __init__(self, record: Callable[[OSError, int], list[dict]]) -> None:
        self.record, self.results = record, None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if isinstance(exception, OSError):
            self.results = self.record(exception, trainer.global_step)


def _quiet_write_errors(args: threading.ExceptHookArgs) -> None:
    """TensorBoard's writer thread dies on a full disk with a traceback; the same error
    reaches the training loop at the next write and ends the run with one line."""
    if not isinstance(args.exc_value, OSError):
        threading.__excepthook__(args)


def _fit_locked(plan: RunPlan, overrides: Sequence[str]) -> list[dict]:
    members, cfg = plan.members, plan.members[0]
    torch.set_num_threads(cfg.trainer.torch_threads)
    pl.seed_everything(cfg.seed, verbose=False)  # nothing should use the global RNG; be safe
    # On resume, TensorBoard drops the events that the interrupted process wrote after the
    # checkpoint (those of steps > the checkpoint's step), so each step is logged once.
    purge_step = resume_from = None
    if plan.checkpoint is not None:
        purge_step, resume_from = plan.checkpoint.step + 1, plan.checkpoint.path

    datamodule = build_datamodule(members)
    module = build_module(members)
    loggers = [
        RunLogger(save_dir=d, name="", version="", default_hp_metric=False, purge_step=purge_step)
        for d in plan.dirs
    ]
    member_configs = [OmegaConf.to_container(m, resolve=True) for m in members]
    if plan.checkpoint is None:
        for logger, member_cfg in zip(loggers, member_configs):
            text = f"```yaml\n{OmegaConf.to_yaml(OmegaConf.create(member_cfg))}\n```"
            logger.experiment.add_text("config", text, 0)
    checkpoints = ModelCheckpoint(
        dirpath=plan.run_dir / "checkpoints",
        filename="step={step}",
        auto_insert_metric_name=False,
        every_n_train_steps=cfg.trainer.checkpoint_every_n_steps,
        save_top_k=-1,
        save_last=True,
    )
    hparams = HparamsWithResults(
        loggers, [tensorboard_hparams(c, first=overridden_keys(overrides)) for c in member_configs]
    )
    progress = RunProgress(cfg.trainer.max_steps, interactive=cfg.trainer.progress_bar)
    figures = BoundaryImages(
        loggers,
        # titles: moons · mixup · seed 1 · step 2,500
        [f"{dataset_label(m.data.name, m.data.n_classes)} · {m.regularizer_name}" for m in members],
        [m.seed for m in members],
        datamodule,
        cfg.model.hidden_dims,
        cfg.evaluation.diagnostic_figures,
        cfg.data.n_classes,
        figures=drawing_figures([m.seed for m in members], cfg.evaluation.figure_seeds),
    )
    evaluations = Evaluations(
        module.net,
        datamodule,
        evaluation_settings(cfg),
        cfg.trainer.eval_every_n_steps,
        consumers=[
            EvaluationScalars(loggers),
            figures,
            ProbabilityMaps(loggers),
            hparams,
            progress,
        ],
    )
    results = RunResults(members, member_configs, plan.dirs, plan.run_dir)
    failures = WriteFailures(
        lambda err, step: results.failed(
            err, evaluations.history, step, checkpoints.last_model_path
        )
    )
    trainer = pl.Trainer(
        accelerator=lightning_accelerator(cfg.trainer.accelerator),
        devices=1,
        max_steps=cfg.trainer.max_steps,
        max_epochs=-1,
        logger=EnsembleLogger(loggers, plan.run_dir),
        callbacks=[
            evaluations,  # first: the step's evaluation comes before any other callback's hook
            hparams,
            progress,
            checkpoints,
            RunConfigsInCheckpoints(member_configs),
            failures,
            StopOnSignal(),
        ],
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        # Lightning counts training_step calls (chunks of steps): self.log lands once a call.
        log_every_n_steps=1,
        default_root_dir=plan.run_dir,
    )
    with warnings.catch_warnings():
        # The checkpoint after a chunk holds the state after its last step, as intended.
        warnings.filterwarnings("ignore", message=".*no pre-optimization state was saved.*")
        # A resumed run continues in its own checkpoint folder, as intended.
        warnings.filterwarnings("ignore", message=".*Checkpoint directory .* is not empty.*")
        try:
            trainer.fit(module, datamodule=datamodule, ckpt_path=resume_from, weights_only=True)
        except OSError as err:  # a full disk, a vanished folder: the run ends as failed
            return failures.results or failures.record(err, trainer.global_step)
    # Killed after its last checkpoint, before the end: measure again for boundary.pt (the
    # same numbers), without logging them twice.
    latest = evaluations.latest or evaluations.measure(trainer.global_step)
    try:
        return results.completed(
            evaluations.history,
            latest,
            datamodule,
            module.failures,
            trainer.global_step,
            module.elapsed_s,
        )
    except OSError as err:
        return failures.record(err, trainer.global_step)


def drawing_figures(seeds: Sequence[int], figure_seeds: int | None) -> list[bool]:
    """Which members draw their figures at every evaluation: all of a run alone (or with
    ``figure_seeds`` null), else those whose seed is among the first ``figure_seeds``
    distinct seeds, in the order the run lists them (every regularizer's, side by side)."""
    if len(seeds) == 1 or figure_seeds is None:
        return [True] * len(seeds)
    shown = set(list(dict.fromkeys(seeds))[:figure_seeds])
    return [seed in shown for seed in seeds]


def lightning_accelerator(name: str) -> str:
    """Lightning's accelerator for ``trainer.accelerator``: gpu is CUDA, and auto is CUDA
    where there is a device and the CPU otherwise (never Apple's MPS, which is untested)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return "cuda" if name == "gpu" else name


def tensorboard_hparams(container: dict, first: Sequence[str] = ()) -> Hparams:
    """A config as dotted keys with scalar values (TensorBoard hparams take no lists):
    the regularizer, the data set and the seed first, then the keys in ``first`` (those
    the command line set, e.g. a sweep's), then the rest in config order."""
    flat = flatten(container)
    order = dict.fromkeys([*LEADING, *first, *flat])
    values = {
        key: str(value) if isinstance(value, (list, tuple)) or value is None else value
        for key, value in ((k, flat[k]) for k in order if k in flat)
    }
    return Hparams(values, first)


def overridden_keys(overrides: Sequence[str]) -> list[str]:
    """The config keys that command-line overrides set (``seed=1`` → ``seed``); a group
    override names its key (``regularizer=mixup`` → ``regularizer_name``)."""
    renamed = {"regularizer": "regularizer_name", "regularizers": "regularizer_name",
               "seeds": "seed", "data": "data.name"}  # fmt: skip
    keys = [o.split("=", 1)[0].lstrip("+~") for o in overrides if "=" in o]
    return [renamed.get(k, k) for k in keys if not k.startswith(("hydra.", "hydra/"))]
