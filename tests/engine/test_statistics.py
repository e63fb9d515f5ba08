"""Experiment statistics, each checked against an independent, straightforward computation (direct
binomial sums, brute-force sign enumeration, published t-table values, a coverage simulation), and
against scipy when it happens to be importable (it is not a dependency)."""

import itertools
import json
import math
import time

import numpy as np
import pytest

from layertracer.errors import LayerTracerError
from layertracer.experiments.statistics import (
    chi2_1_sf,
    compare_allocations,
    holm,
    mcnemar,
    normal_ppf,
    paired_bootstrap_diff,
    paired_permutation,
    regularized_incomplete_beta,
    seed_summary,
    student_t_ppf,
    student_t_sf,
)

# Two-sided 95% / 99% and one-sided 95% critical values from a printed t table.
T_TABLE = [
    (0.975, 1, 12.706),
    (0.975, 2, 4.303),
    (0.975, 4, 2.776),
    (0.975, 9, 2.262),
    (0.975, 29, 2.045),
    (0.975, 120, 1.980),
    (0.995, 10, 3.169),
    (0.995, 30, 2.750),
    (0.95, 2, 2.920),
    (0.95, 15, 1.753),
]


@pytest.mark.parametrize("p, df, expected", T_TABLE)
def test_t_quantile_matches_the_table(p, df, expected):
    assert student_t_ppf(p, df) == pytest.approx(expected, abs=6e-4)
    assert student_t_ppf(1 - p, df) == pytest.approx(-student_t_ppf(p, df), rel=1e-12)


def test_t_quantile_closed_forms_and_limits():
    # df = 1 is Cauchy: tan(pi (p - 1/2)); df = 2: (2p - 1) / sqrt(2 p (1 - p)).
    for p in (0.6, 0.9, 0.975, 0.999, 0.999999):
        assert student_t_ppf(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-10)
        assert student_t_ppf(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-10)
    assert student_t_ppf(0.5, 7) == 0.0
    assert normal_ppf(0.975) == pytest.approx(1.959963984540054, rel=1e-12)
    assert student_t_ppf(0.975, 1e7) == pytest.approx(1.959963984540054, abs=1e-6)
    assert student_t_ppf(0.975, math.inf) == pytest.approx(1.959963984540054, rel=1e-12)
    for t, df in ((2.5, 3), (0.3, 17.5), (8.0, 1)):
        assert student_t_sf(student_t_ppf(1 - student_t_sf(t, df), df), df) == pytest.approx(student_t_sf(t, df), rel=1e-9)
    with pytest.raises(ValueError):
        student_t_ppf(1.0, 3)


def test_incomplete_beta_identities():
    for x in (0.01, 0.3, 0.5, 0.9, 0.999):
        assert regularized_incomplete_beta(1, 1, x) == pytest.approx(x, rel=1e-12)
        assert regularized_incomplete_beta(3.5, 1, x) == pytest.approx(x**3.5, rel=1e-12)
        assert regularized_incomplete_beta(1, 2.5, x) == pytest.approx(1 - (1 - x) ** 2.5, rel=1e-11)
        assert regularized_incomplete_beta(2.2, 7.1, x) == pytest.approx(
            1 - regularized_incomplete_beta(7.1, 2.2, 1 - x), abs=1e-13
        )


def test_chi2_survival_at_known_quantiles():
    assert chi2_1_sf(3.841458820694124) == pytest.approx(0.05, rel=1e-10)
    assert chi2_1_sf(6.634896601021214) == pytest.approx(0.01, rel=1e-10)
    assert chi2_1_sf(0.0) == 1.0


def test_scipy_cross_check():
    stats = pytest.importorskip("scipy.stats")
    for p, df in ((0.975, 3), (0.9, 11.5), (0.9995, 2), (0.6, 250)):
        assert student_t_ppf(p, df) == pytest.approx(stats.t.ppf(p, df), rel=1e-9)
    for x in (0.1, 2.0, 15.0):
        assert chi2_1_sf(x) == pytest.approx(stats.chi2.sf(x, 1), rel=1e-10)
    values = [0.61, 0.58, 0.64, 0.60]
    low, high = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    summary = seed_summary(values)
    assert (summary["ci_low"], summary["ci_high"]) == pytest.approx((low, high), rel=1e-10)
    for b01, b10 in ((3, 11), (0, 7), (5, 5)):
        exact = stats.binomtest(min(b01, b10), b01 + b10, 0.5).pvalue
        a = np.array([0] * b01 + [1] * b10 + [1, 0])
        b = np.array([1] * b01 + [0] * b10 + [1, 0])
        assert mcnemar(a, b)["p_value"] == pytest.approx(exact, rel=1e-10)


def test_seed_summary():
    values = [0.52, 0.55, 0.49, 0.58, 0.51]
    summary = seed_summary(values)
    mean, std = float(np.mean(values)), float(np.std(values, ddof=1))
    assert summary["mean"] == pytest.approx(mean) and summary["std"] == pytest.approx(std) and summary["n"] == 5
    half = 2.776445105 * std / math.sqrt(5)
    assert summary["ci_low"] == pytest.approx(mean - half, rel=1e-8)
    assert summary["ci_high"] == pytest.approx(mean + half, rel=1e-8)
    single = seed_summary([0.7])
    assert single["std"] == 0.0 and single["n"] == 1 and single["ci_low"] is None and single["ci_high"] is None
    json.dumps(summary, allow_nan=False)
    with pytest.raises(LayerTracerError):
        seed_summary([])


def _exact_mcnemar(b01, b10):
    n = b01 + b10
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(b01, b10) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _pairs(b01, b10, both_right=4, both_wrong=3, seed=0):
    a = np.array([0] * b01 + [1] * b10 + [1] * both_right + [0] * both_wrong)
    b = np.array([1] * b01 + [0] * b10 + [1] * both_right + [0] * both_wrong)
    order = np.random.default_rng(seed).permutation(a.size)
    return a[order], b[order]


@pytest.mark.parametrize("b01, b10", [(0, 0), (0, 6), (3, 9), (12, 12), (5, 19), (1, 23)])
def test_mcnemar_exact_is_the_binomial_sum(b01, b10):
    result = mcnemar(*_pairs(b01, b10))
    assert (result["b01"], result["b10"]) == (b01, b10)
    assert result["method"] == "exact-binomial"
    assert result["p_value"] == pytest.approx(_exact_mcnemar(b01, b10), rel=1e-12, abs=1e-300)


def test_mcnemar_chi_square_branch():
    result = mcnemar(*_pairs(10, 30))
    assert result["method"] == "chi2-continuity"
    assert result["statistic"] == pytest.approx((20 - 1) ** 2 / 40)
    # P(chi2_1 > s) = P(|Z| > sqrt s), here with Z's tail from math.erf.
    z = math.sqrt(result["statistic"])
    assert result["p_value"] == pytest.approx(2 * (1 - 0.5 * (1 + math.erf(z / math.sqrt(2)))), rel=1e-9)
    assert mcnemar(*_pairs(15, 15))["p_value"] == 1.0
    # 24 discordant questions are exact, 25 are not.
    assert mcnemar(*_pairs(12, 12))["method"] == "exact-binomial"
    assert mcnemar(*_pairs(12, 13))["method"] == "chi2-continuity"
    with pytest.raises(LayerTracerError, match="0/1"):
        mcnemar([0, 0.5], [1, 1])
    with pytest.raises(LayerTracerError, match="same length"):
        mcnemar([0, 1], [1, 1, 0])


def _brute_force_sign_flip(a, b):
    d = np.asarray(a, float) - np.asarray(b, float)
    observed = abs(d.sum())
    hits = total = 0
    for signs in itertools.product((-1.0, 1.0), repeat=d.size):
        total += 1
        hits += abs(float(np.dot(signs, d))) >= observed - 1e-9
    return hits / total


@pytest.mark.parametrize("kind", ["binary", "seed-averaged", "continuous"])
@pytest.mark.parametrize("n", [5, 9, 12])
def test_permutation_is_exact_against_brute_force(kind, n):
    rng = np.random.default_rng(n)
    if kind == "binary":
        a, b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    elif kind == "seed-averaged":
        a, b = rng.integers(0, 4, n) / 3, rng.integers(0, 4, n) / 3
    else:
        a, b = rng.random(n), rng.random(n) * 0.8
    result = paired_permutation(a, b)
    assert result["method"].startswith("exact")
    assert result["diff"] == pytest.approx(np.mean(a) - np.mean(b))
    assert result["p_value"] == pytest.approx(_brute_force_sign_flip(a, b), abs=1e-12)
    if kind == "binary":
        # For 0/1 data the exact sign-flip test is the exact McNemar test.
        assert result["p_value"] == pytest.approx(_exact_mcnemar(mcnemar(a, b)["b01"], mcnemar(a, b)["b10"]))


def test_permutation_monte_carlo_agrees_with_exact():
    rng = np.random.default_rng(7)
    a, b = rng.random(12), rng.random(12) * 0.7
    exact = _brute_force_sign_flip(a, b)
    result = paired_permutation(a, b, resamples=20000, seed=1, exact_max=0)
    assert result["method"] == "monte-carlo"
    assert abs(result["p_value"] - exact) < 4 * math.sqrt(exact * (1 - exact) / 20000) + 1e-3
    assert paired_permutation(a, b, resamples=500, seed=3, exact_max=0) == paired_permutation(
        a, b, resamples=500, seed=3, exact_max=0
    )


def test_permutation_grouped_monte_carlo_against_lattice_convolution():
    # Seed-averaged accuracies of 3 seeds: d is a multiple of 1/3. The exact null distribution of
    # 3 * sum(s_i d_i) is the convolution of the +-k steps; compute it by dynamic programming.
    rng = np.random.default_rng(11)
    a = rng.binomial(3, 0.62, 150) / 3
    b = rng.binomial(3, 0.55, 150) / 3
    steps = np.rint(np.abs(a - b) * 3).astype(int)
    steps = steps[steps > 0]
    offset = int(steps.sum())
    dist = np.zeros(2 * offset + 1)
    dist[offset] = 1.0
    for k in steps:
        dist = 0.5 * (np.roll(dist, k) + np.roll(dist, -k))
    observed = abs(int(np.rint((a - b).sum() * 3)))
    values = np.arange(-offset, offset + 1)
    exact = float(dist[np.abs(values) >= observed].sum())
    result = paired_permutation(a, b, resamples=20000, seed=0)
    assert result["method"] == "monte-carlo"
    assert abs(result["p_value"] - exact) < 4 * math.sqrt(exact * (1 - exact) / 20000) + 1e-3


def _index_bootstrap(d, resamples, level, seed):
    rng = np.random.default_rng(seed)
    means = np.array([d[rng.integers(0, d.size, d.size)].mean() for _ in range(resamples)])
    alpha = (1 - level) / 2
    return np.quantile(means, [alpha, 1 - alpha])


def test_bootstrap_against_plain_index_resampling():
    rng = np.random.default_rng(3)
    a = (rng.random(400) < 0.62).astype(float)
    b = np.where(rng.random(400) < 0.8, a, 1 - a)
    result = paired_bootstrap_diff(a, b, resamples=4000, seed=5)
    assert result["diff"] == pytest.approx(a.mean() - b.mean())
    low, high = _index_bootstrap(a - b, 4000, 0.95, seed=9)
    assert result["ci_low"] == pytest.approx(low, abs=0.006)
    assert result["ci_high"] == pytest.approx(high, abs=0.006)
    # Continuous scores take the index-resampling path; same check.
    ac, bc = rng.random(300), rng.random(300) * 0.9
    result = paired_bootstrap_diff(ac, bc, resamples=4000, seed=5)
    low, high = _index_bootstrap(ac - bc, 4000, 0.95, seed=9)
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((low, high), abs=0.008)
    assert paired_bootstrap_diff(a, b, resamples=300, seed=2) == paired_bootstrap_diff(a, b, resamples=300, seed=2)


def test_bootstrap_p_value_extremes():
    a = np.array([1, 0, 1, 1, 0, 1, 0, 0] * 10)
    assert paired_bootstrap_diff(a, a, resamples=500)["p_value"] == 1.0
    ones, zeros = np.ones(50), np.zeros(50)
    result = paired_bootstrap_diff(ones, zeros, resamples=999)
    assert result["diff"] == 1.0 and result["p_value"] == pytest.approx(1 / 1000)
    assert result["ci_low"] == result["ci_high"] == 1.0


def test_bootstrap_interval_covers_the_true_difference():
    # Questions have a difficulty shared by both allocations (so the pairing matters); the true
    # accuracy difference is known exactly. A 90% interval should cover it about 90% of the time.
    rng = np.random.default_rng(2024)
    questions, reps, covered = 300, 200, 0
    for rep in range(reps):
        difficulty = rng.random(questions)
        u = rng.random(questions)
        a = (u < 0.35 + 0.5 * difficulty).astype(float)  # P(a=1) = 0.6 on average
        b = (u < 0.30 + 0.5 * difficulty).astype(float)  # P(b=1) = 0.55; true diff = 0.05
        result = paired_bootstrap_diff(a, b, resamples=1000, level=0.9, seed=rep)
        covered += result["ci_low"] <= 0.05 <= result["ci_high"]
    assert 0.82 <= covered / reps <= 0.97


def test_ten_thousand_resamples_of_ten_thousand_questions_is_fast():
    rng = np.random.default_rng(0)
    a = (rng.random(10_000) < 0.6).astype(float)
    b = (rng.random(10_000) < 0.58).astype(float)
    start = time.perf_counter()
    paired_bootstrap_diff(a, b, resamples=10_000)
    paired_permutation(a, b, resamples=10_000)
    assert time.perf_counter() - start < 3.0
    seeds_a = (rng.random((3, 10_000)) < 0.6).astype(float)
    seeds_b = (rng.random((3, 10_000)) < 0.58).astype(float)
    start = time.perf_counter()
    compare_allocations({"a": seeds_a, "b": seeds_b})
    assert time.perf_counter() - start < 3.0


def test_holm_by_hand():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_compare_allocations():
    rng = np.random.default_rng(5)
    difficulty = rng.random(200)
    data = {
        "train-shallow": (rng.random((3, 200)) < 0.3 + 0.6 * difficulty).astype(int),
        "train-deep": (rng.random((3, 200)) < 0.2 + 0.6 * difficulty).astype(int),
        "full": (rng.random((3, 200)) < 0.25 + 0.6 * difficulty).astype(int),
    }
    report = compare_allocations(data, resamples=2000, seed=1)
    text = json.dumps(report, allow_nan=False)
    assert json.loads(text) == report
    assert [(c["a"], c["b"]) for c in report["comparisons"]] == [
        ("train-shallow", "train-deep"),
        ("train-shallow", "full"),
        ("train-deep", "full"),
    ]
    for name, matrix in data.items():
        summary = report["allocations"][name]
        assert summary["accuracy_per_seed"] == pytest.approx(matrix.mean(axis=1).tolist())
        assert summary["mean"] == pytest.approx(matrix.mean()) and summary["seeds"] == 3
    first = report["comparisons"][0]
    a, b = data["train-shallow"], data["train-deep"]
    assert first["diff"] == pytest.approx(a.mean() - b.mean())
    assert first["ci_low"] < first["diff"] < first["ci_high"]
    boot = paired_bootstrap_diff(a.mean(0), b.mean(0), resamples=2000, seed=1)
    assert (first["ci_low"], first["ci_high"], first["bootstrap"]["p_value"]) == (
        boot["ci_low"], boot["ci_high"], boot["p_value"]
    )
    majority = mcnemar((a.sum(0) >= 2).astype(int), (b.sum(0) >= 2).astype(int))
    assert first["mcnemar"]["p_value"] == majority["p_value"]
    assert first["permutation"]["p_value"] == paired_permutation(a.mean(0), b.mean(0), resamples=2000, seed=1)["p_value"]
    for test in ("bootstrap", "mcnemar", "permutation"):
        raw = [c[test]["p_value"] for c in report["comparisons"]]
        assert [c[test]["p_adjusted"] for c in report["comparisons"]] == pytest.approx(holm(raw))
    pooled = compare_allocations(data, resamples=200, mcnemar_basis="pooled")
    assert pooled["comparisons"][0]["mcnemar"]["b01"] == int(((a == 0) & (b == 1)).sum())


def test_compare_allocations_errors():
    with pytest.raises(LayerTracerError, match="same questions"):
        compare_allocations({"x": np.ones((2, 10)), "y": np.ones((2, 11))})
    with pytest.raises(LayerTracerError, match="0/1"):
        compare_allocations({"x": np.full((2, 10), 0.5), "y": np.ones((2, 10))})
    with pytest.raises(LayerTracerError, match="at least two"):
        compare_allocations({"x": np.ones((2, 10))})
    with pytest.raises(LayerTracerError, match="seeds"):
        compare_allocations({"x": np.ones((2, 10)), "y": np.ones((3, 10))}, mcnemar_basis="pooled")
    uneven = compare_allocations({"x": np.ones((2, 10)), "y": np.ones((3, 10))}, resamples=100)
    assert "note" in uneven["comparisons"][0]["mcnemar"]


def test_each_comparison_carries_the_one_significance_verdict():
    """The engine writes the verdict (all three Holm p-values below 0.05, layertracer.spec.significance)
    and the dashboard and report read that, not rules of their own."""
    from layertracer.experiments.statistics import compare_allocations
    from layertracer.spec.significance import verdict

    rng = np.random.default_rng(3)
    strong = (rng.random((3, 300)) < 0.9).astype(int)
    weak = (rng.random((3, 300)) < 0.3).astype(int)
    same = (rng.random((3, 300)) < 0.3).astype(int)
    result = compare_allocations({"strong": strong, "weak": weak, "same": same}, resamples=2000, seed=1)
    assert result["alpha"] == 0.05
    by_pair = {(c["a"], c["b"]): c for c in result["comparisons"]}
    for comparison in by_pair.values():
        expected = all(comparison[t]["p_adjusted"] < 0.05 for t in ("bootstrap", "mcnemar", "permutation"))
        assert comparison["significant"] is expected
        assert verdict(comparison) is expected
        # a result written before the engine wrote verdicts is read by the same rule
        assert verdict({k: v for k, v in comparison.items() if k != "significant"}) is expected
    assert by_pair[("strong", "weak")]["significant"] is True
    assert by_pair[("weak", "same")]["significant"] is False
    missing = {**by_pair[("strong", "weak")], "mcnemar": {"p_value": None, "p_adjusted": None}}
    missing.pop("significant")
    assert verdict(missing) is False  # a missing test is no evidence
