"""The verdicts' statistics against numbers computed another way, rank ranges on hand-made records, and
one table across three small suites. Each expected number is written as a literal with where it comes from."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from kdbench.report import build_reports
from kdbench.report.stats import (binomial_se, clip_interval, detectable_difference, friedman_p, holm, nemenyi_cd,
                                  paired_t_p, paired_t_power, seeds_needed, tost_p, welch, wilcoxon_p)
from kdbench.report.verdicts import compare_family, rank_ranges, verdict_of
from scipy import integrate, stats

from tests.test_report import PNG_MAGIC, make_record, write_records

NAN = math.nan


def test_holm_on_a_fixed_vector():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4·0.005 = 0.02, 3·0.01 = 0.03, 2·0.03 = 0.06, max(1·0.04, 0.06)
    adjusted = holm([0.01, 0.04, 0.03, NAN, 0.005])
    assert adjusted[:3] + adjusted[4:] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adjusted[3])
    assert holm([0.5, 0.9]) == [1.0, 1.0]  # 2·0.5 = 1, then max(0.9, 1) capped at 1


def test_paired_t_by_hand():
    # d = 1, 2, 3.5: mean 13/6, s = 1.2583057, t = 2.9824045; p = 2·P(T₂ > t) = 1 − t/√(t² + 2) for df 2
    t = (13 / 6) / (1.2583057392117916 / math.sqrt(3))
    assert paired_t_p([1.0, 2.0, 3.5]) == pytest.approx(1 - t / math.sqrt(t * t + 2), rel=1e-9)
    assert paired_t_p([1.0, 2.0, 3.5]) == pytest.approx(0.0964375, abs=1e-6)


def test_wilcoxon_exact_by_enumeration():
    # 6 positive differences: W⁻ = 0, reached by 1 of 2⁶ sign patterns; two-sided p = 2/64
    assert wilcoxon_p([1, 2, 3, 4, 5, 6]) == pytest.approx(2 / 64)
    # one negative of rank 1: W⁻ = 1; patterns with W⁻ ≤ 1: {}, {1} → p = 2·2/64
    assert wilcoxon_p([-1, 2, 3, 4, 5, 6]) == pytest.approx(4 / 64)


def _power_by_integration(effect, sd, n, alpha):
    """P(|Z + λ| > c·√(V/df)) with V ~ χ²_df, integrated over V: the noncentral t's definition."""
    df, lam = n - 1, effect / (sd / math.sqrt(n))
    c = stats.t.ppf(1 - alpha / 2, df)

    def given(v):
        k = c * math.sqrt(v / df)
        return (stats.norm.sf(k - lam) + stats.norm.cdf(-k - lam)) * stats.chi2.pdf(v, df)

    return integrate.quad(given, 0, math.inf)[0]


@pytest.mark.parametrize("effect, sd, n, alpha", [(1.0, 1.0, 10, 0.05), (0.5, 0.35, 4, 0.05 / 11),
                                                   (2.0, 1.3, 3, 0.05)])
def test_power_against_its_definition(effect, sd, n, alpha):
    assert paired_t_power(effect, sd, n, alpha) == pytest.approx(_power_by_integration(effect, sd, n, alpha),
                                                                 abs=1e-6)


def test_sample_size_and_detectable_difference():
    # d = δ/σ = 1, α 0.05, 80%: the classic answer is 10 pairs (power 0.803; 9 pairs give 0.76)
    assert paired_t_power(1.0, 1.0, 10) == pytest.approx(0.8031, abs=1e-4)
    assert seeds_needed(1.0, 1.0) == 10
    # closed form: the normal approximation n_z = ((z_{1−α/2} + z_0.8)·σ/δ)² plus Guenther's (1981) correction
    # for the t-test, z_{1−α/2}²/2, rounded up. At α/6, σ 0.35, δ 0.5: ((2.6383 + 0.8416)·0.7)² = 5.934,
    # + 2.6383²/2 = 9.41 → 10; at α 0.05, σ = δ: (2.8016)² = 7.849, + 1.9600²/2 = 9.77 → 10
    for effect, sd, alpha, n_z in ((0.5, 0.35, 0.05 / 6, 5.934), (1.0, 1.0, 0.05, 7.849)):
        z = stats.norm.ppf(1 - alpha / 2)
        normal = ((z + stats.norm.ppf(0.8)) * sd / effect) ** 2
        assert normal == pytest.approx(n_z, abs=1e-3)
        assert seeds_needed(effect, sd, alpha) == math.ceil(normal + z * z / 2) == 10
    # the detectable difference is the effect whose power is exactly 80%, and 10 seeds detect about 1σ
    delta = detectable_difference(1.0, 10)
    assert delta == pytest.approx(0.996, abs=1e-3) and paired_t_power(delta, 1.0, 10) == pytest.approx(0.8)
    assert math.isnan(detectable_difference(0.0, 3)) and math.isnan(seeds_needed(0.5, 0.0))


def test_welch_and_tost_by_hand():
    # A 80, 81, 82 (s² = 1), B 81, 83, 85 (s² = 4): se = √(1/3 + 4/3) = 1.2910, df = (5/3)²/((1/9 + 16/9)/2) = 2.9412
    w = welch([80, 81, 82], [81, 83, 85])
    assert (w.diff, w.se, w.df) == pytest.approx((2.0, 1.290994, 2.941176), abs=1e-6)
    # TOST at margin 1: max(P(T > 3/se), P(T < 1/se)) = P(T_df < 0.7746)
    assert tost_p(w, 1.0) == pytest.approx(stats.t.cdf(1 / 1.290994, 2.941176), abs=1e-6)
    # equivalence iff the 90% interval lies inside the margin: the same decision both ways
    same = welch([80.0, 80.2, 80.4], [80.1, 80.3, 80.5])
    low, high = same.interval(0.90)
    assert (tost_p(same, 1.0) < 0.05) == (-1 < low and high < 1) == True  # noqa: E712
    assert tost_p(welch([80, 80, 80], [80.5, 80.5, 80.5]), 1.0) == 0.0  # no spread: the difference is known


def test_friedman_and_nemenyi_by_hand():
    # 4 blocks, mean ranks 1.25, 2, 2.75: χ² = 12·4/(3·4)·(1.5625 + 4 + 7.5625) − 3·4·4 = 4.5
    chi2, p = friedman_p({"a": [1, 1, 1, 2], "b": [2, 3, 2, 1], "c": [3, 2, 3, 3]})
    assert chi2 == pytest.approx(4.5) and p == pytest.approx(math.exp(-4.5 / 2))  # χ²₂ survival is e^(−x/2)
    # Demšar (2006), table 5: q_0.05 = 2.343 (k = 3), 2.949 (k = 7); CD = q·√(k(k+1)/(6N))
    assert nemenyi_cd(3, 5) == pytest.approx(2.343 * math.sqrt(12 / 30), abs=2e-3)
    assert nemenyi_cd(7, 3) == pytest.approx(2.949 * math.sqrt(56 / 18), abs=2e-3)


def test_intervals_clip_and_the_binomial_error():
    assert clip_interval(80.13, 115.43) == (80.13, 100.0) and clip_interval(-3.0, 4.0) == (0.0, 4.0)
    assert binomial_se(90.0, 360) == pytest.approx(100 * math.sqrt(0.09 / 360))  # 1.58 points
    assert 100 / 360 == pytest.approx(0.278, abs=1e-3)  # one image of a 360-image test set


# ------------------------------------------------------------------------------- verdicts and ranks


def _finals(**by_label):
    return {label: dict(enumerate(values)) for label, values in by_label.items()}


def test_verdicts_and_rank_ranges_on_hand_made_records():
    finals = _finals(big=[85.0, 86.0, 85.5, 86.2], vanilla_kd=[82.0, 82.5, 81.0, 82.1],
                     student_ce=[80.0, 80.4, 79.6, 80.2], same=[80.5, 80.9, 80.1, 80.7],
                     noisy=[84.0, 78.0, 83.0, 77.0])
    cs = compare_family(finals)
    assert len(cs) == 7  # 3 methods × 2 baselines + the two baselines once
    by = {(c.label, c.baseline): c for c in cs}
    assert by[("big", "student_ce")].verdict == "better" and by[("big", "vanilla_kd")].verdict == "better"
    assert by[("vanilla_kd", "student_ce")].verdict == "better"
    same = by[("same", "student_ce")]  # +0.5 on every seed: zero variance, not tested
    assert same.verdict == "not separated" and same.reason.startswith("zero variance") and math.isnan(same.p_adjusted)
    noisy = by[("noisy", "student_ce")]
    assert noisy.verdict == "not separated" and noisy.detectable > 0 and noisy.seeds_needed > 4
    assert verdict_of(cs, "student_ce", "vanilla_kd").verdict == "worse"
    order = ["big", "vanilla_kd", "noisy", "same", "student_ce"]
    ranges = rank_ranges(order, cs)
    # big is above both baselines: ranks 1 to 5 − 2; vanilla_kd is below big and above student_ce and same;
    # same is below vanilla_kd, untested against student_ce; noisy is separated from nothing
    assert ranges["big"] == (1, 3) and ranges["vanilla_kd"] == (2, 3)
    assert ranges["student_ce"] == (3, 5) and ranges["noisy"] == (1, 5) and ranges["same"] == (2, 5)
    assert by[("same", "vanilla_kd")].verdict == "worse"


def test_two_paired_seeds_are_not_tested():
    cs = compare_family(_finals(a=[90.0, 91.0], student_ce=[80.0, 80.5]))
    assert [(c.verdict, c.reason) for c in cs] == [("not separated", "2 paired seeds (a test needs 3)")]


# -------------------------------------------------------------------------------- across suites


def test_a_combined_report_of_three_suites(tmp_path):
    results = tmp_path / "results"
    base = {"student_ce": [80.0, 80.4, 79.6], "vanilla_kd": [81.0, 81.6, 80.9], "good": [83.0, 83.1, 82.5]}
    for i, suite in enumerate(["p1", "p2", "p3"]):
        records = [make_record(label, s, a + i) for label, accs in base.items() for s, a in enumerate(accs)]
        write_records(results, suite, records + [make_record("only_p1", 0, 70.0)] * (suite == "p1"))
    paths = build_reports(["p1", "p2", "p3"], results, tmp_path / "report")
    assert [p.name for p in paths] == ["leaderboard.md"] * 3 + ["combined.md"]
    md = paths[-1].read_text()
    assert "Friedman test over 3 suites and 3 methods: χ²_F = 6.000, p = 0.0498" in md  # e^(−3)
    assert "CD = 1.91" in md  # 2.343·√(12/18) = 1.913
    figure = tmp_path / "report" / "combined_critical_difference.png"
    assert figure.read_bytes().startswith(PNG_MAGIC) and f"({figure.name})" in md
    table = pd.read_csv(tmp_path / "report" / "combined.csv").set_index("method")
    assert list(table.index) == ["good", "vanilla_kd", "student_ce", "only_p1"]
    assert table.loc["good", "average rank"] == 1.0 and pd.isna(table.loc["only_p1", "average rank"])
    assert table.loc["good", "p2: gain"] == pytest.approx(2.8666667) and "| good " in md
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| ")}
    assert "(baseline)" in rows["student_ce"] and "not in every suite" in rows["only_p1"]


def test_two_suites_have_no_friedman_test(tmp_path):
    for suite in ("a", "b"):
        write_records(tmp_path / "r", suite, [make_record("student_ce", s, 80.0 + s) for s in range(3)])
    md = build_reports(["a", "b"], tmp_path / "r", tmp_path / "rep")[-1].read_text()
    assert "No Friedman test: it needs 3 suites or more" in md
    assert not (tmp_path / "rep" / "combined_critical_difference.png").exists()
