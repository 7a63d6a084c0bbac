"""The scaling study's power-law fit, the crossing of two fitted lines, and the Monte Carlo uncertainty."""

import json
import math

import numpy as np
import pytest

from retnet.compare.scaling_fit import PowerLaw, crossing, fit_power_law, monte_carlo, noise_from_seeds

SIZES = [1e6, 3e6, 1e7, 3e7, 1e8]


def test_fit_recovers_known_power_law_exactly_and_under_noise():
    law = fit_power_law(SIZES, [5.0 * n**-0.076 for n in SIZES])
    assert law.a == pytest.approx(5.0, rel=1e-10) and law.alpha == pytest.approx(0.076, rel=1e-10)
    assert law.points == 5 and law.rms_residual < 1e-12
    assert law(1e9) == pytest.approx(5.0 * 1e9**-0.076)
    rng = np.random.default_rng(1)
    xs = np.repeat(SIZES, 40)
    noisy = 12.0 * xs**-0.2 * np.exp(rng.normal(0, 0.01, xs.shape))
    fit = fit_power_law(xs, noisy)
    assert abs(fit.alpha - 0.2) < 0.005 and abs(fit.a / 12.0 - 1) < 0.1 and 0.005 < fit.rms_residual < 0.02


def test_fit_refuses_what_it_cannot_fit():
    with pytest.raises(ValueError, match="two or more distinct sizes"):
        fit_power_law([1e6, 1e6], [3.0, 3.1])
    with pytest.raises(ValueError, match="finite and positive"):
        fit_power_law([1e6, 1e7], [3.0, math.nan])
    with pytest.raises(ValueError, match="one length"):
        fit_power_law([1e6, 1e7], [3.0])


def test_crossing_no_crossing_and_parallel_on_synthetic_lines():
    transformer, retnet = PowerLaw(4.0, 0.05, 4, 0.0), PowerLaw(8.0, 0.09, 4, 0.0)
    # 4 x^-0.05 = 8 x^-0.09  ->  x = 2^(1/0.04)
    c = crossing(transformer, retnet, (1e6, 1e12))
    assert c.kind == "crossing" and c.x == pytest.approx(2**25, rel=1e-9) and c.ahead_beyond == "second"
    assert crossing(retnet, transformer, (1e6, 1e12)).ahead_beyond == "first"  # the steeper line wins beyond
    far = crossing(transformer, retnet, (1e6, 1e7))
    assert far.kind == "no crossing" and far.x == pytest.approx(2**25, rel=1e-9)
    below = crossing(PowerLaw(4.0, 0.05, 4, 0.0), PowerLaw(3.0, 0.06, 4, 0.0), (1e6, 1e12))
    assert below.kind == "no crossing" and below.x < 1e6  # they met below the range: diverging over it
    parallel = crossing(PowerLaw(4.0, 0.07, 4, 0.0), PowerLaw(3.5, 0.07, 4, 0.0), (1e6, 1e12))
    assert (parallel.kind, parallel.x, parallel.ahead_beyond) == ("parallel", None, "second")
    with pytest.raises(ValueError, match="0 < low < high"):
        crossing(transformer, retnet, (1e7, 1e6))


def test_noise_is_the_pooled_seed_spread_of_log_loss():
    sigma = noise_from_seeds({"retnet": [3.0, 3.0 * math.exp(0.02)], "transformer": [2.9], "h3": [4.0, 4.0]})
    # variances of log L: 0.0002 (one degree of freedom) and 0 (one): pooled 0.0001
    assert sigma == pytest.approx(0.01, rel=1e-9)
    assert noise_from_seeds({"retnet": [3.0], "transformer": [2.9]}) is None


def test_monte_carlo_is_deterministic_with_a_seed_and_brackets_the_truth():
    points = {
        "transformer": (SIZES, [4.0 * n**-0.05 for n in SIZES]),
        "retnet": (SIZES, [8.0 * n**-0.09 for n in SIZES]),
    }
    first = monte_carlo(points, 0.002, (1e6, 1e12), draws=400, seed=3)
    assert first == monte_carlo(points, 0.002, (1e6, 1e12), draws=400, seed=3)
    assert first != monte_carlo(points, 0.002, (1e6, 1e12), draws=400, seed=4)
    a = first["alpha"]["retnet"]
    assert a["p16"] < 0.09 < a["p84"] and 0 < a["std"] < 0.01
    q = first["crossing"]["log10_x"]
    assert q["p16"] < 25 * math.log10(2) < q["p84"] and first["crossing"]["fraction_crossing"] > 0.9
    exact = monte_carlo(points, 0.0, (1e6, 1e12), draws=5)
    assert exact["alpha"]["retnet"]["std"] == pytest.approx(0.0, abs=1e-12)
    assert exact["crossing"]["log10_x"]["median"] == pytest.approx(25 * math.log10(2))
    with pytest.raises(ValueError, match="exactly two"):
        monte_carlo({"retnet": points["retnet"]}, 0.01, (1e6, 1e12))
    with pytest.raises(ValueError, match="sigma"):
        monte_carlo(points, -1.0, (1e6, 1e12))


def _rows(losses_by_arch, sizes=SIZES):
    rows = []
    for arch, law in losses_by_arch.items():
        for i, n in enumerate(sizes):
            for seed in (0, 1) if i == 0 else (0,):
                loss = law(n) * (1.01 if seed else 1.0)
                result = {
                    "parameters": int(n),
                    "total_parameters": int(n) + 1000,
                    "train": {"tokens": int(2 * n)},
                    "config": {"vocab_size": 10, "hidden_size": 50},
                    "eval": {"in_domain": {"loss": loss}},
                }
                rows.append({"size": f"s{i}", "arch": arch, "seed": seed, "result": result})
    return rows


def test_report_analysis_on_synthetic_runs_says_which_way_it_falls():
    from retnet.compare.scaling_report import analyse, crossing_text

    scaling = {"archs": ["transformer", "retnet"], "crossing_max": 1e12, "tokens_per_parameter": 2.0,
               "mc_draws": 100, "mc_seed": 0}  # fmt: skip
    laws = {"transformer": PowerLaw(4.0, 0.05, 5, 0.0), "retnet": PowerLaw(8.0, 0.09, 5, 0.0)}
    doc = analyse(_rows(laws), scaling)
    # the smallest size's two seeds differ by 1 %: geometric mean, and the noise is their spread
    assert doc["noise"]["sigma_log_loss"] == pytest.approx(math.log(1.01) / math.sqrt(2), rel=1e-9)
    assert doc["fits"]["retnet"]["parameters"]["alpha"] == pytest.approx(0.09, abs=2e-3)
    assert doc["crossing"]["parameters"]["kind"] == "crossing"
    assert doc["crossing"]["parameters"]["ahead_beyond"] == "retnet"
    text = crossing_text(doc, "parameters", scaling["archs"])
    assert "cross at 3.36e+07 parameters (inside the measured range)" in text and "beyond it RetNet is ahead" in text
    assert "draws cross within the range" in text
    diverging = analyse(_rows({"transformer": PowerLaw(4.0, 0.05, 5, 0.0), "retnet": PowerLaw(3.0, 0.06, 5, 0.0)}),
                        scaling)  # fmt: skip
    assert diverging["crossing"]["parameters"]["kind"] == "no crossing"
    assert "no crossing within" in crossing_text(diverging, "parameters", scaling["archs"])
    parallel = analyse(_rows({"transformer": PowerLaw(4.0, 0.07, 5, 0.0), "retnet": PowerLaw(3.0, 0.07, 5, 0.0)}),
                       scaling)  # fmt: skip
    assert parallel["crossing"]["parameters"]["kind"] == "parallel"
    assert crossing_text(parallel, "parameters", scaling["archs"]).startswith("parallel")
    one_size = [r for r in _rows(laws) if r["arch"] == "transformer" or r["size"] == "s0"]
    partial = analyse(one_size, scaling)
    assert set(partial["fits"]) == {"transformer"} and partial["crossing"] == {}
    assert any("RetNet: finished runs at 1 size(s); no fit" in n for n in partial["notes"])
    beyond = analyse(_rows(laws, sizes=SIZES[:3]), scaling)  # measured up to 1e7: the crossing is extrapolated
    assert "(3.36× the largest measured, an extrapolation)" in crossing_text(beyond, "parameters", scaling["archs"])
    assert not any("understate" in n for n in doc["notes"])  # the points lie on the lines within the seed noise
    curved = analyse(_rows({a: (lambda n: 1.0 + 1e3 * n**-0.5) for a in laws}), scaling)  # a floor under the loss
    assert any("pure power law does not describe these points" in n for n in curved["notes"])


def test_the_noise_pools_every_size_with_two_seeds():
    from retnet.compare.scaling_report import analyse

    scaling = {"archs": ["transformer", "retnet"], "crossing_max": 1e12, "tokens_per_parameter": 2.0,
               "mc_draws": 10, "mc_seed": 0}  # fmt: skip
    laws = {"transformer": PowerLaw(4.0, 0.05, 5, 0.0), "retnet": PowerLaw(8.0, 0.09, 5, 0.0)}
    rows = _rows(laws)
    for row in [r for r in rows if r["size"] == "s2"]:  # a second seed at a larger size, 5 % apart
        second = json.loads(json.dumps(row))
        second["seed"] = 1
        second["result"]["eval"]["in_domain"]["loss"] *= 1.05
        rows.append(second)
    doc = analyse(rows, scaling)
    # one degree of freedom per (architecture, size): variances log(1.01)²/2 twice and log(1.05)²/2 twice
    expected = math.sqrt((math.log(1.01) ** 2 + math.log(1.05) ** 2) / 4)
    assert doc["noise"]["sigma_log_loss"] == pytest.approx(expected, rel=1e-9)
    assert doc["noise"]["sizes"] == ["s0", "s2"] and doc["noise"]["groups"] == 4
