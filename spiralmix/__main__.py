"""Command line: Hydra's entry point around :func:`spiralmix.train.train`.

python -m spiralmix                                   # no regularization, seed 123
python -m spiralmix regularizer=mixup trainer.max_steps=20000
python -m spiralmix -m regularizer=none,mixup seed=123,124
tensorboard --logdir outputs
"""

from __future__ import annotations

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from spiralmix.config import ConfigError, register

register()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from spiralmix.train import train  # heavy imports after Hydra has parsed the command line

    hydra_cfg = HydraConfig.get()
    try:
        results = train(cfg, hydra_cfg.runtime.output_dir)
    except ConfigError as err:
        print(f"spiralmix: error: {err}", file=sys.stderr)
        sys.exit(2)
    failed = [r for r in results if r["status"] != "completed"]
    if failed and hydra_cfg.mode == RunMode.RUN:  # in a sweep the other jobs go on
        for r in failed:
            print(f"spiralmix: error: seed {r['seed']}: {r['error']}", file=sys.stderr)
        sys.exit(1)
    # A sweeper that optimises (Optuna) minimises this value.
    return sum(r["final"].get("val/loss", r["final"]["test/loss"]) for r in results) / len(results)


if __name__ == "__main__":
    main()
