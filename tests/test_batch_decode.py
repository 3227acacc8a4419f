"""Greedy and lexicon CTC with ESPnet's batch decoding (202609.post1+: ``batch_decode``)."""

import espnet2.bin.asr_inference as stock
import numpy as np
import pytest
import soundfile
import yaml

from espnet_allinone import lang
from espnet_allinone.inference import _STOCK, Speech2Text
from tests.conftest import make_allinone_files
from tests.test_cross_line import FIXTURE


@pytest.fixture
def model(tmp_path):
    config, model_file = make_allinone_files(tmp_path / "allinone", chars=[*"abcde", "<space>"])
    wav, _ = soundfile.read(FIXTURE / "utt.wav", dtype="float32")
    rng = np.random.default_rng(0)
    waves = [wav, wav[: len(wav) * 2 // 3] + rng.normal(0, 0.05, len(wav) * 2 // 3).astype(np.float32)]
    return config, model_file, waves, yaml.safe_load(config.read_text())["token_list"]


def _decoders(tmp_path, token_list):
    lexicon = tmp_path / "lexicon.txt"
    words = ["a", "ab", "bad", "cab", "dab", "ace", "bead", "deed"]
    lexicon.write_text("".join(f"{line}\n" for line in lang.lexicon_lines(words, token_list)))
    yield "ctc_greedy", dict(ctc_greedy=True)
    try:
        import flashlight.lib.text.decoder  # noqa: F401
    except ImportError:
        return  # setup.py installs flashlight-text where wheels exist; greedy is checked alone then
    yield "ctc_lexicon_decoder", dict(ctc_lexicon_decoder={"lexicon": str(lexicon), "beam_size": 5})


def test_batch_decode_honours_greedy_and_lexicon_ctc(model, tmp_path):
    config, model_file, waves, token_list = model
    if not hasattr(_STOCK["Speech2Text"], "batch_decode"):  # ESPnet 202511: no batch decoding at all
        with pytest.raises(NotImplementedError, match="batch decoding is not implemented"):
            stock.main(["--output_dir", str(tmp_path / "out"), "--batch_size", "2", "--ctc_greedy", "true",
                        "--data_path_and_name_and_type", "wav.scp,speech,sound",
                        "--asr_train_config", str(config), "--asr_model_file", str(model_file)])
        return
    beam = Speech2Text(str(config), str(model_file), device="cpu", beam_size=2, ctc_weight=0.3)
    for name, options in _decoders(tmp_path, token_list):
        one = Speech2Text(str(config), str(model_file), device="cpu", **options)
        alone = [one(w) for w in waves]
        batched = Speech2Text(str(config), str(model_file), device="cpu", batch_size=2, **options)
        listed = batched.batch_decode(waves)
        lengths = [len(w) for w in waves]
        padded = np.zeros((2, max(lengths)), dtype=np.float32)
        for i, w in enumerate(waves):
            padded[i, : len(w)] = w
        as_stock_inference = batched.batch_decode(padded, np.array(lengths))
        for got in (listed, as_stock_inference, batched(list(waves))):
            assert [r[0][2] for r in got] == [r[0][2] for r in alone], name
        # and not what the batched beam search would have given
        assert [r[0][2] for r in alone] != [r[0][2] for r in beam.batch_decode(waves)], name
