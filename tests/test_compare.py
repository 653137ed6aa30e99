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


def write_grid(grid, runs, seconds=SECONDS):
    """``runs``: {(system, seed): {(set, head): vocals values}} -> grid/runs.tsv and the score dirs."""
    lines = ["system\tseed\tdecode_dir\tseconds\tconfig\toverrides"]
    for (system, seed), scores in runs.items():
        rel = f"{system}/seed{seed}"
        for (test_set, head), vals in scores.items():
            write_run(grid / rel, test_set, head, vals, seconds=seconds)
        lines.append(f"{system}\t{seed}\t{rel}\t10.0\tconf/x.yaml\t")
    grid.mkdir(parents=True, exist_ok=True)
    (grid / "runs.tsv").write_text("\n".join(lines) + "\n")
    return grid


def table_row(text, label, section):
    part = text[text.index(section):]
    m = re.search(rf"^\| {re.escape(label)} \|(.*)\|$", part, re.M)
    assert m, f"no row {label} under {section}:\n{part[:2000]}"
    return [c.strip() for c in m.group(1).split("|")]


def claim_row(text, claim, test_set, metric, source):
    """``{column: cell}`` of one row of the claims table."""
    lines = text[text.index("## Claims"):].splitlines()
    head = next(ln for ln in lines if ln.startswith("| claim |"))
    names = [c.strip() for c in head.strip("|").split("|")]
    for ln in lines:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if cells[:4] == [claim, test_set, metric, source]:
            return dict(zip(names, cells))
    raise AssertionError(f"no claim row {claim} {test_set} {metric} {source}:\n{text}")


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


def test_seed_term_is_a_welch_t_interval():
    # one file: no file term, the interval is D +- t_{0.975, df} se with se^2 = var(a)/Sa + var(b)/Sb and
    # Welch's df; A's seeds 0, 1, 2 (var 1), B's 0, 0, 2, 2 (var 4/3): se^2 = 1/3 + 1/3, df = 4.8
    from scipy.stats import t

    a, b = np.array([[0.0], [1.0], [2.0]]), np.array([[0.0], [0.0], [2.0], [2.0]])
    r = stats.paired_bootstrap(a, b, [3.0], n_boot=500)
    se, df = math.sqrt(2 / 3), (2 / 3) ** 2 / ((1 / 3) ** 2 / 2 + (1 / 3) ** 2 / 3)
    assert (r["diff"], r["se_seeds"], r["df_seeds"]) == (0.0, pytest.approx(se), pytest.approx(df))
    half = t.ppf(0.975, df) * se
    assert (r["lo"], r["hi"]) == (pytest.approx(-half, abs=1e-6), pytest.approx(half, abs=1e-6))
    assert r["p"] == pytest.approx(1.0)
    # A's 3 seeds 0, 1, 2 on every file, B one seed of zeros: 1 -+ t_{0.975, 2} / sqrt(3), p = 2 T_2(-sqrt 3)
    a = np.repeat(np.array([[0.0], [1.0], [2.0]]), 30, axis=1)
    r = stats.paired_bootstrap(a, np.zeros((1, 30)), np.ones(30), n_boot=500)
    half = t.ppf(0.975, 2) / math.sqrt(3)
    assert (r["diff"], r["lo"], r["hi"]) == (pytest.approx(1.0), pytest.approx(1 - half, abs=1e-6),
                                             pytest.approx(1 + half, abs=1e-6))
    assert r["p"] == pytest.approx(2 * t.cdf(-math.sqrt(3), 2), rel=1e-6)
    assert stats.seed_term([1.0], [2.0]) == (0.0, pytest.approx(math.nan, nan_ok=True))


def test_interval_and_p_come_from_one_distribution():
    # the interval excludes 0 exactly when p < 1 - level, and p is not floored at 1 / n_boot
    rng = np.random.default_rng(11)
    for shift in (0.0, 0.2, 0.5, 1.0, 3.0):
        a, b, w = _simulate(rng, shift, 3, 40, seed_sd=0.2)
        r = stats.paired_bootstrap(a, b, w, n_boot=300)
        assert (stats.verdict(r["lo"], r["hi"]) != "inconclusive") == (r["p"] < 0.05), (shift, r)
    assert r["p"] < 1e-4 < 1 / 300


def test_file_lengths_weigh_the_difference_and_its_interval():
    # long files (10 s) gain 1 dB, short ones (1 s) lose 1 dB: the length-weighted difference is 225/275;
    # one seed per system, so the interval is the file bootstrap's, whose standard deviation is (delta
    # method for a ratio of means) sqrt(sum w^2 (d - D)^2) / sum w; ignoring the lengths would centre it on 0
    d = np.tile([1.0, -1.0], 25) + np.linspace(-0.1, 0.1, 50)
    w = np.tile([10.0, 1.0], 25)
    r = stats.paired_bootstrap(d[None], np.zeros((1, 50)), w, n_boot=4000, seed=3)
    big = (w * d).sum() / w.sum()
    assert r["diff"] == pytest.approx(big) and big == pytest.approx(225 / 275, abs=0.01)
    sd = math.sqrt((w ** 2 * (d - big) ** 2).sum()) / w.sum()
    assert r["lo"] < big < r["hi"] and (r["lo"] + r["hi"]) / 2 == pytest.approx(big, abs=0.5 * sd)  # a ratio: a bit skewed
    assert (r["hi"] - r["lo"]) / (2 * 1.96 * sd) == pytest.approx(1.0, abs=0.1)
    # a zero or undefined length drops the file, like an undefined value
    w2 = w.copy()
    w2[0] = 0.0
    assert stats.paired_bootstrap(d[None], np.zeros((1, 50)), w2)["n_files"] == 49


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 x 0.005, 3 x 0.01, 2 x 0.03, max(0.06, 1 x 0.04)
    adj = stats.holm([0.01, 0.04, 0.03, 0.005, math.nan])
    np.testing.assert_allclose(adj[:4], [0.03, 0.06, 0.06, 0.02])
    assert math.isnan(adj[4])
    assert list(stats.holm([0.5, 0.9])) == [1.0, 1.0]
    assert stats.corrected_verdict("holds", 0.049) == "holds"
    assert stats.corrected_verdict("reversed", 0.051) == stats.corrected_verdict("holds", math.nan) == "inconclusive"


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
        ab = claim_row(text, "A > B", "t", "SI-SDRi", "vocals")["verdict"].split()[0]
        ba = claim_row(text, "B > A", "t", "SI-SDRi", "vocals")["verdict"].split()[0]
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


def test_warnings_for_few_seeds_and_few_files(tmp_path):
    def text(seeds, files):
        runs = {(sy, s): {("t", "mi"): [float(i + 0.1 * s + (sy == "A")) for i in range(files)]}
                for sy in ("A", "B") for s in range(seeds)}
        grid = write_grid(tmp_path / f"g{seeds}_{files}", runs, seconds=[2.0 + i for i in range(files)])
        out = tmp_path / f"c{seeds}_{files}.md"
        assert compare.main(["--pair", "A > B", "--seed", "1", "--out", str(out), str(grid)]) == 0
        return out.read_text()

    few = text(2, 4)
    assert "**Warning: 2 seed(s) per system.**" in few
    assert "**Warning: set(s) of fewer than 10 files: t (4).**" in few
    assert "**Warning: 4 file(s)**" in few[few.index("## t: SI-SDRi"):]
    cell = claim_row(few, "A > B", "t", "SI-SDRi", "vocals")["verdict"]
    assert "**" not in cell and cell.endswith("*(few files)*"), cell
    one = text(1, 12)
    assert "Warning: 1 seed(s)" in one and "intervals of claims cover the files only" in one
    assert claim_row(one, "A > B", "t", "SI-SDRi", "vocals")["p"] == f"{2 / 2001:.4f}"  # never 0 from 2000 replicates
    enough = text(3, 10)
    assert "Warning" not in enough and "few files" not in enough
    assert claim_row(enough, "A > B", "t", "SI-SDRi", "vocals")["verdict"] == "**holds**"


def test_holm_corrected_verdicts_beside_raw_ones(tmp_path):
    # four claims (2 pairs x 2 sources), each alone just significant: raw "holds", none after Holm;
    # one strong claim that stands after it; the verdict table gives every metric's verdict per claim
    rng = np.random.default_rng(5)
    base = rng.normal(5, 2, 40)
    runs = {}
    for s in range(3):
        runs[("B", s)] = {("t", "mi"): list(base + rng.normal(0, 0.5, 40))}
        runs[("A", s)] = {("t", "mi"): list(base + 0.3 + rng.normal(0, 0.5, 40))}
        runs[("C", s)] = {("t", "mi"): list(base + 2.0 + rng.normal(0, 0.5, 40))}
    grid = write_grid(tmp_path / "g", runs, seconds=list(rng.uniform(2, 10, 40)))
    out = tmp_path / "c.md"
    assert compare.main(["--metrics", "si_sdri,gnsdr", "--pair", "A > B", "--pair", "C > B", "--out", str(out),
                         str(grid)]) == 0
    text = out.read_text()
    assert "**8 claims at once**" in text
    rows = [claim_row(text, c, "t", m, s) for c in ("A > B", "C > B") for m in ("SI-SDRi", "GNSDR")
            for s in ("vocals", "accompaniment")]
    p = np.array([float(r["p"].replace("<", "")) for r in rows])
    weak = rows[0]
    assert weak["verdict"] == "**holds**" and 0.0063 < float(weak["p"]) < 0.05, weak  # 8 x p > 0.05
    assert weak["verdict (Holm)"] == "inconclusive" and float(weak["p (Holm)"]) >= 0.05
    strong = rows[4]
    assert strong["verdict"] == strong["verdict (Holm)"] == "**holds**"
    # the Holm column is Holm's adjustment of the p column (up to the rounding of the printed p)
    printed = np.array([float(r["p (Holm)"].replace("<", "")) for r in rows])
    want = stats.holm(p)
    assert np.all(np.abs(printed - want) <= 8 * 0.0005 + 1e-4), (printed, want)
    table = text[text.index("## Verdicts per claim"):]
    assert "| claim | set | SI-SDRi vocals | SI-SDRi accompaniment | GNSDR vocals | GNSDR accompaniment |" in table
    assert re.search(r"^\| A > B \| t \| holds / inconclusive \|", table, re.M), table
    assert re.search(r"^\| C > B \| t \| holds / holds \| holds / holds \| holds / holds \| holds / holds \|$",
                     table, re.M), table


@pytest.mark.parametrize("case", ["missing_run", "unequal_seeds", "seed_not_scored_on_a_set", "twice"])
def test_unequal_or_missing_seeds_are_refused(tmp_path, capsys, case):
    import shutil

    runs = {(sy, s): {(t, "mi"): [1.0 + (sy == "A"), 2.0, 3.0, 4.0] for t in ("t", "u")}
            for sy in ("A", "B") for s in (0, 1)}
    grid = write_grid(tmp_path / "g", runs)
    if case == "missing_run":  # a run folder deleted: 2 seeds of A against 1 of B
        shutil.rmtree(grid / "B" / "seed1")
    elif case == "unequal_seeds":
        write_run(grid / "B" / "seed2", "t", "mi", [1.0] * 4)
        write_run(grid / "B" / "seed2", "u", "mi", [1.0] * 4)
        with open(grid / "runs.tsv", "a") as f:
            f.write("B\t2\tB/seed2\t1.0\tx\t\n")
    elif case == "seed_not_scored_on_a_set":
        shutil.rmtree(grid / "A" / "seed1" / "score_u_mi")
    else:
        with open(grid / "runs.tsv", "a") as f:
            f.write("B\t1\tB/seed1\t1.0\tx\t\n")
    out = tmp_path / "c.md"
    assert compare.main(["--pair", "A > B", "--out", str(out), str(grid)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("compare: ") and "\n" not in err and not out.exists(), err
    assert {"missing_run": "B/seed1: no score_*/per_utt.csv", "unequal_seeds": "unequal numbers of seeds",
            "seed_not_scored_on_a_set": "test set u: A (mi) has no scores of seed(s) [1]",
            "twice": "B seed 1 is listed twice"}[case] in err, err


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
