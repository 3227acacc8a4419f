"""espnet_allinone.bin.decode_subnets on bad audio, Kaldi pipes and segments, and its
resumption after an interruption."""

import contextlib
import io
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from espnet_allinone.bin import decode_subnets
from espnet_allinone.data.audio import DataDirAudio
from espnet_allinone.decode import DONE, read_failures
from tests.conftest import make_allinone_files

SUBNET = "1-16-4bit"
FS = 16000


def _tone(seconds: float, freq: float, seed: int) -> np.ndarray:
    t = np.arange(int(seconds * FS)) / FS
    noise = np.random.default_rng(seed).normal(0, 0.01, len(t))
    return (0.3 * np.sin(2 * np.pi * freq * t) + noise).astype(np.float32)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    config, model_file = make_allinone_files(d)
    (d / "decode.yaml").write_text(yaml.safe_dump({"ctc_greedy": True}))
    return ["--asr_train_config", str(config), "--asr_model_file", str(model_file),
            "--config", str(d / "decode.yaml"), "--subnets", SUBNET]


def _write_set(d: Path, entries) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in entries))
    return d


# (utterance, what the line about it says): the report's inputs and a few more
BAD = {
    "b_empty": "empty: 0 samples",
    "c_50ms": r"too short: 800 samples \(50 ms\); its features has 6 frames",
    "d_6ms": r"too short: 100 samples \(6 ms\); the frontend needs 201",
    "g_missing": "unreadable: FileNotFoundError: no such file",
    "h_not_audio": "unreadable: LibsndfileError",
    "j_failing_pipe": "unreadable: RuntimeError: the command exited with status 3",
}
WARNED = {"e_8khz": "sampled at 8000 Hz: resampled to the model's 16000 Hz",
          "f_stereo": "2 channels: decoding the first one"}


@pytest.fixture(scope="module")
def decoded(model, tmp_path_factory):
    """One run over a set with good and bad inputs, a set read through pipes and a set
    with segments; returns (exit status, stdout, log records, data root, output dir)."""
    root = tmp_path_factory.mktemp("data")
    wavs = root / "wavs"
    wavs.mkdir()
    good, other = _tone(1.0, 440, 0), _tone(0.8, 700, 1)
    soundfile.write(wavs / "good.wav", good, FS)
    soundfile.write(wavs / "other.wav", other, FS)
    soundfile.write(wavs / "empty.wav", np.zeros(0, np.float32), FS)
    soundfile.write(wavs / "50ms.wav", good[:800], FS)
    soundfile.write(wavs / "6ms.wav", good[:100], FS)
    soundfile.write(wavs / "8khz.wav", good[::2], FS // 2)
    soundfile.write(wavs / "stereo.wav", np.stack([good, other[: len(good) // 2].repeat(2)], 1), FS)
    (wavs / "not_audio.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    mixed = _write_set(root / "mixed", [
        ("a_good", wavs / "good.wav"), ("b_empty", wavs / "empty.wav"),
        ("c_50ms", wavs / "50ms.wav"), ("d_6ms", wavs / "6ms.wav"),
        ("e_8khz", wavs / "8khz.wav"), ("f_stereo", wavs / "stereo.wav"),
        ("g_missing", wavs / "missing.wav"), ("h_not_audio", wavs / "not_audio.wav"),
        ("i_other", wavs / "other.wav"), ("j_failing_pipe", "sh -c 'exit 3' |"),
    ])
    piped = _write_set(root / "piped", [
        ("a_good", f"cat {wavs / 'good.wav'} |"),
        ("i_other", f"sox {wavs / 'other.wav'} -t wav - |" if shutil.which("sox")
         else f"cat {wavs / 'other.wav'} |"),
    ])
    # one recording holding both utterances, cut by a segments file
    soundfile.write(wavs / "reco.wav", np.concatenate([good, other]), FS)
    segmented = _write_set(root / "segmented", [("reco1", wavs / "reco.wav")])
    (segmented / "segments").write_text("a_good reco1 0 1.0\ni_other reco1 1.0 -1\n")
    out = root / "decode"
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger().addHandler(handler)
    stdout = io.StringIO()
    try:
        with contextlib.redirect_stdout(stdout):
            rc = decode_subnets.main([*model, "--data_dir", str(mixed), str(piped), str(segmented),
                                      "--output_dir", str(out)])
    finally:
        logging.getLogger().removeHandler(handler)
    return rc, stdout.getvalue(), [r.getMessage() for r in records], root, out / SUBNET


def _text(path: Path) -> dict:
    return dict((line.split(" ", 1) + [""])[:2] for line in path.read_text().splitlines())


@pytest.mark.parametrize("utt", sorted(BAD))
def test_bad_input_gets_one_line_naming_utterance_file_and_reason(decoded, utt):
    _, _, log, _, out = decoded
    lines = [m for m in log if f"utterance {utt} " in m]
    assert len(lines) == 1, lines
    source = (out.parents[1] / "mixed/wav.scp").read_text().split(f"{utt} ", 1)[1].splitlines()[0]
    assert f"({source}): " in lines[0]
    import re

    assert re.search(BAD[utt], lines[0]), lines[0]
    failed = read_failures(out / "mixed")
    assert re.search(BAD[utt], failed[utt])
    assert _text(out / "mixed/text")[utt] == ""  # an empty hypothesis, as stock asr_inference


def test_set_goes_on_and_ends_with_a_summary(decoded):
    rc, stdout, _, _, out = decoded
    assert rc == 0  # every failure is a data problem the summary lists
    text = _text(out / "mixed/text")
    assert list(text) == [line.split()[0] for line in (out.parents[1] / "mixed/wav.scp").read_text().splitlines()]
    decoded_ids = {"a_good", "e_8khz", "f_stereo", "i_other"}
    assert set(read_failures(out / "mixed")) == set(BAD)
    assert f"[decode] mixed: {len(decoded_ids)} decoded, {len(BAD)} failed: " \
           f"{', '.join(sorted(BAD))} (reasons in " in stdout
    assert "[decode] piped: 2 decoded, 0 failed" in stdout
    assert (out / "mixed/rtf").exists()


@pytest.mark.parametrize("utt", sorted(WARNED))
def test_wrong_rate_is_resampled_and_multichannel_uses_the_first_channel(decoded, utt):
    _, _, log, _, out = decoded
    (line,) = [m for m in log if f"utterance {utt} " in m]
    assert WARNED[utt] in line
    assert utt not in read_failures(out / "mixed")
    text = _text(out / "mixed/text")
    if utt == "f_stereo":  # first channel = good.wav
        assert text[utt] == text["a_good"]


def test_pipes_and_segments_read_as_asr_sh_reads_them(decoded):
    _, _, _, root, out = decoded
    files = _text(out / "mixed/text")
    for name in ("piped", "segmented"):
        text = _text(out / name / "text")
        assert text == {"a_good": files["a_good"], "i_other": files["i_other"]}, name
    reader = DataDirAudio(root / "segmented", FS)
    assert reader.keys() == ["a_good", "i_other"]
    np.testing.assert_array_equal(reader["i_other"].wav,
                                  soundfile.read(root / "wavs/other.wav", dtype="float32")[0])
    np.testing.assert_array_equal(DataDirAudio(root / "piped", FS)["a_good"].wav,
                                  soundfile.read(root / "wavs/good.wav", dtype="float32")[0])


def test_fail_on_bad_audio_gives_a_nonzero_exit_status(decoded, model):
    _, _, _, root, out = decoded
    args = [*model, "--data_dir", str(root / "mixed"), "--output_dir", str(out.parent)]
    before = (out / "mixed/text").stat().st_mtime_ns
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        assert decode_subnets.main([*args, "--fail_on_bad_audio", "true"]) == 1
    assert (out / "mixed/text").stat().st_mtime_ns == before  # done: not decoded again
    assert f"{len(BAD)} failed" in stdout.getvalue()
    with contextlib.redirect_stdout(io.StringIO()):
        assert decode_subnets.main(args) == 0


def test_bad_segments_line_names_the_file(tmp_path):
    d = _write_set(tmp_path / "s", [("reco1", "x.wav")])
    (d / "segments").write_text("u1 reco2 0 1\n")
    with pytest.raises(ValueError, match=r"segments: u1 is cut from reco2, which wav.scp does not list"):
        DataDirAudio(d, FS)


def test_resume_redoes_a_set_whose_files_are_incomplete(decoded, model, tmp_path):
    """A ``text`` cut short (a crash or a full disk while an older version wrote it in
    place) next to an ``rtf`` is not taken as done."""
    _, _, _, root, out = decoded
    dst = tmp_path / "decode"
    shutil.copytree(out.parent, dst)
    text = dst / SUBNET / "piped/text"
    complete = text.read_text()
    text.write_text(complete.splitlines(True)[0])
    with contextlib.redirect_stdout(io.StringIO()):
        decode_subnets.main([*model, "--data_dir", str(root / "piped"), "--output_dir", str(dst)])
    assert text.read_text() == complete


@pytest.mark.slow  # a subprocess or timed runs: seconds each
def test_killed_decode_resumes_to_the_hypotheses_of_an_uninterrupted_run(decoded, model, tmp_path):
    """SIGKILL in the middle of the second set, while a pipe entry blocks; then resume."""
    _, _, _, root, out = decoded
    wavs = root / "wavs"
    flag, started = tmp_path / "go_on", tmp_path / "blocked"
    blocking = (f"sh -c 'if [ ! -e {flag} ]; then touch {started}; sleep 600; fi; "
                f"cat {wavs / 'other.wav'}' |")
    first = _write_set(tmp_path / "first", [("u1", wavs / "good.wav"), ("u2", wavs / "other.wav")])
    second = _write_set(tmp_path / "second", [("v1", wavs / "other.wav"), ("v2", blocking),
                                              ("v3", wavs / "good.wav")])
    args = [*model, "--data_dir", str(first), str(second)]
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                          os.environ.get("PYTHONPATH", "")])}
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "espnet_allinone.bin.decode_subnets", *args,
                             "--output_dir", str(killed)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not started.exists():
            assert proc.poll() is None and time.monotonic() < deadline, "decode never reached v2"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert (killed / SUBNET / "first/rtf").exists()  # the first set was done before the kill
    assert not (killed / SUBNET / "second").exists() or not any(
        (killed / SUBNET / "second").iterdir())  # nothing of the second set under a real name
    flag.touch()
    with contextlib.redirect_stdout(io.StringIO()):
        decode_subnets.main([*args, "--output_dir", str(killed)])
        decode_subnets.main([*args, "--output_dir", str(tmp_path / "uninterrupted")])
    for name in ("first", "second"):
        want = (tmp_path / "uninterrupted" / SUBNET / name / "text").read_text()
        assert (killed / SUBNET / name / "text").read_text() == want
        assert len(want.splitlines()) == (2 if name == "first" else 3)


def test_wav2vec2_standin_decodes_with_the_one_decode_loop(tmp_path):
    """egs2/mini_allinone's float wav2vec2 stand-in (the report's baseline) decodes with decode_set: text,
    failed and rtf, a bad entry listed and the rest decoded."""
    import importlib.util

    from espnet_allinone.data.kaldi import read_table
    from tests.conftest import write_tone_data

    path = Path(__file__).parent.parent / "egs2/mini_allinone/asr1/local/wav2vec2_standin.py"
    spec = importlib.util.spec_from_file_location("wav2vec2_standin", path)
    standin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standin)
    write_tone_data(tmp_path / "train", 4, 0)
    write_tone_data(tmp_path / "test", 2, 1)
    with open(tmp_path / "test" / "wav.scp", "a") as f:
        f.write(f"bad {tmp_path / 'missing.wav'}\n")
    standin.main(["--train_dir", str(tmp_path / "train"), "--valid_dir", str(tmp_path / "train"), "--out_dir",
                  str(tmp_path / "model"), "--epochs", "1", "--hidden_size", "16", "--num_layers", "1",
                  "--intermediate_size", "32", "--conv_dim", "8", "--device", "cpu"])
    standin.main(["--out_dir", str(tmp_path / "model"), "--decode_dirs", str(tmp_path / "test"),
                  "--decode_out", str(tmp_path / "decode"), "--device", "cpu"])
    out = tmp_path / "decode" / "test"
    keys = [line.split(" ")[0] for line in (out / "text").read_text().splitlines()]
    assert sorted(keys) == sorted(read_table(tmp_path / "test" / "wav.scp"))
    assert "bad" in read_table(out / "failed") and float((out / "rtf").read_text()) > 0


@pytest.mark.parametrize("case,message", [
    ("missing", "no such directory"),
    ("no_wav_scp", "no wav.scp"),
    ("empty", r"no utterance to decode \(wav.scp is empty\)"),
    ("empty_segments", r"no utterance to decode \(segments is empty\)"),
])
@pytest.mark.parametrize("cli", ["decode_subnets", "onnx_decode"])
def test_a_data_dir_without_utterances_is_an_error_naming_it(model, tmp_path, capsys, case, message, cli):
    import importlib

    d = tmp_path / case
    if case != "missing":
        d.mkdir()
    if case in ("empty", "empty_segments"):
        (d / "wav.scp").write_text("" if case == "empty" else "reco1 x.wav\n")
    if case == "empty_segments":
        (d / "segments").write_text("")
    main = importlib.import_module(f"espnet_allinone.bin.{cli}").main
    args = model if cli == "decode_subnets" else ["--onnx_dir", str(tmp_path / "onnx")]
    with pytest.raises(SystemExit) as e:
        main([*args, "--data_dir", str(d), "--output_dir", str(tmp_path / "out")])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert re.search(rf"--data_dir {re.escape(str(d))}: {message}", err), err
    assert not (tmp_path / "out").exists()


def test_an_error_inside_decoding_fails_that_utterance_and_the_set_goes_on(model, tmp_path, monkeypatch):
    """A non-audio exception (e.g. out of memory on one long recording) is that utterance's
    failure, listed like bad audio; the others are decoded."""
    from espnet_allinone.inference import Speech2Text

    wavs = tmp_path / "wavs"
    wavs.mkdir()
    soundfile.write(wavs / "short.wav", _tone(0.5, 440, 0), FS)
    soundfile.write(wavs / "long.wav", _tone(2.0, 700, 1), FS)
    data = _write_set(tmp_path / "set", [("u1", wavs / "short.wav"), ("u2", wavs / "long.wav"),
                                         ("u3", wavs / "short.wav")])
    call = Speech2Text.__call__

    def oom_on_long(self, speech, *a, **k):
        if len(speech) > FS:
            raise RuntimeError("out of memory (injected by the test)")
        return call(self, speech, *a, **k)

    monkeypatch.setattr(Speech2Text, "__call__", oom_on_long)
    out = tmp_path / "out"
    with contextlib.redirect_stdout(io.StringIO()) as stdout:
        rc = decode_subnets.main([*model, "--data_dir", str(data), "--output_dir", str(out)])
    assert rc == 0
    assert "[decode] set: 2 decoded, 1 failed: u2" in stdout.getvalue()
    failures = read_failures(out / SUBNET / "set")
    assert list(failures) == ["u2"]
    assert "decoding failed (2.0 s of audio): RuntimeError: out of memory (injected by the test)" in failures["u2"]
    assert list(_text(out / SUBNET / "set" / "text")) == ["u1", "u2", "u3"]


def test_an_error_on_every_utterance_stops_the_set_unfinished(model, tmp_path, monkeypatch):
    """The same exception on every utterance is no data problem: the decode stops with it, and the
    set is not marked done (a resumed run decodes it again)."""
    from espnet_allinone.inference import Speech2Text

    wavs = tmp_path / "wavs"
    wavs.mkdir()
    soundfile.write(wavs / "a.wav", _tone(0.5, 440, 0), FS)
    data = _write_set(tmp_path / "set", [("u1", wavs / "a.wav"), ("u2", wavs / "a.wav")])

    def broken(self, speech, *a, **k):
        raise RuntimeError("CUDA error: an illegal memory access (injected by the test)")

    monkeypatch.setattr(Speech2Text, "__call__", broken)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match=r"set: decoding failed on every utterance .*illegal memory access"):
        decode_subnets.main([*model, "--data_dir", str(data), "--output_dir", str(out)])
    assert not (out / SUBNET / "set" / DONE).exists()
