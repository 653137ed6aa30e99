"""sepkit.audio: every reading error is one AudioError naming the file; truncated WAVs are refused
everywhere (data preparation, features, scoring, separation), not read as shorter songs."""
import numpy as np
import pytest

from sepkit.audio import AudioError, check_wav_complete, read_audio, resample, write_audio


def _tone(sr, seconds=0.5, channels=2):
    t = np.arange(int(sr * seconds)) / sr
    return np.stack([0.3 * np.sin(2 * np.pi * (220 + 110 * c) * t) for c in range(channels)]).astype(np.float32)


def test_roundtrip_and_resample(tmp_path):
    wav = _tone(16000)
    write_audio(tmp_path / "a.wav", wav, 16000, subtype="FLOAT")
    back, sr = read_audio(tmp_path / "a.wav")
    assert sr == 16000 and back.shape == wav.shape and np.allclose(back, wav, atol=1e-7)
    mono, sr2 = read_audio(tmp_path / "a.wav", sample_rate=8000, mono=True)
    assert sr2 == 8000 and mono.shape == (1, 4000)
    assert resample(wav, 16000, 16000) is wav or np.array_equal(resample(wav, 16000, 16000), wav)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_wav_is_refused_with_the_file_name(tmp_path, keep):
    write_audio(tmp_path / "full.wav", _tone(16000), 16000)
    data = (tmp_path / "full.wav").read_bytes()
    cut = tmp_path / "cut.wav"
    cut.write_bytes(data[:int(len(data) * keep)])
    with pytest.raises(AudioError, match=r"cut\.wav: truncated audio"):
        read_audio(cut)
    check_wav_complete(tmp_path / "full.wav")  # a complete file passes
    read_audio(tmp_path / "full.wav")


def test_streamed_wav_with_unknown_length_is_read(tmp_path):
    """A WAV written to a pipe declares 0xFFFFFFFF (or 0) data bytes: not a truncation."""
    write_audio(tmp_path / "full.wav", _tone(16000), 16000)
    data = bytearray((tmp_path / "full.wav").read_bytes())
    pos = data.index(b"data")
    data[pos + 4:pos + 8] = (0xFFFFFFFF).to_bytes(4, "little")
    (tmp_path / "stream.wav").write_bytes(bytes(data))
    check_wav_complete(tmp_path / "stream.wav")


@pytest.mark.parametrize("content,problem", [(b"", "empty file"), (b"not audio at all" * 10, "not a readable audio file")])
def test_bad_files_name_file_and_problem(tmp_path, content, problem):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    with pytest.raises(AudioError) as err:
        read_audio(bad)
    msg = str(err.value)
    assert msg.startswith(str(bad)) and problem in msg and "\n" not in msg


def test_missing_file_and_nan_writes(tmp_path):
    with pytest.raises(AudioError, match="no such file"):
        read_audio(tmp_path / "nope.wav")
    bad = _tone(8000)
    bad[0, 3] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        write_audio(tmp_path / "n.wav", bad, 8000)
    assert not (tmp_path / "n.wav").exists()
