"""Command line: ``python -m spiralmix.report <sweep dir> [--baseline none]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from spiralmix.report.runs import ReportError
from spiralmix.report.write import write_report


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
    args = parser.parse_args(argv)
    try:
        report = write_report(
            args.sweep_dir, args.baseline or "none", strict=args.baseline is not None
        )
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
