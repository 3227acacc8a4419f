"""BatchNorm recalibration of a trained model file: the statistics of layer-wise subnets, or of subnets of
the space whose statistics training never updated, estimated from utterances of a data dir and stored with
the model (:meth:`~espnet_allinone.encoders.abs_allinone.AllInOneEncoderMixin.recalibrate_batchnorm`)."""

import sys
from pathlib import Path
from typing import List, Tuple, Union

import torch
import yaml

from espnet_allinone.data.audio import BadAudio, DataDirAudio, sample_rate
from espnet_allinone.export import load_allinone
from espnet_allinone.fileio import atomic_path
from espnet_allinone.search import feature_batches
from espnet_allinone.subnet import Subnet


def recalibrate_model(asr_train_config: Union[str, Path], asr_model_file: Union[str, Path],
                      data_dir: Union[str, Path], subnets: List[str], output_model: Union[str, Path],
                      num_utts: int = 300, batch_size: int = 8) -> List[Tuple[Subnet, int]]:
    """Estimate the BatchNorm statistics of ``subnets`` from ``num_utts`` utterances of ``data_dir``
    (evenly spread, batches of ``batch_size``; unreadable audio skipped with a message) and write the whole
    state dict to ``output_model`` (atomically). Returns (subnet, batches seen) per subnet; ValueError
    (naming the subnet and why) for a subnet that does not fit or needs no recalibration."""
    model = load_allinone(asr_train_config, asr_model_file)
    specs = [model.encoder.subnet_space.get(s) for s in subnets]
    train_config = yaml.safe_load(Path(asr_train_config).read_text())
    reader = DataDirAudio(Path(data_dir), sample_rate(train_config.get("frontend_conf")))
    keys = sorted(reader.keys())
    keys = keys[:: max(1, len(keys) // num_utts)][:num_utts]
    wavs = []
    for k in keys:
        try:
            wavs.append((k, reader[k].wav))
        except BadAudio as e:
            print(f"[recalibrate] skipped: {e}", file=sys.stderr, flush=True)
    batches = [(feats, lengths) for _, feats, lengths in feature_batches(model, wavs, batch_size)]
    done = []
    for spec in specs:
        n = model.encoder.recalibrate_batchnorm(spec, batches)
        print(f"[recalibrate] {spec}: BatchNorm statistics from {len(wavs)} utterances ({n} batches)", flush=True)
        done.append((spec, n))
    with atomic_path(output_model) as tmp:
        torch.save(model.state_dict(), tmp)
    print(f"[recalibrate] wrote {output_model}", flush=True)
    return done
