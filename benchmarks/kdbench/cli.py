"""The ``kdbench`` command line: ``run`` a suite, ``report`` on it, list ``methods`` and ``suites``, ``bench`` speed.

Errors caused by input (unknown suite or method, malformed suite file, missing data) print one line
and exit with status 2; nothing is written.
"""

from __future__ import annotations

import argparse
import os
import sys

# Before anything loads torch and its OpenMP, unless the user chose: waiting threads spin briefly,
# then sleep. Close to the fastest setting on an idle machine and on a loaded one
# (docs/speed.md, "OpenMP wait setting"); the bits do not depend on it.
if "OMP_WAIT_POLICY" not in os.environ and "GOMP_SPINCOUNT" not in os.environ:
    os.environ["GOMP_SPINCOUNT"] = "1000"

from kdbench.api.errors import GroupsCrashed, KDBenchError
from kdbench.api.registry import get_method, method_names
from kdbench.bench import BENCHES
from kdbench.config.executor import OPTIONS as EXECUTOR_OPTIONS
from kdbench.config.executor import executor_config
from kdbench.config.suite import load_suite, suite_names
from kdbench.execute.driver import run_suite
from kdbench.report import build_reports
from kdbench.report.compare import MARGIN, compare
from kdbench.report.verdicts import EFFECT
from kdbench.run.request import RunRequest


def _cmd_run(args: argparse.Namespace) -> int:
    suite = load_suite(args.suite)
    flags = {o.name: getattr(args, o.name) for o in EXECUTOR_OPTIONS if o.cli_flag}
    request = RunRequest(
        suite, methods=args.methods, seeds=args.seeds, device=args.device, data_dir=args.data_dir,
        download=args.download, results_dir=args.results_dir,
        executor=executor_config(args.executor, flags, suite.executor, "--executor"),
        progress=False if args.no_progress else None, quiet=args.quiet, lockstep=not args.no_lockstep, max_group=args.max_group,
    )
    records = run_suite(request)
    bad = [r for r in records if r["status"] != "ok"]
    print(f"{len(records)} runs in {args.results_dir}/{suite.name}/runs: "
          f"{len(records) - len(bad)} ok, {len(bad)} not ok")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    for path in build_reports(args.suites, args.results_dir, args.report_dir, args.effect):
        print(path)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    text, status = compare(args.a, args.b, args.margin, args.suite, args.curves_within)
    print(text, end="")
    return status


def _cmd_methods(args: argparse.Namespace) -> int:
    for name in method_names():
        cls = get_method(name)
        flag = " (reconstructed)" if cls.reconstructed else ""
        defaults = ", ".join(
            f"{k}={v}" + (f" ({cls.domains[k]})" if k in cls.domains else "") for k, v in cls.defaults.items()
        ) or "no hyperparameters"
        student, teacher = (", ".join(sorted(t)) or "none" for t in cls.taps_needed(dict(cls.defaults)))
        space = "; ".join(f"{k}: {v}" for k, v in cls.search_space.items()) or "none (runs at its settings)"
        print(f"{name}{flag}\n  paper: {cls.paper}\n  defaults: {defaults}\n  search space: {space}\n"
              f"  student taps: {student}\n  teacher taps: {teacher}")
    return 0


def _cmd_suites(args: argparse.Namespace) -> int:
    for name in suite_names():
        s = load_suite(name)
        print(f"{name}: {s.dataset}, {s.teacher.model} -> {s.student_model}, {s.train.epochs} epochs, "
              f"{len(s.methods)} methods x {len(s.seeds)} seeds")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line like every other error (argparse prints the usage
    first); ``--help`` still shows it all."""

    def error(self, message: str):
        self.exit(2, f"kdbench: error: {message} (see `{self.prog} --help`)\n")


def _add_compare(sub) -> None:
    comp = sub.add_parser("compare", help="is B a reproduction of A? per method B − A within ±MARGIN (exit 0) "
                          "or not (exit 1); configuration differences named")
    comp.add_argument("a", metavar="A", help="a results folder (holding SUITE/runs/), a suite's folder in one "
                      "(holding runs/), a runs folder (holding *.json) or a report folder (holding runs.csv)")
    comp.add_argument("b", metavar="B", help="the same, for the other side")
    comp.add_argument("--margin", type=float, default=MARGIN,
                      help=f"points: the largest difference that counts as the same (default: {MARGIN:g})")
    comp.add_argument("--suite", help="which suite, where A or B holds several")
    comp.add_argument("--curves-within", type=float, metavar="LOSS",
                      help="also exit 1 when a per-epoch loss of the same method and seed differs by more than "
                      "LOSS (0: the same bits), e.g. after rewriting a plugin; needs records on both sides")
    comp.set_defaults(func=_cmd_compare)


def _add_run(sub) -> None:
    run = sub.add_parser("run", help="run a suite's matrix of (method, seed) cells")
    run.add_argument("suite", help="suite name (see `kdbench suites`) or path to a suite YAML file")
    run.add_argument("--methods", nargs="+", help="only these method labels or names")
    run.add_argument("--seeds", nargs="+", type=int, help="these seeds instead of the suite's")
    run.add_argument("--device", default="auto", help="auto (default: cuda if present), cpu, cuda[:N]")
    run.add_argument("--data-dir", help="folder holding the dataset files")
    run.add_argument("--download", action="store_true", help="download the dataset if missing (needs internet)")
    run.add_argument("--results-dir", default="results", help="where run records go (default: results)")
    run.add_argument("--no-progress", action="store_true",
                     help="no progress bars (a line per group and epoch still says how far it is)")
    run.add_argument("--quiet", action="store_true",
                     help="no progress at all: no bars and no epoch lines, only each cell's line and the summary")
    run.add_argument("--no-lockstep", action="store_true",
                     help="train cells one at a time (each with its own teacher pass) instead of a seed's "
                          "cells together; same records, for comparison and debugging")
    run.add_argument("--max-group", type=int, metavar="N",
                     help="at most N cells train in one lockstep group (memory on large pairs; default: a seed's all)")
    ex = run.add_argument_group("executors", "where the groups run (default: here); see docs/cluster.md. "
                                "A suite's executor: section sets these too")
    ex.add_argument("--executor", metavar="KIND", help="local (default), processes[:N], slurm, slurm-local, ray")
    for o in EXECUTOR_OPTIONS:
        if o.cli_flag:
            ex.add_argument(o.cli_flag, dest=o.name, type=o.type, help=o.help)
    run.set_defaults(func=_cmd_run)


def _add_bench(sub) -> None:
    """``kdbench bench NAME``, one subcommand per measurement in ``kdbench.bench.BENCHES``."""
    bench = sub.add_parser("bench", help="measure the harness's speed and methods' costs (`kdbench bench --help`)",
                           description="Measurements of the harness's speed and of methods' costs; "
                                       "`kdbench bench NAME --help` shows one's options.")
    names = bench.add_subparsers(dest="bench", required=True, metavar="NAME", title="measurements")
    for name, module in BENCHES.items():
        one = names.add_parser(name, help=module.SUMMARY, description=module.__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(one)
        one.set_defaults(func=module.run)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kdbench", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_run(sub)
    report = sub.add_parser("report", help="CSVs, figures and a markdown leaderboard from a suite's run records; "
                            "with several suites also combined.md and combined.csv, one table across them")
    report.add_argument("suites", nargs="+", metavar="SUITE",
                        help="suite name(s): the records in RESULTS_DIR/SUITE/runs/ are read")
    report.add_argument("--results-dir", default="results", help="where the run records are (default: results)")
    report.add_argument("--report-dir", default="report",
                        help="the report goes to REPORT_DIR/SUITE/ (default: report)")
    report.add_argument("--effect", type=float, default=EFFECT,
                        help=f"points: for a comparison not separated, the seeds needed to detect this "
                             f"difference at 80%% power (default: {EFFECT})")
    report.set_defaults(func=_cmd_report)

    _add_compare(sub)

    methods = sub.add_parser("methods", help="list registered method plugins with paper and defaults")
    methods.set_defaults(func=_cmd_methods)
    suites = sub.add_parser("suites", help="list the built-in suites")
    suites.set_defaults(func=_cmd_suites)
    _add_bench(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GroupsCrashed as exc:  # not bad input: a worker died; what finished is kept
        print(f"kdbench: error: {exc}", file=sys.stderr)
        return 1
    except KDBenchError as exc:
        print(f"kdbench: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kdbench: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
