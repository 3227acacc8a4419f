import shutil

import pytest
import soundfile

from espnet_allinone.data import synth
from espnet_allinone.data.sentences import unique_sentences, vocabulary

needs_synth = pytest.mark.skipif(
    not all(shutil.which(p) for p in ("espeak-ng", "flite", "sox")),
    reason="espeak-ng/flite/sox not installed (tools/setup.sh installs them)",
)
TINY = dict(num_train=6, num_dev=2, num_test=3, num_test_unseen=2, num_dev_unseen=2,
            train_voices=["espeak-ng:en-us+m3", "flite:slt"], nj=2, log=lambda *a: None)


def test_sentences_varied_vocabulary_and_deterministic():
    assert len(vocabulary()) > 500
    a = unique_sentences(1000, seed=3)
    assert a == unique_sentences(1000, seed=3)
    assert a != unique_sentences(1000, seed=4)
    assert len(set(a)) == 1000
    words = {w for s in a for w in s.split()}
    assert len(words) > 400


@needs_synth
def test_corpus_deterministic_disjoint_and_16k(tmp_path):
    synth.make_corpus(tmp_path / "a", seed=1, **TINY)
    synth.make_corpus(tmp_path / "b", seed=1, **TINY)
    texts = {}
    for split in ["train", "dev", "test", "test_unseen", "dev_unseen"]:
        a = (tmp_path / "a" / split / "text").read_text()
        assert a == (tmp_path / "b" / split / "text").read_text()
        texts[split] = {line.split(" ", 1)[1] for line in a.splitlines()}
        for line in (tmp_path / "a" / split / "wav.scp").read_text().splitlines():
            key, path = line.split()
            info = soundfile.info(path)
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert info.frames > 16000 * 0.5
            other = path.replace(str(tmp_path / "a"), str(tmp_path / "b"))
            assert open(path, "rb").read() == open(other, "rb").read()
        for name in ["utt2spk", "spk2utt", "utt2num_samples"]:
            assert (tmp_path / "a" / split / name).exists()
    splits = list(texts)
    for i, s in enumerate(splits):
        for t in splits[i + 1:]:
            assert not texts[s] & texts[t], (s, t)
    def spk(split):
        return {ln.split()[1] for ln in (tmp_path / "a" / split / "utt2spk").read_text().splitlines()}

    assert spk("test_unseen") == {synth.speaker_id(v) for v in synth.UNSEEN_VOICES}
    assert spk("dev_unseen") == {synth.speaker_id(v) for v in synth.DEV_UNSEEN_VOICES}
    assert not spk("test_unseen") & spk("train")
    assert not spk("dev_unseen") & (spk("train") | spk("test_unseen"))


@needs_synth
def test_dev_unseen_leaves_the_other_splits_as_they_were(tmp_path):
    without = {**TINY, "num_dev_unseen": 0}
    synth.make_corpus(tmp_path / "a", seed=1, **without)
    synth.make_corpus(tmp_path / "b", seed=1, **TINY)
    assert not (tmp_path / "a/dev_unseen").exists()
    for split in ["train", "dev", "test", "test_unseen"]:
        assert (tmp_path / "a" / split / "text").read_text() == (tmp_path / "b" / split / "text").read_text()


def test_missing_synthesizer_names_the_package(monkeypatch):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(synth.SynthesizerError, match="apt-get install espeak-ng"):
        synth.check_voice("espeak-ng:en-us")
    with pytest.raises(synth.SynthesizerError, match="apt-get install flite"):
        synth.check_voice("flite:slt")


@needs_synth
@pytest.mark.parametrize("voice", ["espeak-ng:en-us+nosuch", "espeak-ng:xx-nolang", "flite:nosuch", "say:alex"])
def test_absent_voice_is_an_error(voice):
    with pytest.raises(synth.SynthesizerError):
        synth.check_voice(voice)


@pytest.mark.parametrize("voices, error", [
    (dict(train_voices=["flite:slt"], unseen_voices=["flite:slt"]), "unseen voices also in training"),
    (dict(train_voices=["flite:slt"], unseen_voices=["flite:awb"], dev_unseen_voices=["flite:slt"]),
     "dev_unseen voices also in training"),
    (dict(train_voices=["flite:slt"], unseen_voices=["flite:awb"], dev_unseen_voices=["flite:awb"]),
     "dev_unseen voices also in test_unseen"),
])
def test_unseen_voice_must_not_be_in_training(tmp_path, voices, error):
    with pytest.raises(ValueError, match=error):
        synth.make_corpus(tmp_path, **voices)
