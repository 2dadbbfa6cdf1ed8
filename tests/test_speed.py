"""`kdbench bench speed` runs on CPU with tiny iteration counts and prints its table and ratios."""

from __future__ import annotations

import re

import pytest
from kdbench.cli import main


def test_the_speed_table_on_cpu(capsys):
    args = ["bench", "speed", "--suite", "smoke", "--device", "cpu", "--batch", "16", "--steps", "2", "--warmup", "1",
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


@pytest.mark.parametrize("flag", ["--steps", "--warmup"])
def test_bad_counts_are_refused(capsys, flag):
    with pytest.raises(SystemExit) as exit_:  # an argparse usage error, one line through cli's parser
        main(["bench", "speed", "--suite", "smoke", "--device", "cpu", flag, "0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("kdbench: error:")
    assert f"argument {flag}: must be at least 1" in err


@pytest.mark.parametrize("argv, fragment", [(["--suite", "no-such-suite"], "no-such-suite"),
                                             (["--suite", "smoke", "--device", "tpu"], "unknown device 'tpu'")])
def test_bad_input_is_a_one_line_error_from_the_cli(capsys, argv, fragment):
    """What argparse cannot check is a KDBenchError, which the CLI prints as one line with status 2."""
    assert main(["bench", "speed", *argv]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("kdbench: error:") and fragment in err, err
    assert "ms/step" not in captured.out
