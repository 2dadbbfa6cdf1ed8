"""The Fashion-MNIST default pair: the sizes the README states and the brief's 10x ratio."""

from kdbench.models import build_model
from kdbench.train.cost import count_parameters


def test_pair_sizes_and_ratio():
    teacher = build_model("fmnist_teacher", 10, 1)
    student = build_model("fmnist_student", 10, 1)
    assert count_parameters(teacher) == 103_466
    assert count_parameters(student) == 6_866
    assert count_parameters(teacher) >= 10 * count_parameters(student)


def test_pair_taps_line_up():
    t = build_model("fmnist_teacher", 10, 1).tap_shapes((1, 28, 28))
    s = build_model("fmnist_student", 10, 1).tap_shapes((1, 28, 28))
    assert t.prepool == (128, 7, 7) and s.prepool == (32, 7, 7)
    assert [x[1:] for x in t.stages] == [x[1:] for x in s.stages] == [(14, 14), (7, 7), (7, 7)]


def test_layout_speed_benchmark_prints_its_three_ratios(capsys):
    from kdbench.cli import main

    assert main(["bench", "layout", "--rounds", "2", "--iters", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("×") == 3 and "teacher forward, batch 128: NCHW" in out
