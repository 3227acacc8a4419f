"""The ESPnet3 dataset pieces of the egs3 recipes: a Kaldi-style data dir as ESPnet3 items (checked against
ESPnet3's dataset contract), and the synthetic corpus as the create_dataset stage's builder."""

import shutil

import numpy as np
import pytest
import soundfile

from tests.conftest import NOT_ON_THIS_LINE, write_tone_data

pytest.importorskip("espnet3", reason=f"{NOT_ON_THIS_LINE}ESPnet3 ships with ESPnet 202609+")

from espnet_allinone.esp3.dataset import KaldiDirDataset, SynthCorpusBuilder, training_text  # noqa: E402


def test_kaldi_dir_items_pass_the_contract_in_text_order(tmp_path):
    write_tone_data(tmp_path / "data" / "dev", 3, seed=0)
    ds = KaldiDirDataset("dev", recipe_dir=tmp_path)
    text = dict(line.split(" ", 1) for line in (tmp_path / "data/dev/text").read_text().splitlines())
    assert len(ds) == 3 and [ds[i]["utt_id"] for i in range(3)] == list(text)
    item = ds[0]  # the first item is checked against ESPnet3's contract (fields speech: audio, text: text)
    assert item["speech"].dtype == np.float32 and item["speech"].ndim == 1 and item["text"] == text[item["utt_id"]]
    path = (tmp_path / "data/dev/wav.scp").read_text().split()[1]
    assert np.allclose(item["speech"], soundfile.read(path, dtype="float32")[0])
    assert training_text("dev", recipe_dir=tmp_path) == list(text.values())


def test_kaldi_dir_errors_name_the_dir_and_the_utterances(tmp_path):
    with pytest.raises(FileNotFoundError, match="data/train: no data dir .* run the create_dataset stage"):
        KaldiDirDataset("train", recipe_dir=tmp_path)
    write_tone_data(tmp_path / "data" / "dev", 2, seed=0)
    scp = tmp_path / "data/dev/wav.scp"
    scp.write_text(scp.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match=r"1 utterances of text have no wav.scp entry: \['dev_01'\]"):
        KaldiDirDataset("dev", recipe_dir=tmp_path)


@pytest.mark.skipif(not all(shutil.which(p) for p in ("espeak-ng", "flite", "sox")),
                    reason="espeak-ng/flite/sox not installed (tools/setup.sh installs them)")
def test_synth_builder_writes_the_splits_once(tmp_path):
    sizes = dict(num_train=2, num_dev=1, num_test=1, num_test_unseen=1, num_dev_unseen=0, nj=1)
    builder = SynthCorpusBuilder()
    # create_dataset passes the YAML's create_dataset block, with keys of its own (func, dataset_dir)
    kwargs = dict(recipe_dir=tmp_path, func=None, dataset_dir=str(tmp_path / "downloads"), **sizes)
    assert builder.is_source_prepared(**kwargs) and not builder.is_built(**kwargs)
    builder.build(**kwargs)
    assert builder.is_built(**kwargs) and not (tmp_path / "data/dev_unseen").exists()
    splits = ("train", "dev", "test", "test_unseen")
    assert [len(KaldiDirDataset(s, recipe_dir=tmp_path)) for s in splits] == [2, 1, 1, 1]
    assert KaldiDirDataset("test_unseen", recipe_dir=tmp_path)[0]["speech"].size > 1000
