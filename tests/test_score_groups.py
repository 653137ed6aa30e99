"""python -m sepkit.bin.score_groups: per-group (per-singer) set-level scores from per_utt.csv."""
import csv

import pytest

from sepkit.bin import score_groups

COLS = ["utt", "seconds", "perm", "vocals_si_sdri", "vocals_nsdr", "accompaniment_si_sdri", "accompaniment_nsdr"]


def _write(d, rows):
    d.mkdir()
    with open(d / "per_utt.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLS)
        w.writerows(rows)
    return d


def test_length_weighted_means_per_singer_by_hand(tmp_path, capsys):
    d = _write(tmp_path / "score_test_mi", [
        ["annar_1_01", 2.0, "0 1", 4.0, 5.0, 1.0, 2.0],
        ["annar_1_02", 6.0, "0 1", 8.0, 9.0, 3.0, ""],  # undefined NSDR (silent reference): left out
        ["yifen_2_01", 4.0, "0 1", -2.0, 1.0, 0.0, 4.0],
    ])
    out = tmp_path / "groups.md"
    assert score_groups.main(["--out", str(out), str(d)]) == 0
    _, rows = score_groups.read_per_utt(d / "per_utt.csv")
    sc = score_groups.group_scores(rows, ["vocals", "accompaniment"], r"^([^_]+)_")
    # annar: SI-SDRi V = (2*4 + 6*8) / 8 = 7; GNSDR V = (2*5 + 6*9) / 8 = 8; GNSDR M = 2 (one file defined)
    assert sc["annar"]["si_sdri"][0] == pytest.approx(7.0)
    assert sc["annar"]["nsdr"][0] == pytest.approx(8.0)
    assert sc["annar"]["nsdr"][1] == pytest.approx(2.0)
    assert sc["yifen"]["si_sdri"][0] == pytest.approx(-2.0) and sc["yifen"]["n"] == 1
    # all: SI-SDRi V = (8 + 48 - 8) / 12 = 4; GNSDR M = (2*2 + 4*4) / 6
    assert sc["all files"]["si_sdri"][0] == pytest.approx(4.0)
    assert sc["all files"]["nsdr"][1] == pytest.approx(20.0 / 6.0)
    text = out.read_text()
    assert "| annar | 2 | 7.00 |" in text and text == capsys.readouterr().out


def test_unmatched_utterance_is_one_line_error(tmp_path, capsys):
    d = _write(tmp_path / "s", [["nounderscore", 1.0, "0 1", 1, 1, 1, 1]])
    assert score_groups.main([str(d)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "nounderscore" in err


def test_a_group_named_all_keeps_its_row(tmp_path):
    d = _write(tmp_path / "s", [["all_1", 1.0, "0 1", 2.0, 2.0, 2.0, 2.0], ["bob_1", 3.0, "0 1", 6.0, 6.0, 6.0, 6.0]])
    _, rows = score_groups.read_per_utt(d / "per_utt.csv")
    sc = score_groups.group_scores(rows, ["vocals", "accompaniment"], r"^([^_]+)_")
    assert sc["all"]["n"] == 1 and sc["all"]["si_sdri"][0] == pytest.approx(2.0)  # the group, not every file
    assert sc["all files"]["n"] == 2 and sc["all files"]["si_sdri"][0] == pytest.approx(5.0)
    text = score_groups.table("s", ["vocals", "accompaniment"], sc)
    assert "| all | 1 | 2.00 |" in text and "| all files | 2 | 5.00 |" in text


def test_an_utterance_listed_twice_is_refused(tmp_path, capsys):
    d = _write(tmp_path / "s", [["annar_1", 1.0, "0 1", 2.0, 2.0, 2.0, 2.0], ["annar_1", 1.0, "0 1", 2.0, 2, 2, 2]])
    assert score_groups.main([str(d)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "annar_1 is listed twice" in err and "per_utt.csv" in err
