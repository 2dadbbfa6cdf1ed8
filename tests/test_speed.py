"""The speed benchmark runs on CPU with tiny iteration counts and prints its table and ratios."""

from __future__ import annotations

import re

from kdbench.bench.speed import main


def test_the_speed_table_on_cpu(capsys):
    args = ["--suite", "smoke", "--device", "cpu", "--batch", "16", "--steps", "2", "--warmup", "1",
            "--variants", "fp32", "bf16", "--loader-workers", "0"]
    assert main(args) == 0
    out = capsys.readouterr().out
    rows = re.findall(r"^\| (fp32|bf16) \| ([^|]+) \| (\d+) \| ([\d.]+) \| ([\d,]+) \| ([\d.]+) \|$", out, flags=re.M)
    runs = [(variant, run.strip(), int(cells)) for variant, run, cells, *_ in rows]
    assert runs == [(v, r, n) for v in ("fp32", "bf16") for r, n in
                    (("student alone", 1), ("vanilla_kd alone", 1), ("lockstep, all methods", 7))] + \
        [("fp32", "plain loop, vanilla KD (0 loader workers)", 1)]
    assert all(float(ms) > 0 for *_, ms, _, _ in rows)
    assert re.search(r"^vanilla_kd, fp32: [\d.]+× the plain loop's speed", out, flags=re.M)
    assert re.search(r"^vanilla_kd, bf16: [\d.]+× the plain loop's speed", out, flags=re.M)


def test_bad_counts_are_refused(capsys):
    assert main(["--suite", "smoke", "--device", "cpu", "--steps", "0"]) == 2
    assert "--steps and --warmup must be at least 1" in capsys.readouterr().err
