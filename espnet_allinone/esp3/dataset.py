"""A Kaldi-style data dir as an ESPnet3 dataset, and the embedded synthetic corpus as its builder.

An ESPnet3 recipe's ``dataset`` module exports ``Dataset`` (items checked against ``fields``) and
``DatasetBuilder`` (what its ``create_dataset`` stage runs); ``egs3/mini_allinone/esp2_asr/dataset``
re-exports these two.
"""

from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
from espnet3.components.data.base_dataset import BaseDataset
from espnet3.components.data.dataset_builder import DatasetBuilder
from espnet3.contract import Field

from espnet_allinone.data.audio import DataDirAudio
from espnet_allinone.data.kaldi import read_text

PathLike = Union[str, Path]
SYNTH_SPLITS = ("train", "dev", "test", "test_unseen", "dev_unseen")


class KaldiDirDataset(BaseDataset):
    """The utterances of ``<recipe_dir>/<data_dir>/<split>`` (``wav.scp``, ``text``), in ``text``'s order.

    Item: ``{"speech": (samples,) float32 at ``fs`` Hz, "text": str, "utt_id": str}``. A wav.scp entry that
    cannot be read raises :class:`~espnet_allinone.data.audio.BadAudio`, naming the utterance and why.
    """

    fields = (Field("speech", "audio"), Field("text", "text"))

    def __init__(self, split: str, data_dir: PathLike = "data", recipe_dir: Optional[PathLike] = None,
                 fs: int = 16000):
        self.dir = Path(recipe_dir or ".") / data_dir / split
        if not (self.dir / "text").is_file() or not (self.dir / "wav.scp").is_file():
            raise FileNotFoundError(f"{self.dir}: no data dir (text and wav.scp): run the create_dataset stage")
        self.text = read_text(self.dir / "text")
        self.audio = DataDirAudio(self.dir, fs)
        missing = sorted(set(self.text) - set(self.audio.keys()))
        if missing:
            raise ValueError(f"{self.dir}: {len(missing)} utterances of text have no wav.scp entry: {missing[:3]}")
        self.keys: List[str] = list(self.text)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        utt = self.keys[index]
        return {"speech": self.audio[utt].wav.astype(np.float32), "text": self.text[utt], "utt_id": utt}


class SynthCorpusBuilder(DatasetBuilder):
    """``create_dataset`` for the embedded synthetic corpus (:func:`espnet_allinone.data.synth.make_corpus`,
    espeak-ng + sox): writes ``<recipe_dir>/<data_dir>/{train,dev,test,test_unseen,dev_unseen}`` once.
    The corpus is its own source (nothing to download). Keyword arguments of ``create_dataset`` in the
    training YAML (``num_train``, ``num_dev``, ``num_test``, ``num_test_unseen``, ``num_dev_unseen``,
    ``seed``, ``nj``) pass to ``make_corpus``; the others the stage adds are ignored."""

    SIZES = ("num_train", "num_dev", "num_test", "num_test_unseen", "num_dev_unseen", "seed", "nj")

    def is_source_prepared(self, **kwargs) -> bool:
        return True

    def prepare_source(self, **kwargs) -> None:
        pass

    def _dir(self, recipe_dir: Optional[PathLike] = None, data_dir: PathLike = "data", **kwargs) -> Path:
        return Path(recipe_dir or ".") / data_dir

    def is_built(self, **kwargs) -> bool:
        out = self._dir(**kwargs)
        wanted = [s for s in SYNTH_SPLITS if kwargs.get(f"num_{s}", 1)]
        return all((out / s / "text").is_file() and (out / s / "wav.scp").is_file() for s in wanted)

    def build(self, **kwargs) -> None:
        from espnet_allinone.data.synth import make_corpus

        make_corpus(self._dir(**kwargs), **{k: kwargs[k] for k in self.SIZES if k in kwargs})


def training_text(split: str = "train", data_dir: PathLike = "data",
                  recipe_dir: Optional[PathLike] = None) -> List[str]:
    """The transcripts of a split, for ESPnet3's tokenizer stage (``tokenizer.text_builder``)."""
    return list(read_text(Path(recipe_dir or ".") / data_dir / split / "text").values())
