"""Greedy and lexicon CTC with ESPnet's batch decoding (202609.post1+: ``batch_decode``)."""

import numpy as np
import pytest
import soundfile
import yaml

from espnet_allinone import lang
from espnet_allinone.inference import _STOCK, Speech2Text
from tests.conftest import FIXTURE_202511, make_allinone_files


@pytest.fixture
def model(tmp_path):
    config, model_file = make_allinone_files(tmp_path / "allinone", chars=[*"abcde", "<space>"])
    wav, _ = soundfile.read(FIXTURE_202511 / "utt.wav", dtype="float32")
    rng = np.random.default_rng(0)
    waves = [wav, wav[: len(wav) * 2 // 3] + rng.normal(0, 0.05, len(wav) * 2 // 3).astype(np.float32)]
    return config, model_file, waves, yaml.safe_load(config.read_text())["token_list"]


def _decoders(tmp_path, token_list):
    lexicon = tmp_path / "lexicon.txt"
    words = ["a", "ab", "bad", "cab", "dab", "ace", "bead", "deed"]
    lexicon.write_text("".join(f"{line}\n" for line in lang.lexicon_lines(words, token_list)))
    return [("ctc_greedy", dict(ctc_greedy=True)),
            ("ctc_lexicon_decoder", dict(ctc_lexicon_decoder={"lexicon": str(lexicon), "beam_size": 5}))]


def test_batch_decode_honours_greedy_and_lexicon_ctc(model, tmp_path):
    """A list, a padded array as stock ``inference`` hands it, and ``__call__`` on a list all
    decode as one utterance at a time; on 202609+ not as the stock batched beam search would."""
    pytest.importorskip("flashlight.lib.text.decoder", reason="the lexicon decoder needs flashlight-text")
    config, model_file, waves, token_list = model
    stock_batch_decode = getattr(_STOCK["Speech2Text"], "batch_decode", None)
    for name, options in _decoders(tmp_path, token_list):
        one = Speech2Text(str(config), str(model_file), device="cpu", **options)
        alone = [one(w)[0][2] for w in waves]
        batched = Speech2Text(str(config), str(model_file), device="cpu", batch_size=2, **options)
        lengths = [len(w) for w in waves]
        padded = np.zeros((2, max(lengths)), dtype=np.float32)
        for i, w in enumerate(waves):
            padded[i, : len(w)] = w
        got = [batched.batch_decode(waves), batched.batch_decode(padded, np.array(lengths)),
               batched.batch_decode([w[None] for w in waves])]  # (1, S) items, reshaped as stock does
        if stock_batch_decode is not None:
            got.append(batched(list(waves)))  # stock __call__ hands a list to batch_decode
            stock = [r[0][2] for r in stock_batch_decode(batched, waves)]
            assert stock != alone, f"{name}: the stock batched search gives the same tokens: no check"
        for results in got:
            assert [r[0][2] for r in results] == alone, name


def test_batch_decode_without_batch_decoding_in_espnet_says_so(model):
    config, model_file, waves, _ = model
    beam = Speech2Text(str(config), str(model_file), device="cpu", beam_size=2)
    if hasattr(_STOCK["Speech2Text"], "batch_decode"):
        assert len(beam.batch_decode(waves)) == 2
    else:
        with pytest.raises(NotImplementedError, match="has no batch decoding"):
            beam.batch_decode(waves)
