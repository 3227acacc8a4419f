"""Write tests/data/espnet202511/: checkpoints made with ESPnet 202511, and what 202511 computed
with them, for ``tests/test_cross_line.py`` to check under the installed ESPnet.

Run it on the ESPnet 202511 line only (the checkpoints must be written by that line):

    .venv/bin/python tests/data/make_espnet202511_fixture.py

Writes (all tiny, seeded):
    allinone/config.yaml, model.pth, feats_stats.npz   an all-in-one model (every step size and
                                                       BatchNorm statistic set, as trained)
    stock/model.pth                                    a stock ESPnetASRModel with ConformerEncoder
    utt.wav                                            one utterance (tones, 16 kHz)
    expected.json   per subnet: greedy-CTC and beam-search hypotheses (token ids) of utt.wav;
                    the stock encoder's output on fixed features (to check --init_param)
"""

import json
import shutil
import sys
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/: conftest's tiny-model helpers

from conftest import make_allinone_files, write_tone_data  # noqa: E402

OUT = HERE / "espnet202511"
SUBNETS = ["2-32-32bit", "2-32-8bit", "1-16-4bit"]
BEAM = dict(beam_size=3, ctc_weight=0.8, nbest=1, maxlenratio=0.0)  # CTC-led: hypotheses differ by subnet
STOCK_FEATS = dict(shape=(1, 40, 20), seed=123)  # (B, T, n_mels) input of the stock encoder check


def stock_features() -> torch.Tensor:
    g = torch.Generator().manual_seed(STOCK_FEATS["seed"])
    return torch.randn(*STOCK_FEATS["shape"], generator=g)


def decode(config: Path, model: Path, wav: np.ndarray) -> dict:
    from espnet_allinone.inference import Speech2Text

    out = {}
    for subnet in SUBNETS:
        greedy = Speech2Text(str(config), str(model), subnet=subnet, ctc_greedy=True, device="cpu")
        beam = Speech2Text(str(config), str(model), subnet=subnet, device="cpu", **BEAM)
        out[subnet] = {
            "greedy": greedy(wav)[0][2],
            "beam": beam(wav)[0][2],
        }
    return out


def main():
    if version("espnet") != "202511":
        sys.exit(f"run this on the ESPnet 202511 line (installed: espnet {version('espnet')})")
    import soundfile
    from espnet2.tasks.asr import ASRTask

    tmp = OUT.with_name("espnet202511.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    config, model = make_allinone_files(tmp / "allinone")
    write_tone_data(tmp / "data", 1, seed=7)
    shutil.copy(tmp / "data" / "data_00.wav", tmp / "utt.wav")
    wav, _ = soundfile.read(tmp / "utt.wav", dtype="float32")
    expected = {"espnet": version("espnet"), "torch": torch.__version__, "beam": BEAM,
                "decode": decode(config, model, wav)}

    # a stock Conformer model (same encoder shape, stock classes) for --init_param
    conf = yaml.safe_load((tmp / "allinone" / "train.yaml").read_text())
    enc = {k: v for k, v in conf["encoder_conf"].items() if not k.startswith("subnet")}
    conf.update(encoder="conformer", encoder_conf=enc, model="espnet", model_conf={"ctc_weight": 0.3})
    (tmp / "stock").mkdir()
    (tmp / "stock" / "train.yaml").write_text(yaml.safe_dump(conf))
    args = ASRTask.get_parser().parse_args(
        ["--config", str(tmp / "stock" / "train.yaml"), "--token_list", str(tmp / "allinone" / "tokens.txt"),
         "--token_type", "char"])
    torch.manual_seed(1)
    stock = ASRTask.build_model(args).eval()
    torch.save(stock.state_dict(), tmp / "stock" / "model.pth")
    (tmp / "stock" / "train.yaml").unlink()
    with torch.no_grad():
        feats = stock_features()
        out, _, _ = stock.encoder(feats, torch.tensor([feats.size(1)]))
    expected["stock_encoder"] = {"features": STOCK_FEATS, "output": out[0].tolist()}

    # keep what the test needs, with paths relative to the fixture
    for name in ("tokens.txt", "train.yaml"):  # the token list is in config.yaml
        (tmp / "allinone" / name).unlink()
    conf = yaml.safe_load(config.read_text())
    conf["normalize_conf"]["stats_file"] = "feats_stats.npz"
    conf["config"], conf["output_dir"] = None, "exp"
    config.write_text(yaml.safe_dump(conf))
    shutil.rmtree(tmp / "data")
    (tmp / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    shutil.rmtree(OUT, ignore_errors=True)
    tmp.rename(OUT)
    print(f"wrote {OUT}: {sorted(p.name for p in OUT.rglob('*') if p.is_file())}")


if __name__ == "__main__":
    main()
