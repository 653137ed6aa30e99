"""egs/dsd100/chimera end to end on a tiny synthetic DSD100: stages 0-5, re-run skips, failing job, options.

One module-scoped run (a few songs of a few seconds, a 1-layer 16-unit network, one short epoch)
is shared by the tests below; together they take about a minute on 2 cores.
"""
import csv
import json
import re

import pytest

from recipe_common import VENV_PYTHON, make_workspace, run_recipe, snapshot

pytestmark = pytest.mark.skipif(not VENV_PYTHON.exists(), reason="tools/venv not built (make venv)")

TAG = "tiny"
TINY = ["--nj", "2", "--train_config", "conf/tuning/train_chimera_tiny.yaml", "--tag", TAG,
        "--train_hours", "0.005", "--valid_hours", "0.002", "--test_seconds", "3",
        "--remix_args", "--segment-seconds 2",
        "--train_args", "--epochs 1 --hidden 16 --layers 1 --emb_dim 8 --batch_size 4 --segment_frames 50 "
                        "--max_steps_per_epoch 3 --tensorboard false"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    from sepkit.data.synth_layouts import make_corpus

    base = tmp_path_factory.mktemp("dsd100_recipe")
    make_corpus("dsd100", base / "DSD100", num_songs=3, num_test_songs=2, duration=8.0, seed=7, progress=False)
    rec = make_workspace(base, "dsd100/chimera")
    first = run_recipe(rec, "--dsd100", base / "DSD100", *TINY)
    return rec, base, first


def test_all_stages_run(recipe):
    rec, _, first = recipe
    assert first.returncode == 0, first.stdout[-4000:]
    for stage in range(6):
        assert re.search(rf"\(run\.sh:\d+\) Stage {stage}:", first.stdout), f"no stage {stage} log line"
    from sepkit.data.datadir import DataDir, validate_data_dir

    for name in ("dsd100_dev", "dsd100_test", "train_remix", "valid_remix", "test_remix"):
        assert validate_data_dir(rec / "data" / name) == [], name
    assert DataDir(rec / "data" / "dsd100_test").sources == ["vocals", "accompaniment"]
    dump = rec / "dump" / "feats"
    for name in ("train_remix", "valid_remix"):
        assert (dump / name / "mix.scp").is_file() and (dump / name / "vocals.scp").is_file()
    assert (dump / "train_remix" / "cmvn.ark").is_file() and not (dump / "valid_remix" / "cmvn.ark").exists()
    exp = rec / "exp" / TAG
    assert (exp / "model.pt").is_file() and (exp / "config.yaml").is_file()
    test = DataDir(rec / "data" / "test_remix")
    for head in ("mi", "dc"):
        sep = DataDir(exp / f"separate_test_remix_{head}")
        assert sep.utts == test.utts
        assert all((exp / f"separate_test_remix_{head}" / "wav" / s / f"{u}.wav").is_file()
                   for s in test.sources for u in test.utts)
        result = json.loads((exp / f"score_test_remix_{head}" / "result.json").read_text())
        assert set(result) == {"vocals", "accompaniment", "n_files", "seconds", "order_is_best_fraction"}
        for s in ("vocals", "accompaniment"):
            assert set(result[s]) == {"si_sdri", "gnsdr", "gsir", "gsar"}
            assert all(isinstance(v, float) for v in result[s].values())
        assert result["n_files"] == len(test.utts) == 2
        assert result["seconds"] == pytest.approx(2 * 3.0, abs=0.01)
        rows = list(csv.DictReader((exp / f"score_test_remix_{head}" / "per_utt.csv").open()))
        assert [r["utt"] for r in rows] == test.utts
    # oracle reference rows: the mel IBM beats the mixture by a wide margin
    ibm = json.loads((rec / "exp" / "oracle_feats" / "score_test_remix_ibm" / "result.json").read_text())
    assert ibm["vocals"]["si_sdri"] > 5
    table = (rec / "exp" / "RESULTS.md").read_text()
    assert f"| {TAG} | test_remix | mi |" in table and f"| {TAG} | test_remix | dc |" in table
    assert "| oracle_feats | test_remix | ibm |" in table
    assert f"| {TAG} | test_remix | mi |" in first.stdout  # the table is printed too


def test_rerun_skips_every_stage_and_keeps_outputs(recipe):
    rec, base, first = recipe
    assert first.returncode == 0
    before = snapshot(rec)
    again = run_recipe(rec, "--dsd100", base / "DSD100", *TINY)
    assert again.returncode == 0, again.stdout[-4000:]
    out = again.stdout
    assert "already prepared" in out and "already made" in out
    assert out.count("already done, skipping") == 2  # features of train_remix and valid_remix
    assert "training already finished" in out
    assert "already separated" in out and "already scored" in out
    for word in ("separating ", "scoring exp", "computing features", "wrote /"):
        assert word not in out, f"re-run redid work: {word!r}"
    assert snapshot(rec) == before  # nothing rewritten, nothing added, nothing removed


def test_failing_job_is_named_with_its_log(recipe, tmp_path):
    rec, base, first = recipe
    assert first.returncode == 0
    from sepkit.data.datadir import DataDir

    test = DataDir(rec / "data" / "test_remix")
    bad = test.wav[test.utts[-1]]
    with open(bad, "r+b") as f:  # corrupt the header of one test mixture
        f.write(b"garbage!" * 8)
    res = run_recipe(rec, "--stage", 4, "--stop_stage", 4, "--head", "mi", "--overwrite", "true",
                     "--tag", TAG, "--train_config", "conf/tuning/train_chimera_tiny.yaml", "--nj", "2")
    assert res.returncode != 0
    match = re.search(r"jobs failed, log is in (\S+)", res.stdout)
    assert match, res.stdout[-3000:]
    log = rec / match.group(1)
    assert log.is_file() and bad in log.read_text()  # the log says which file broke the job
    assert not (rec / "exp" / TAG / "separate_test_remix_mi" / ".done").exists()


def test_options_and_clear_errors(recipe):
    rec, _, _ = recipe
    res = run_recipe(rec, "--help")
    assert res.returncode == 0
    for opt in ("--dsd100", "--stage", "--stop-stage", "--ngpu", "--nj", "--train-config", "--tag", "--head",
                "--train-hours", "--valid-hours"):
        assert opt in res.stdout, opt
    res = run_recipe(rec, "--no_such_option", "1")
    assert res.returncode != 0 and "unknown option --no_such_option" in res.stdout
    res = run_recipe(rec, "--stage", 0, "--stop_stage", 0)  # default downloads/DSD100 is absent here
    assert res.returncode != 0 and "no DSD100 at 'downloads/DSD100': pass --dsd100 DIR" in res.stdout
    res = run_recipe(rec, "--stage", 0, "--stop_stage", 0, "--dsd100", rec / "nowhere")
    assert res.returncode != 0 and "nowhere" in res.stdout


def test_another_seed_redoes_features_and_refuses_the_old_model(recipe):
    """Issue 23 item 4: stage 1 again with another --seed remade the audio, then stages 2 and 3
    skipped as "already done" on features and a model of the old audio. (Last: it changes the data.)"""
    rec, base, first = recipe
    assert first.returncode == 0
    model = (rec / "exp" / TAG / "model.pt").read_bytes()
    mix_before = (rec / "dump" / "feats" / "train_remix" / "cmvn.ark").read_bytes()
    res = run_recipe(rec, "--dsd100", base / "DSD100", *TINY, "--seed", 1, "--stage", 1, "--stop_stage", 3)
    out = res.stdout
    assert "remaking" in out
    assert "already done, skipping" not in out and out.count("recomputing them") == 2, out[-4000:]
    assert (rec / "dump" / "feats" / "train_remix" / "cmvn.ark").read_bytes() != mix_before
    assert res.returncode != 0 and "training already finished" not in out
    refused = [ln for ln in out.splitlines() if "trained on other features" in ln]
    assert len(refused) == 1 and f"exp/{TAG}" in refused[0], out[-4000:]
    assert (rec / "exp" / TAG / "model.pt").read_bytes() == model
    res = run_recipe(rec, *TINY, "--seed", 1, "--stage", 3, "--stop_stage", 3, "--overwrite", "true")
    assert res.returncode == 0, res.stdout[-4000:]
    assert (rec / "exp" / TAG / "model.pt").read_bytes() != model
