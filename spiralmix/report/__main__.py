"""Command line: ``python -m spiralmix.report <sweep dir> [--baseline none] [--rope ...]``."""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from spiralmix.report.across import DEFAULT_ROPE
from spiralmix.report.runs import ReportError
from spiralmix.report.write import write_report


def parse_rope(text: str) -> tuple[str, float]:
    """'0.02' (test accuracy) or 'test_loss=0.05' → (metric, width)."""
    metric, _, value = text.rpartition("=")
    metric = metric or "test_acc"
    try:
        width = float(value)
    except ValueError:
        width = math.nan
    if metric not in DEFAULT_ROPE or not width >= 0:
        raise argparse.ArgumentTypeError(
            f"--rope={text} is invalid: give WIDTH (test accuracy) or METRIC=WIDTH, WIDTH ≥ 0, "
            f"METRIC one of {', '.join(DEFAULT_ROPE)}"
        )
    return metric, width


def main(argv: Sequence[str] | None = None) -> int:
    """Write the report of a sweep directory; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="spiralmix.report",
        description="Write the multi-seed comparison report of a spiralmix sweep directory "
        "(report.md, report.html, CSV tables, figures).",
    )
    parser.add_argument("sweep_dir", type=Path, help="a Hydra multirun directory")
    parser.add_argument(
        "--baseline",
        default=None,
        help="the regularizer every other one is compared with, seed by seed (default: none)",
    )
    defaults = ", ".join(f"{k}={v:g}" for k, v in DEFAULT_ROPE.items())
    parser.add_argument(
        "--rope",
        type=parse_rope,
        action="append",
        default=[],
        metavar="[METRIC=]WIDTH",
        help="region of practical equivalence of the verdict across data sets, in the "
        f"metric's units; repeatable; a bare WIDTH is test accuracy's (default: {defaults})",
    )
    args = parser.parse_args(argv)
    try:
        report = write_report(
            args.sweep_dir, args.baseline or "none", strict=args.baseline is not None,
            ropes=dict(args.rope),
        )  # fmt: skip
    except ReportError as err:
        print(f"spiralmix.report: error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a read-only sweep directory
        print(f"spiralmix.report: error: cannot write the report: {err}", file=sys.stderr)
        return 1
    print(report.summary)
    print("wrote " + ", ".join(p.name for p in report.files) + f" in {report.sweep_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
