"""Statistics for comparing the allocations of a continued-pre-training experiment.

An experiment trains several allocations (which layers are trained) with several seeds each and
evaluates every trained model on the same benchmark questions, scoring each question 0 (wrong) or
1 (right). The data of one allocation is therefore a (seeds, questions) array of 0/1.

Two sources of variation matter and are kept apart:

- **seeds** (training randomness): :func:`seed_summary` gives the mean accuracy over seeds with a
  Student-t interval;
- **questions** (which questions happened to be in the benchmark): the paired tests
  (:func:`paired_bootstrap_diff`, :func:`mcnemar`, :func:`paired_permutation`) compare two
  allocations on the same questions, conditional on the trained models.

:func:`compare_allocations` runs all of it for every pair of allocations, with a Holm correction
across pairs. Everything is pure numpy (no scipy): the few distribution functions needed (Student-t
quantile, chi-square(1) tail, binomial tail) are written here and tested against known values.
All results are plain JSON-able Python values, and every random step is seeded.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Any, Mapping, Sequence

import numpy as np

from layertracer.errors import LayerTracerError
from layertracer.spec.significance import ALPHA, TESTS as SIGNIFICANCE_TESTS, is_significant

# Rows of an index / sign matrix materialised at once: resamples are processed in chunks of at most
# this many elements, so 10k resamples of 10k questions never hold a 10^8 matrix (800 MB) in memory.
_CHUNK_ELEMENTS = 1 << 22


# --------------------------------------------------------------------------------------------------
# Distribution functions (scalar, float64)
# --------------------------------------------------------------------------------------------------


def _beta_continued_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the regularized incomplete beta (modified Lentz's method).

    Numerical Recipes (3rd ed.) §6.4, ``betacf``: converges quickly for x < (a + 1) / (a + b + 2),
    which is how :func:`regularized_incomplete_beta` calls it. Relative accuracy ~1e-15.
    """
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        # Even step of the fraction.
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        # Odd step.
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-16:
            break
    return h


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b) for a, b > 0 and x in [0, 1].

    Uses the continued fraction on whichever of I_x(a, b) = 1 - I_{1-x}(b, a) converges fast, so the
    small tail is computed directly (not as 1 minus something), which keeps tail quantiles accurate.
    """
    if not (a > 0 and b > 0):
        raise ValueError("the incomplete beta needs a > 0 and b > 0")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_continued_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x) / b


def student_t_sf(t: float, df: float) -> float:
    """P(T > t) for Student's t with ``df`` degrees of freedom (df > 0; ``math.inf`` = normal).

    For t >= 0: P(T > t) = I_{df / (df + t^2)}(df / 2, 1 / 2) / 2 (Abramowitz & Stegun 26.5.27, 26.7.1).
    """
    if math.isinf(df):
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    if t < 0:
        return 1.0 - student_t_sf(-t, df)
    return 0.5 * regularized_incomplete_beta(df / 2.0, 0.5, df / (df + t * t))


def _invert_upper_tail(sf, tail: float) -> float:
    """The x >= 0 with sf(x) = tail, for a decreasing survival function with sf(0) = 1/2.

    Doubles an upper bracket, then bisects to relative precision ~1e-14. Bisection is slower than
    Newton's method but cannot diverge, and these quantiles are computed a handful of times per report.
    """
    low, high = 0.0, 1.0
    while sf(high) > tail:
        low, high = high, high * 2.0
        if high > 1e300:
            return math.inf
    for _ in range(2000):
        mid = 0.5 * (low + high)
        if sf(mid) > tail:
            low = mid
        else:
            high = mid
        if high - low <= 1e-14 * max(high, 1e-300):
            break
    return 0.5 * (low + high)


def normal_ppf(p: float) -> float:
    """The standard normal quantile Φ^{-1}(p) for p in (0, 1) (via erfc, by bisection)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -normal_ppf(1.0 - p)
    return _invert_upper_tail(lambda z: 0.5 * math.erfc(z / math.sqrt(2.0)), 1.0 - p)


def student_t_ppf(p: float, df: float) -> float:
    """The Student-t quantile t_{p, df}: P(T <= t) = p, for p in (0, 1), df > 0 (``math.inf`` = normal).

    Found by inverting :func:`student_t_sf` (the regularized incomplete beta) with bisection on the
    upper tail 1 - p, so e.g. t_{0.975, 4} = 2.776445 and t_{0.975, 29} = 2.045230 to ~1e-12.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    if not df > 0:
        raise ValueError(f"degrees of freedom must be positive, got {df}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -student_t_ppf(1.0 - p, df)
    return _invert_upper_tail(lambda t: student_t_sf(t, df), 1.0 - p)


def chi2_1_sf(x: float) -> float:
    """P(X > x) for a chi-square with 1 degree of freedom: X = Z^2, so P(|Z| > sqrt x) = erfc(sqrt(x/2))."""
    if x <= 0:
        return 1.0
    return math.erfc(math.sqrt(x / 2.0))


def _log_binomial_pmf(k: np.ndarray, n: int, p: float = 0.5) -> np.ndarray:
    """log P(K = k) for K ~ Binomial(n, p), elementwise; log-space so that n in the thousands (where
    2^-n underflows) still works."""
    k = np.asarray(k, dtype=np.float64)
    log_comb = np.array([math.lgamma(n + 1) - math.lgamma(v + 1) - math.lgamma(n - v + 1) for v in k.ravel()])
    return log_comb.reshape(k.shape) + k * math.log(p) + (n - k) * math.log1p(-p)


def binomial_two_sided_half(k: int, n: int) -> float:
    """Two-sided exact p-value of k successes in n trials under p = 1/2.

    The null distribution is symmetric, so "at least as extreme" is |K - n/2| >= |k - n/2|, i.e.
    P = min(1, 2 P(K <= min(k, n - k))); this is the exact McNemar test and the exact sign test.
    """
    if n == 0:
        return 1.0
    low = min(k, n - k)
    log_pmf = _log_binomial_pmf(np.arange(low + 1), n)
    top = float(log_pmf.max())
    tail = math.exp(top) * float(np.exp(log_pmf - top).sum())
    return min(1.0, 2.0 * tail)


# --------------------------------------------------------------------------------------------------
# Input checks
# --------------------------------------------------------------------------------------------------


def _vector(values: Any, what: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1:
        raise LayerTracerError(f"{what} must be one-dimensional (one value per question), got shape {array.shape}")
    if array.size == 0:
        raise LayerTracerError(f"{what} is empty")
    if not np.all(np.isfinite(array)):
        raise LayerTracerError(f"{what} contains NaN or infinite values")
    return array


def _paired(a: Any, b: Any) -> tuple[np.ndarray, np.ndarray]:
    a, b = _vector(a, "a"), _vector(b, "b")
    if a.shape != b.shape:
        raise LayerTracerError(f"paired arrays must have the same length (same questions): {a.size} vs {b.size}")
    return a, b


def _binary(array: np.ndarray, what: str) -> np.ndarray:
    if not np.all((array == 0) | (array == 1)):
        raise LayerTracerError(f"{what} must hold 0/1 correctness values")
    return array.astype(np.int8)


# --------------------------------------------------------------------------------------------------
# Seeds
# --------------------------------------------------------------------------------------------------


def seed_summary(values: Sequence[float], *, level: float = 0.95) -> dict[str, Any]:
    """Mean over seeds with a Student-t interval.

    values: (S,) one number per seed, e.g. accuracy in [0, 1].
    Returns ``mean``, ``std`` (sample standard deviation, ddof = 1; 0.0 for a single seed), ``n`` (= S),
    ``level`` and ``ci_low`` / ``ci_high`` = mean -/+ t_{(1+level)/2, S-1} * std / sqrt(S). With one seed
    there is no spread to estimate, so the interval is ``None`` (JSON null) rather than a
    zero-width interval that would claim certainty.
    """
    if not 0.0 < level < 1.0:
        raise LayerTracerError(f"level must lie in (0, 1), got {level}")
    array = _vector(values, "values")
    n = int(array.size)
    mean = float(array.mean())
    if n == 1:
        return {"mean": mean, "std": 0.0, "n": 1, "level": level, "ci_low": None, "ci_high": None}
    std = float(array.std(ddof=1))
    half = student_t_ppf(0.5 + level / 2.0, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "n": n, "level": level, "ci_low": mean - half, "ci_high": mean + half}


# --------------------------------------------------------------------------------------------------
# Paired tests over questions
# --------------------------------------------------------------------------------------------------


def _bootstrap_means(d: np.ndarray, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples,) means of d over n questions resampled with replacement.

    When d has few distinct values (0/1 data gives d in {-1, 0, 1}; accuracies averaged over S seeds
    give at most 2S + 1 values), a resample is fully described by how often each distinct value was
    drawn, and those counts are Multinomial(n, observed shares): drawing them gives exactly the same
    distribution as resampling indices, in O(resamples * K) instead of O(resamples * n).
    """
    n = d.size
    values, counts = np.unique(d, return_counts=True)
    if values.size == 1:
        return np.full(resamples, values[0])
    if values.size * 4 <= n:
        draws = rng.multinomial(n, counts / n, size=resamples)  # (resamples, K)
        return draws @ values / n
    means = np.empty(resamples)
    rows = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, resamples, rows):
        stop = min(start + rows, resamples)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = d[idx].mean(axis=1)
    return means


def paired_bootstrap_diff(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 10000, level: float = 0.95, seed: int = 0
) -> dict[str, Any]:
    """Bootstrap of the accuracy difference of two allocations on the same questions.

    a, b: (Q,) per-question scores of the two allocations on the same Q questions, either 0/1 or
    per-question accuracy averaged over seeds (in [0, 1]; any finite values work).
    The statistic is diff = mean(a) - mean(b) = mean(a - b). The bootstrap resamples questions with
    replacement, i.e. the (a_i, b_i) pairs together, so the pairing is kept.

    Returns ``diff``; ``ci_low`` / ``ci_high``: the percentile interval at ``level`` of the
    ``resamples`` bootstrap means; ``p_value``: two-sided, from the bootstrap distribution shifted to
    the null (Hall & Wilson 1991): p = (1 + #{|diff*_b - diff| >= |diff|}) / (resamples + 1), the share
    of centred resamples at least as far from 0 as the observed difference (the +1 counts the observed
    sample itself, so p is never 0); plus ``n``, ``resamples``, ``level``.
    """
    a, b = _paired(a, b)
    if resamples < 1:
        raise LayerTracerError("resamples must be at least 1")
    if not 0.0 < level < 1.0:
        raise LayerTracerError(f"level must lie in (0, 1), got {level}")
    d = a - b
    diff = float(d.mean())
    rng = np.random.default_rng(seed)
    means = _bootstrap_means(d, resamples, rng)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    # Ties of |diff* - diff| with |diff| happen on lattice data; a relative tolerance keeps float
    # rounding of the two ways of computing a mean from deciding them.
    tolerance = 1e-12 * max(1.0, float(np.abs(d).max()))
    extreme = int(np.count_nonzero(np.abs(means - diff) >= abs(diff) - tolerance))
    return {
        "diff": diff,
        "ci_low": float(low),
        "ci_high": float(high),
        "p_value": (1 + extreme) / (resamples + 1),
        "n": int(d.size),
        "resamples": int(resamples),
        "level": level,
    }


def mcnemar(a: Sequence[int], b: Sequence[int], *, exact_below: int = 25) -> dict[str, Any]:
    """McNemar's test for two allocations scored 0/1 on the same questions.

    a, b: (Q,) 0/1. ``b01`` = questions a got wrong and b right; ``b10`` = a right, b wrong; only
    these discordant questions carry information. With n = b01 + b10:

    - n < ``exact_below`` (25): exact binomial test, p = min(1, 2 P(K <= min(b01, b10))) with
      K ~ Binomial(n, 1/2); ``statistic`` = min(b01, b10); ``method`` = ``exact-binomial``;
    - otherwise: chi-square with continuity correction, statistic = max(|b01 - b10| - 1, 0)^2 / n,
      p = P(chi2(1) > statistic); ``method`` = ``chi2-continuity``. (The max(., 0) makes b01 = b10
      give p = 1 rather than the slightly smaller value of the raw (|b01 - b10| - 1)^2.)
    No discordant pairs: p = 1.
    """
    a, b = _paired(a, b)
    a, b = _binary(a, "a"), _binary(b, "b")
    b01 = int(np.count_nonzero((a == 0) & (b == 1)))
    b10 = int(np.count_nonzero((a == 1) & (b == 0)))
    n = b01 + b10
    if n < exact_below:
        return {
            "b01": b01,
            "b10": b10,
            "statistic": float(min(b01, b10)),
            "p_value": binomial_two_sided_half(b01, n),
            "method": "exact-binomial",
        }
    statistic = max(abs(b01 - b10) - 1, 0) ** 2 / n
    return {"b01": b01, "b10": b10, "statistic": float(statistic), "p_value": chi2_1_sf(statistic), "method": "chi2-continuity"}


def _sign_patterns(m: int, start: int, stop: int) -> np.ndarray:
    """Rows start..stop-1 of the 2^m sign patterns: (stop - start, m) of +-1 (bit j of the row index)."""
    codes = np.arange(start, stop, dtype=np.int64)[:, None]
    bits = (codes >> np.arange(m, dtype=np.int64)) & 1
    return (bits * 2 - 1).astype(np.float64)


def paired_permutation(
    a: Sequence[float], b: Sequence[float], *, resamples: int = 10000, seed: int = 0, exact_max: int = 16
) -> dict[str, Any]:
    """Sign-flip permutation test of mean(a - b) = 0 on paired per-question scores.

    a, b: (Q,) per-question scores of two allocations (0/1 or seed-averaged accuracy). Under the null
    the two labels of each question are exchangeable, so each difference d_i = a_i - b_i is equally
    likely +d_i or -d_i. Two-sided p-value: P(|sum s_i d_i| >= |sum d_i|) over random signs s.
    Questions with d_i = 0 do not change the sum, so only the m non-zero differences are flipped.

    ``method``:
    - ``exact-binomial`` when all non-zero |d_i| are equal (always the case for 0/1 data): the sum is
      |d| (2K - m) with K ~ Binomial(m, 1/2), so the exact p-value is a binomial tail (for 0/1 data it
      equals the exact McNemar p-value), for any m;
    - ``exact-enumeration`` when m <= ``exact_max``: all 2^m sign patterns;
    - ``monte-carlo`` otherwise: ``resamples`` random sign patterns, p = (1 + #extreme) / (resamples + 1).
    Returns ``diff`` (= mean(a - b)), ``p_value``, ``method``, ``m`` (non-zero pairs), ``resamples``
    (0 when exact).
    """
    a, b = _paired(a, b)
    if resamples < 1:
        raise LayerTracerError("resamples must be at least 1")
    d = a - b
    diff = float(d.mean())
    nonzero = d[d != 0]
    m = int(nonzero.size)
    result = {"diff": diff, "m": m, "resamples": 0}
    if m == 0:
        return {**result, "p_value": 1.0, "method": "exact-enumeration"}
    observed = float(nonzero.sum())
    magnitudes = np.abs(nonzero)
    # Sums of the same magnitudes in different orders differ by rounding only; a tolerance far below
    # any real gap between attainable sums keeps ties (e.g. the mirror pattern) counted as extreme.
    tolerance = 1e-9 * float(magnitudes.sum())
    if np.all(magnitudes == magnitudes[0]):
        positives = int(np.count_nonzero(nonzero > 0))
        return {**result, "p_value": binomial_two_sided_half(positives, m), "method": "exact-binomial"}
    if m <= exact_max:
        total = 1 << m
        extreme = 0
        rows = max(1, _CHUNK_ELEMENTS // m)
        for start in range(0, total, rows):
            sums = _sign_patterns(m, start, min(start + rows, total)) @ nonzero
            extreme += int(np.count_nonzero(np.abs(sums) >= abs(observed) - tolerance))
        return {**result, "p_value": extreme / total, "method": "exact-enumeration"}
    rng = np.random.default_rng(seed)
    values, counts = np.unique(magnitudes, return_counts=True)
    if values.size * 4 <= m:
        # Few distinct magnitudes v with c_v copies: the flipped sum is sum_v v (2 K_v - c_v) with
        # K_v ~ Binomial(c_v, 1/2), the same distribution as flipping every copy, far cheaper.
        positive = rng.binomial(counts, 0.5, size=(resamples, values.size))
        sums = (2 * positive - counts) @ values
    else:
        sums = np.empty(resamples)
        rows = max(1, _CHUNK_ELEMENTS // m)
        for start in range(0, resamples, rows):
            stop = min(start + rows, resamples)
            signs = rng.integers(0, 2, size=(stop - start, m), dtype=np.int8) * 2 - 1
            sums[start:stop] = signs @ magnitudes
    # Flipping signs of |d| or of d gives the same distribution, so |d| is used above.
    extreme = int(np.count_nonzero(np.abs(sums) >= abs(observed) - tolerance))
    return {**result, "p_value": (1 + extreme) / (resamples + 1), "method": "monte-carlo", "resamples": int(resamples)}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (controls the family-wise error rate).

    Sorted ascending p_(1) <= ... <= p_(m): adjusted p_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)),
    returned in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64)
    m = p.size
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.maximum.accumulate(scaled)
    return [float(x) for x in adjusted]


# --------------------------------------------------------------------------------------------------
# The whole experiment
# --------------------------------------------------------------------------------------------------

MCNEMAR_BASES = ("majority", "pooled")


def _allocation_matrix(name: str, values: Any) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        raise LayerTracerError(f"allocation {name!r}: expected a (seeds, questions) array, got shape {array.shape}")
    if not np.all((array == 0) | (array == 1)):
        raise LayerTracerError(f"allocation {name!r}: per-question results must be 0/1")
    return array


def compare_allocations(
    per_question: Mapping[str, Any],
    *,
    resamples: int = 10000,
    level: float = 0.95,
    seed: int = 0,
    mcnemar_basis: str = "majority",
) -> dict[str, Any]:
    """Every pairwise comparison of an experiment's allocations, with a Holm correction across pairs.

    per_question: allocation name -> (seeds, questions) array of 0/1 (a 1-D array is one seed). All
    allocations must share the same questions in the same order; seed counts may differ (except for
    ``mcnemar_basis="pooled"``).

    Returns a JSON-able dict:

    - ``allocations``: name -> :func:`seed_summary` of the per-seed accuracies (mean over questions),
      plus ``accuracy_per_seed`` (S,) and ``seeds``;
    - ``comparisons``: one entry per unordered pair (in the order of ``per_question``), for a - b:
      ``a``, ``b``, ``accuracy_a``, ``accuracy_b`` and ``diff`` (mean over questions of the
      seed-averaged per-question accuracy), ``ci_low`` / ``ci_high`` (paired bootstrap over
      questions of the seed-averaged accuracies), and per test ``bootstrap`` / ``mcnemar`` /
      ``permutation`` with the raw ``p_value`` and the Holm-adjusted ``p_adjusted``, and
      ``significant`` (``layertracer.spec.significance``: all three Holm p-values below ``alpha``);
    - ``n_questions``, ``level``, ``resamples``, ``seed``, ``mcnemar_basis``, ``correction``,
      ``methods`` (a sentence per test).

    McNemar needs one 0/1 outcome per question and allocation. ``majority`` (default): a question
    counts as correct when more than half of the allocation's seeds got it right (with an even seed
    count, exactly half counts as wrong; ``majority_ties_a`` / ``_b`` report how many questions that
    affected). Majority votes over different seed counts are not comparable (a majority of five seeds
    is a stronger ensemble than a majority of three even when the allocations are the same), so such
    pairs carry a ``note``. ``pooled``: every (seed, question) pair of seed s of a with seed s of b is one pair; it
    treats the seeds' answers to the same question as independent, so its p-values are too small when
    seeds agree; it is there to reproduce papers that pool.

    The bootstrap and permutation tests use the seed-averaged per-question accuracies, so they are
    conditional on the trained seeds; the seed-to-seed spread is in ``allocations``. Every pair uses
    the same ``seed``, so a pair's numbers do not depend on which other allocations are compared.
    Holm is applied separately to each test's p-values over the pairs.
    """
    if mcnemar_basis not in MCNEMAR_BASES:
        raise LayerTracerError(f"unknown McNemar basis {mcnemar_basis!r}; use one of {', '.join(MCNEMAR_BASES)}")
    if len(per_question) < 2:
        raise LayerTracerError("comparing allocations needs at least two of them")
    matrices = {str(name): _allocation_matrix(str(name), values) for name, values in per_question.items()}
    questions = {m.shape[1] for m in matrices.values()}
    if len(questions) != 1:
        sizes = ", ".join(f"{name}: {m.shape[1]}" for name, m in matrices.items())
        raise LayerTracerError(f"allocations must be evaluated on the same questions; question counts differ ({sizes})")
    n_questions = questions.pop()

    allocations: dict[str, Any] = {}
    for name, matrix in matrices.items():
        per_seed = matrix.mean(axis=1)
        allocations[name] = {
            **seed_summary(per_seed, level=level),
            "seeds": int(matrix.shape[0]),
            "accuracy_per_seed": [float(x) for x in per_seed],
        }

    comparisons: list[dict[str, Any]] = []
    for name_a, name_b in combinations(matrices, 2):
        ma, mb = matrices[name_a], matrices[name_b]
        acc_a, acc_b = ma.mean(axis=0), mb.mean(axis=0)  # (Q,) seed-averaged per-question accuracy
        boot = paired_bootstrap_diff(acc_a, acc_b, resamples=resamples, level=level, seed=seed)
        perm = paired_permutation(acc_a, acc_b, resamples=resamples, seed=seed)
        extra: dict[str, Any] = {"basis": mcnemar_basis}
        if mcnemar_basis == "majority":
            vote_a = (2 * ma.sum(axis=0) > ma.shape[0]).astype(np.int8)
            vote_b = (2 * mb.sum(axis=0) > mb.shape[0]).astype(np.int8)
            extra["majority_ties_a"] = int(np.count_nonzero(2 * ma.sum(axis=0) == ma.shape[0]))
            extra["majority_ties_b"] = int(np.count_nonzero(2 * mb.sum(axis=0) == mb.shape[0]))
            test = mcnemar(vote_a, vote_b)
            if ma.shape[0] != mb.shape[0]:
                # A majority of more seeds is a stronger ensemble than a majority of fewer, even for
                # identical allocations, so the test then also measures the seed counts.
                extra["note"] = (
                    f"majority votes over different seed counts ({ma.shape[0]} vs {mb.shape[0]}) are not "
                    "comparable; prefer equal seed counts"
                )
        else:
            if ma.shape[0] != mb.shape[0]:
                raise LayerTracerError(
                    f"pooled McNemar pairs seed s of {name_a!r} with seed s of {name_b!r}, but they have "
                    f"{ma.shape[0]} and {mb.shape[0]} seeds"
                )
            test = mcnemar(ma.ravel(), mb.ravel())
        comparisons.append(
            {
                "a": name_a,
                "b": name_b,
                "accuracy_a": float(acc_a.mean()),
                "accuracy_b": float(acc_b.mean()),
                "diff": boot["diff"],
                "ci_low": boot["ci_low"],
                "ci_high": boot["ci_high"],
                "bootstrap": {"p_value": boot["p_value"]},
                "mcnemar": {**test, **extra},
                "permutation": {"p_value": perm["p_value"], "method": perm["method"]},
            }
        )
    for test_name in SIGNIFICANCE_TESTS:
        adjusted = holm([c[test_name]["p_value"] for c in comparisons])
        for comparison, value in zip(comparisons, adjusted):
            comparison[test_name]["p_adjusted"] = value
    for comparison in comparisons:
        comparison["significant"] = is_significant(comparison)

    return {
        "n_questions": int(n_questions),
        "level": level,
        "resamples": int(resamples),
        "seed": int(seed),
        "mcnemar_basis": mcnemar_basis,
        "correction": "holm",
        "alpha": ALPHA,
        "allocations": allocations,
        "comparisons": comparisons,
        "methods": {
            "seed_summary": "mean of per-seed accuracies, sample std (ddof=1), Student-t interval over seeds",
            "bootstrap": "paired percentile bootstrap over questions of seed-averaged accuracy; two-sided p "
            "from the null-centred bootstrap distribution, (1 + #extreme) / (resamples + 1)",
            "mcnemar": "exact binomial below 25 discordant questions, else chi-square(1) with continuity "
            f"correction; outcomes per question: {mcnemar_basis}",
            "permutation": "paired sign-flip test on seed-averaged per-question differences (exact when "
            "possible, else Monte Carlo)",
            "correction": "Holm step-down over the pairs, separately per test",
        },
    }


__all__ = [
    "MCNEMAR_BASES",
    "binomial_two_sided_half",
    "chi2_1_sf",
    "compare_allocations",
    "holm",
    "mcnemar",
    "normal_ppf",
    "paired_bootstrap_diff",
    "paired_permutation",
    "regularized_incomplete_beta",
    "seed_summary",
    "student_t_ppf",
    "student_t_sf",
]
