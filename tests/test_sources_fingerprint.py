"""A data dir's source list is part of what a stage read (issue 20): the fingerprint of a data dir remade over the
same audio with other sources (2 stems -> 4 stems of the same songs) changes, and utils/lib.sh stamp_ok takes a
stage that recorded the old dir for stale, while the same dir written again stays done."""
import subprocess
from pathlib import Path

import numpy as np

from sepkit.audio import write_audio
from sepkit.data.datadir import DataDir
from sepkit.data.fingerprint import data_fingerprint

REPO = Path(__file__).resolve().parents[1]

STEMS = ("vocals", "drums", "bass", "other")


def _stems(root):
    rng = np.random.default_rng(0)
    files = {}
    for name in ("mixture",) + STEMS:
        files[name] = str(root / "audio" / f"{name}.wav")
        write_audio(files[name], (0.1 * rng.standard_normal((1, 800))).astype(np.float32), 8000)
    return files


def _make(path, files, stems):
    import json

    sources = ({"vocals": {"s": files["vocals"]},
                "accompaniment": {"s": json.dumps({"sum": [files[k] for k in ("drums", "bass", "other")]})}}
               if stems == 2 else {k: {"s": files[k]} for k in STEMS})
    return DataDir.create(path, {"s": files["mixture"]}, sources, utt2dur={"s": 0.1}, overwrite=True).path


def _stamp(*args, cwd):
    script = f'. "{REPO}/utils/lib.sh"; "$@"'
    return subprocess.run(["bash", "-c", script, "stamp", *map(str, args)], cwd=cwd, capture_output=True, text=True)


def test_a_stem_change_is_a_changed_input(tmp_path):
    files = _stems(tmp_path)
    data = _make(tmp_path / "data" / "musdb18_test", files, 2)
    two = data_fingerprint(data)
    assert data_fingerprint(_make(data, files, 2)) == two  # written again, same sources: the same input
    marker = tmp_path / "stage.done"
    assert _stamp("stamp_write", marker, "sig", data, cwd=tmp_path).returncode == 0
    assert _stamp("stamp_ok", marker, "sig", data, cwd=tmp_path).returncode == 0
    four = data_fingerprint(_make(data, files, 4))  # same mixture and audio files, 4 sources
    assert four != two
    assert not (data / "accompaniment.scp").exists()
    assert _stamp("stamp_ok", marker, "sig", data, cwd=tmp_path).returncode == 1  # stale: redone or refused
