"""espnet_allinone.data.perturb: Kaldi-style speed perturbation written to files."""

import shutil

import numpy as np
import pytest
import soundfile

from espnet_allinone.data.kaldi import read_table
from espnet_allinone.data.perturb import speed_perturb

FS = 16000

pytestmark = pytest.mark.skipif(shutil.which("sox") is None, reason="sox not installed")


def _peak_hz(path):
    wav, fs = soundfile.read(path)
    spec = np.abs(np.fft.rfft(wav))
    return np.argmax(spec) * fs / len(wav)


def _write_src(d):
    d.mkdir()
    scp, text, spk = {}, {}, {}
    for i, (hz, seconds) in enumerate([(300, 1.0), (500, 0.7), (800, 1.3)]):
        key = f"s{i % 2}_u{i}"
        t = np.arange(int(seconds * FS)) / FS
        soundfile.write(d / f"{key}.wav", (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), FS)
        scp[key], text[key], spk[key] = str(d / f"{key}.wav"), f"words of {key}", f"s{i % 2}"
    for name, table in [("wav.scp", scp), ("text", text), ("utt2spk", spk)]:
        (d / name).write_text("".join(f"{k} {v}\n" for k, v in table.items()))


def test_speed_perturb_scales_duration_and_pitch_and_prefixes_ids(tmp_path):
    _write_src(tmp_path / "src")
    logs = []
    n = speed_perturb(tmp_path / "src", tmp_path / "dst", [0.9, 1.0, 1.1], log=logs.append)
    assert n == 9
    src_samples = {k: soundfile.info(v).frames for k, v in read_table(tmp_path / "src/wav.scp").items()}
    dst = {k: int(v) for k, v in read_table(tmp_path / "dst/utt2num_samples").items()}
    wavs = read_table(tmp_path / "dst/wav.scp")
    src_wavs = read_table(tmp_path / "src/wav.scp")
    text, src_text = read_table(tmp_path / "dst/text"), read_table(tmp_path / "src/text")
    spk, src_spk = read_table(tmp_path / "dst/utt2spk"), read_table(tmp_path / "src/utt2spk")
    for key, samples in src_samples.items():
        assert dst[key] == samples and wavs[key] == src_wavs[key]  # factor 1: the original entry
        for f in (0.9, 1.1):
            new = f"sp{f:g}-{key}"
            assert dst[new] == pytest.approx(samples / f, rel=0.01)
            assert soundfile.info(wavs[new]).frames == dst[new]
            assert text[new] == src_text[key] and spk[new] == f"sp{f:g}-{src_spk[key]}"
            # sox's speed moves the pitch with the tempo
            assert _peak_hz(wavs[new]) == pytest.approx(f * _peak_hz(src_wavs[key]), rel=0.03)
    spk2utt = read_table(tmp_path / "dst/spk2utt")
    assert sorted(u for us in spk2utt.values() for u in us.split()) == sorted(wavs)
    # a second call finds it complete and writes nothing
    mtime = (tmp_path / "dst/wav.scp").stat().st_mtime_ns
    speed_perturb(tmp_path / "src", tmp_path / "dst", [0.9, 1.0, 1.1], log=logs.append)
    assert (tmp_path / "dst/wav.scp").stat().st_mtime_ns == mtime and "complete already" in logs[-1]


@pytest.mark.parametrize("factors", [[0.9, 0.9], [0.0, 1.0], [-1.0]])
def test_bad_factors_are_refused(tmp_path, factors):
    with pytest.raises(ValueError, match="speed factors must be distinct and > 0"):
        speed_perturb(tmp_path, tmp_path / "dst", factors)


def test_segments_are_cut_out_and_perturbed(tmp_path):
    _write_src(tmp_path / "src")
    src = tmp_path / "src"
    (src / "segments").write_text("a s0_u0 0.1 0.6\nb s0_u2 0.2 1.2\n")
    (src / "text").write_text("a first part\nb second part\n")
    (src / "utt2spk").write_text("a s0\nb s0\n")
    assert speed_perturb(src, tmp_path / "dst", [0.9, 1.0], log=lambda *a: None) == 4
    wavs = read_table(tmp_path / "dst/wav.scp")
    assert sorted(wavs) == ["a", "b", "sp0.9-a", "sp0.9-b"]
    assert soundfile.info(wavs["a"]).frames == int(0.5 * FS)  # the segment, not the recording
    assert soundfile.info(wavs["sp0.9-b"]).frames == pytest.approx(FS / 0.9, rel=0.01)
