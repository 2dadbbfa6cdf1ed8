"""Sweep bregman_pca's code length k on a suite's teacher/student pair (default: the default suite).

For each k the teacher's logits are compressed to k coefficients (fitted once per teacher and k,
cached beside the teacher) and a student is trained to predict them. The table shows what the code
costs the teacher, mean KL(softmax(ŷ_T) ‖ ℓ(c_T)) on train and test and its test accuracy through the
imported layer, next to the student's final-epoch accuracy, with student_ce for reference. Runs are
ordinary run records under ``<results>/<suite>-bregman-k/``, so an interrupted sweep resumes and a
finished one reprints at once.

Run as ``kdbench bench bregman-sweep``.
"""

from __future__ import annotations

import argparse
import dataclasses

from kdbench.bench.common import add_suite, count, markdown_table
from kdbench.config.suite import MethodEntry, load_suite
from kdbench.execute.driver import run_suite
from kdbench.report.stats import estimate
from kdbench.report.tables import group_by_label
from kdbench.run.request import RunRequest

SUMMARY = "bregman_pca's code length k swept on a suite's pair: what the code costs the teacher and the student"


def sweep_suite(suite_name: str, ks: list[int]):
    base = load_suite(suite_name)
    entries = [MethodEntry("student_ce", "student_ce")]
    entries += [MethodEntry("bregman_pca", f"bregman_pca_k{k}", {"k": k}) for k in ks]
    return dataclasses.replace(base, name=f"{base.name}-bregman-k", methods=tuple(entries))


def mean_std(values: list[float]) -> str:
    """The report's estimate, as mean ± sample std ("–" without values, the mean alone for one)."""
    est = estimate(values)
    if est.n == 0:
        return "–"
    return f"{est.mean:.2f}" if est.n == 1 else f"{est.mean:.2f} ± {est.std:.2f}"


def table(records: list[dict], ks: list[int]) -> str:
    by_label = group_by_label(records)
    header = ["k", "teacher KL train", "teacher KL test", "mean-only KL test", "teacher acc via ℓ(c_T)",
              "student final acc", "seeds"]
    rows = []
    for k in ks:
        runs = by_label.get(f"bregman_pca_k{k}", [])
        prep = next((r["prepare"] for r in runs if r.get("prepare")), {})
        accs = [r["final_acc"] for r in runs if r["final_acc"] is not None]
        rows.append([k, *(f"{prep.get(key, float('nan')):.4f}" for key in
                           ("teacher_recon_kl_train", "teacher_recon_kl_test", "teacher_mean_only_kl_test")),
                     f"{prep.get('teacher_acc_through_layer', float('nan')):.2f}", mean_std(accs), len(accs)])
    ce = [r["final_acc"] for r in by_label.get("student_ce", []) if r["final_acc"] is not None]
    rows.append(["student_ce", "", "", "", "", mean_std(ce), len(ce)])
    text = markdown_table(header, rows)
    teacher_acc = next((r["teacher_acc"] for r in records if r.get("teacher_acc") is not None), None)
    if teacher_acc is not None:
        text += f"\n\nteacher test accuracy (full logits): {teacher_acc:.2f}%"
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_suite(parser, "default")
    parser.add_argument("--ks", type=count, nargs="+", default=[2, 4, 6, 8], help="code lengths (default 2 4 6 8)")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: the suite's")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda[:N]")
    parser.add_argument("--data-dir", default=None, help="folder holding the dataset files")
    parser.add_argument("--results-dir", default="results",
                        help="the runs go to RESULTS_DIR/SUITE-bregman-k/ (default results)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars, summaries only")


def run(args: argparse.Namespace) -> int:
    suite = sweep_suite(args.suite, args.ks)
    records = run_suite(RunRequest(suite, seeds=args.seeds, device=args.device, data_dir=args.data_dir,
                                   results_dir=args.results_dir, progress=False if args.no_progress else None))
    print(f"\nbregman_pca k sweep on suite {args.suite!r} ({suite.student_model} <- {suite.teacher.model})")
    print(table(records, args.ks))
    return 0
