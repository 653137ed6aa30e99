"""sepkit.stats and python -m sepkit.bin.compare on synthetic grids of known answer.

Checked: the set-level figure and the seed mean / sd / t-interval against hand computations, the
paired difference against the difference of the set-level means, the bootstrap interval's coverage
of a known difference, verdicts that follow the data, the paper's numbers beside the paper's sets,
the PNG, and one-line errors on bad input.
"""
import math
import re

import numpy as np
import pytest

from sepkit import stats
from sepkit.bin import compare
from sepkit.bin.score import per_utt_csv

SECONDS = [2.0, 4.0, 6.0, 8.0]


def write_run(ddir, test_set, head, vocals, accomp=None, seconds=SECONDS, utts=None):
    """``ddir/score_<set>_<head>/per_utt.csv`` in sepkit.bin.score's format (SI-SDRi and NSDR columns)."""
    accomp = vocals if accomp is None else accomp
    rows = [{"utt": u, "seconds": s, "perm": [0, 1], "si_sdri": [v, m], "nsdr": [v + 1, m + 1]}
            for u, s, v, m in zip(utts or [f"utt{i}" for i in range(len(vocals))], seconds, vocals, accomp)]
    out = ddir / f"score_{test_set}_{head}"
    out.mkdir(parents=True)
    (out / "per_utt.csv").write_text(per_utt_csv(rows, ["vocals", "accompaniment"]))


def write_grid(grid, runs):
    """``runs``: {(system, seed): {(set, head): vocals values}} -> grid/runs.tsv and the score dirs."""
    lines = ["system\tseed\tdecode_dir\tseconds\tconfig\toverrides"]
    for (system, seed), scores in runs.items():
        rel = f"{system}/seed{seed}"
        for (test_set, head), vals in scores.items():
            write_run(grid / rel, test_set, head, vals)
        lines.append(f"{system}\t{seed}\t{rel}\t10.0\tconf/x.yaml\t")
    grid.mkdir(parents=True, exist_ok=True)
    (grid / "runs.tsv").write_text("\n".join(lines) + "\n")
    return grid


def table_row(text, label, section):
    part = text[text.index(section):]
    m = re.search(rf"^\| {re.escape(label)} \|(.*)\|$", part, re.M)
    assert m, f"no row {label} under {section}:\n{part[:2000]}"
    return [c.strip() for c in m.group(1).split("|")]


# ------------------------------------------------------------------------------------------ arithmetic
def test_set_level_and_seed_summary_by_hand():
    assert stats.set_level([1.0, 3.0, math.nan], [1.0, 3.0, 5.0]) == pytest.approx((1 * 1 + 3 * 3) / 4)
    assert math.isnan(stats.set_level([math.nan], [1.0]))
    s = stats.seed_summary([1.0, 2.0, 4.0])
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert (s["n"], s["mean"], s["std"]) == (3, pytest.approx(7 / 3), pytest.approx(sd))
    assert (s["lo"], s["hi"]) == (pytest.approx(7 / 3 - half), pytest.approx(7 / 3 + half))
    one = stats.seed_summary([5.0])
    assert one["mean"] == 5.0 and math.isnan(one["std"]) and math.isnan(one["lo"])


def test_tables_match_a_hand_computation(tmp_path):
    a = {0: [1.0, 2.0, 3.0, 4.0], 1: [2.0, 2.0, 2.0, 2.0], 2: [0.0, 1.0, 5.0, 3.0]}
    b = {0: [0.0, 0.0, 1.0, 1.0], 1: [1.0, 1.0, 1.0, 1.0], 2: [0.5, 0.5, 0.5, 0.5]}
    runs = {("A", s): {("test", "mi"): v} for s, v in a.items()}
    runs.update({("B", s): {("test", "mi"): v, ("test", "dc"): v} for s, v in b.items()})
    grid = write_grid(tmp_path / "grid", runs)
    out = tmp_path / "COMPARE.md"
    assert compare.main(["--metrics", "si_sdri,gnsdr", "--pair", "A > B-MI", "--out", str(out), str(grid)]) == 0
    text = out.read_text()
    # by hand: length-weighted means, lengths 2, 4, 6, 8 (sum 20)
    fig_a = [(2 * 1 + 4 * 2 + 6 * 3 + 8 * 4) / 20, 2.0, (0 + 4 * 1 + 6 * 5 + 8 * 3) / 20]  # 3.0, 2.0, 2.9
    fig_b = [(6 + 8) / 20, 1.0, 0.5]  # 0.7, 1.0, 0.5
    mean_a, sd_a = sum(fig_a) / 3, math.sqrt(sum((x - sum(fig_a) / 3) ** 2 for x in fig_a) / 2)
    half_a = 4.302652729911275 * sd_a / math.sqrt(3)
    row = table_row(text, "A", "## test: SI-SDRi")
    assert row[0] == "3"
    assert row[1:4] == [f"{mean_a:.2f}", f"{sd_a:.2f}", f"[{mean_a - half_a:.2f}, {mean_a + half_a:.2f}]"]
    assert table_row(text, "A", "## test: GNSDR")[1] == f"{mean_a + 1:.2f}"  # NSDR = SI-SDRi + 1 here
    assert table_row(text, "B-DC", "## test: SI-SDRi")[1] == f"{sum(fig_b) / 3:.2f}"
    # the paired difference averaged over seeds = difference of the seed means of the set-level figures
    claim = [r for r in text.splitlines() if r.startswith("| A > B-MI | test | SI-SDRi | vocals")][0]
    assert f"{sum(fig_a) / 3 - sum(fig_b) / 3:+.2f}" in claim
    assert "| 4 | 3/3 |" in claim


def test_paper_numbers_only_beside_the_papers_sets(tmp_path):
    runs = {("CHI_0.1", s): {(t, h): [5.0 + s, 5.0, 5.0, 5.0] for t in ("test_remix", "mine") for h in ("mi", "dc")}
            for s in (0, 1)}
    runs.update({("MI", s): {(t, "mi"): [4.0, 4.0, 4.0, 4.0 + s] for t in ("test_remix", "mine")} for s in (0, 1)})
    grid = write_grid(tmp_path / "g", runs)
    out = tmp_path / "c.md"
    assert compare.main(["--pair", "CHI_0.1-MI > MI", "--out", str(out), str(grid)]) == 0
    text = out.read_text()
    assert table_row(text, "CHI_0.1-MI", "## test_remix: SI-SDRi")[4] == "5.5"  # Table 2, DSD100-remix, V
    assert table_row(text, "MI", "## test_remix: SI-SDRi")[-1] == "6.7"  # accompaniment
    assert "paper" not in text[text.index("## mine"):text.index("## test_remix")].split("\n")[2]
    assert re.search(r"\| CHI_0.1-MI > MI \| mine \| SI-SDRi \| vocals \|.*\| \+0\.7 / \+1\.2 \|", text)


# ------------------------------------------------------------------------------------------ bootstrap
def _simulate(rng, true, seeds, files, file_sd=3.0, inter_sd=0.8, seed_sd=0.3, noise_sd=0.5):
    """Per-seed, per-file scores of A and B on shared files; E[A - B] over files and seeds = ``true``."""
    f = rng.normal(0, file_sd, files)

    def system(mu):
        return (mu + f + rng.normal(0, inter_sd, files) + rng.normal(0, seed_sd, (seeds, 1))
                + rng.normal(0, noise_sd, (seeds, files)))

    return system(true), system(0.0), rng.uniform(2, 10, files)


def test_bootstrap_interval_covers_the_true_difference():
    rng = np.random.default_rng(7)
    a, b, w = _simulate(rng, 0.4, 3, 200, seed_sd=0.05)
    r = stats.paired_bootstrap(a, b, w, n_boot=2000)
    assert r["lo"] < 0.4 < r["hi"] and r["lo"] > 0  # covers the truth, and is narrow enough to exclude 0
    assert r["diff"] == pytest.approx((w * (a.mean(0) - b.mean(0))).sum() / w.sum())
    for seeds, files in ((3, 30), (5, 20)):  # coverage over repeats: near the nominal 95%
        hits = 0
        for k in range(150):
            a, b, w = _simulate(rng, 0.3, seeds, files)
            r = stats.paired_bootstrap(a, b, w, n_boot=800, seed=k)
            hits += r["lo"] <= 0.3 <= r["hi"]
        assert 0.87 <= hits / 150 <= 0.995, (seeds, files, hits)


def test_bootstrap_interval_widens_with_seed_noise_and_drops_undefined_files():
    rng = np.random.default_rng(1)
    a, b, w = _simulate(rng, 0.3, 3, 50, seed_sd=0.0, noise_sd=0.0)
    calm = stats.paired_bootstrap(a, b, w)
    a2 = a + np.array([[-2.0], [0.0], [2.0]])  # the same files, seeds that disagree
    noisy = stats.paired_bootstrap(a2, b, w)
    assert noisy["hi"] - noisy["lo"] > 3 * (calm["hi"] - calm["lo"])
    a[1, 4] = math.nan
    assert stats.paired_bootstrap(a, b, w)["n_files"] == 49


def test_few_seeds_are_not_taken_for_the_whole_spread():
    # A's 3 seeds score 0, 1, 2 on every file: sd 1, so the interval of the seed mean should reach
    # 1 -+ sqrt(3/2) (all three draws the lowest / highest seed after scaling deviations by
    # sqrt(S/(S-1))), not 0 and 2 (the plain bootstrap, whose variance is 2/3 of the right one)
    a = np.repeat(np.array([[0.0], [1.0], [2.0]]), 30, axis=1)
    r = stats.paired_bootstrap(a, np.zeros((1, 30)), np.ones(30), n_boot=4000)
    assert r["diff"] == pytest.approx(1.0)
    assert (r["lo"], r["hi"]) == (pytest.approx(1 - math.sqrt(1.5)), pytest.approx(1 + math.sqrt(1.5)))


def test_verdict_follows_the_data(tmp_path):
    rng = np.random.default_rng(3)
    files = rng.normal(5, 2, 4)  # files differ a lot, seeds little
    base = {s: files + rng.normal(0, 0.1, 4) for s in (0, 1, 2)}
    cases = {"better": 1.5, "worse": -1.5, "same": 0.0}
    for name, shift in cases.items():
        runs = {("B", s): {("t", "mi"): list(v)} for s, v in base.items()}
        runs.update({("A", s): {("t", "mi"): list(v + shift + rng.normal(0, 0.1, 4))}
                     for s, v in base.items()})
        grid = write_grid(tmp_path / name, runs)
        out = tmp_path / f"{name}.md"
        assert compare.main(["--pair", "A > B", "--pair", "B > A", "--out", str(out), str(grid)]) == 0
        text = out.read_text()
        ab = re.search(r"^\| A > B \| t \| SI-SDRi \| vocals \|.*\*\*(\w+)\*\*", text, re.M).group(1)
        ba = re.search(r"^\| B > A \| t \| SI-SDRi \| vocals \|.*\*\*(\w+)\*\*", text, re.M).group(1)
        want = {"better": ("holds", "reversed"), "worse": ("reversed", "holds"),
                "same": ("inconclusive", "inconclusive")}[name]
        assert (ab, ba) == want, (name, text)
    assert stats.verdict(0.1, 0.5) == "holds" and stats.verdict(-0.5, -0.1) == "reversed"
    assert stats.verdict(-0.1, 0.1) == stats.verdict(math.nan, 1.0) == "inconclusive"


# ------------------------------------------------------------------------------------------ outputs and errors
def test_plot_is_a_png_with_one_panel_per_set(tmp_path):
    from PIL import Image

    runs = {(sy, s): {(t, "mi"): [s + i + (sy == "A") for i in range(4)] for t in ("x", "y")}
            for sy in ("A", "B") for s in (0, 1, 2)}
    grid = write_grid(tmp_path / "g", runs)
    png = tmp_path / "out" / "p.png"
    assert compare.main(["--out", "", "--plot", str(png), str(grid)]) == 0
    img = Image.open(png)
    assert img.format == "PNG" and img.size[0] == 900 and img.size[1] > 2 * 2 * 26
    assert len(img.convert("RGB").getcolors(1 << 20)) > 3  # something was drawn


@pytest.mark.parametrize("case", ["no_runs", "bad_pair", "other_files", "bad_metric", "bad_tsv"])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, case):
    runs = {(sy, s): {("t", "mi"): [1.0, 2.0, 3.0, 4.0]} for sy in ("A", "B") for s in (0, 1)}
    grid = write_grid(tmp_path / "g", runs)
    args = ["--out", str(tmp_path / "c.md"), "--plot", str(tmp_path / "c.png"), str(grid)]
    if case == "no_runs":
        args[-1] = str(tmp_path / "nowhere")
    elif case == "bad_pair":
        args = ["--pair", "A > Z"] + args
    elif case == "other_files":
        write_run(grid / "B" / "seed2", "t", "mi", [1.0] * 4, utts=["u0", "u1", "u2", "u3"])
        with open(grid / "runs.tsv", "a") as f:
            f.write("B\t2\tB/seed2\t1.0\tx\t\n")
    elif case == "bad_metric":
        args = ["--metrics", "sdr"] + args
    else:
        (grid / "runs.tsv").write_text("system\tseed\nA\tzero\n")
    assert compare.main(args) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("compare: ") and "\n" not in err, err
    assert not (tmp_path / "c.md").exists() and not (tmp_path / "c.png").exists()
