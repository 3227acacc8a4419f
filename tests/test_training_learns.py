"""Training learns: a tiny all-in-one model, trained by stock ``espnet2.bin.asr_train``
as the mini recipe trains it, fits a handful of utterances with every one of its subnets.

A regression that stops learning (a broken gradient path, a step size that never
moves, a subnet that is never trained, a quantizer that zeroes the weights) makes a
subnet stay near chance, and this test fails.
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from espnet_allinone.train_log import epoch_results
from tests.conftest import ASR_TRAIN_DATA_ARGS, CHARS, write_tone_corpus

pytestmark = pytest.mark.slow

# 8 subnets (2 depths x 2 FFN widths x 2 bit-widths), sandwich rule with 1 random
# subnet and KL, as the embedded default; tiny dimensions.
CONFIG = {
    "frontend_conf": {"n_fft": 400, "hop_length": 160, "n_mels": 20},
    "encoder": "allinone_conformer",
    "encoder_conf": {
        "output_size": 32, "attention_heads": 2, "linear_units": 64, "num_blocks": 2,
        "dropout_rate": 0.0, "positional_dropout_rate": 0.0, "attention_dropout_rate": 0.0,
        "input_layer": "conv2d", "macaron_style": True, "rel_pos_type": "latest",
        "pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "rel_selfattn",
        "cnn_module_kernel": 7,
        "subnet_depths": [1, 2], "subnet_widths": [32, 64], "subnet_bits": [4, 8],
    },
    "decoder": "transformer",
    "decoder_conf": {"attention_heads": 2, "linear_units": 64, "num_blocks": 1,
                     "dropout_rate": 0.0, "positional_dropout_rate": 0.0,
                     "self_attention_dropout_rate": 0.0, "src_attention_dropout_rate": 0.0},
    "model": "allinone",
    "model_conf": {"ctc_weight": 0.3, "lsm_weight": 0.0, "subnet_sampling": "sandwich",
                   "num_random_subnets": 1, "use_kl": True, "lambda_preset": "conformer"},
    "optim": "adam", "optim_conf": {"lr": 0.005},
    "scheduler": "warmuplr", "scheduler_conf": {"warmup_steps": 20},
    "batch_type": "unsorted", "batch_size": 4, "max_epoch": 16,
    "num_workers": 0, "use_tensorboard": False, "use_matplotlib": False, "seed": 0,
    "num_att_plot": 0,
    "best_model_criterion": [["valid", "acc_mean", "max"]],
    "keep_nbest_models": 16,  # every epoch's checkpoint: the dev-WER curve decodes them
}
NUM_UTTS = 8
COPIES = 4  # each utterance 4x per epoch: 8 updates per epoch, fewer epoch overheads
# Chance level of the decoder's next-token accuracy is ~1/len(CHARS) = 0.2 (5 tone
# characters, plus <sos/eos>); an untrained model sits there. Fitting 8 utterances of
# 2-4 tones means reproducing them: every subnet, 4-bit ones and the shallowest one
# included, must get at least 9 of 10 tokens right and its greedy CTC output within
# 20 % CER of the reference (greedy_cer).
MIN_ACC = 0.9
MAX_CER_CTC = 0.2
# Each text is one "word" of 2-4 tones, so WER counts utterances not exactly right.
MAX_WER_LAST = 25.0

CONVERGENCE = Path(__file__).resolve().parents[1] / "egs2/mini_allinone/asr1/local/convergence.py"


def load_convergence():
    spec = importlib.util.spec_from_file_location("convergence", CONVERGENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_subnet_fits_a_handful_of_utterances(tmp_path, monkeypatch):
    write_tone_corpus(tmp_path, NUM_UTTS, 1)
    train = tmp_path / "train"
    for name in ("wav.scp", "text", "speech_shape"):
        lines = (train / name).read_text().splitlines()
        # validate on the training utterances: ESPnet's validation then measures the fit
        (tmp_path / "dev" / name).write_text("\n".join(lines) + "\n")
        (train / name).write_text("".join(f"c{c}_{line}\n" for c in range(COPIES) for line in lines))
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(CONFIG))
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "espnet2.bin.asr_train", "--config", "train.yaml",
         "--token_type", "char", "--token_list", "tokens.txt", "--use_preprocessor", "true",
         *ASR_TRAIN_DATA_ARGS, "--output_dir", "exp", "--ngpu", "0"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    epochs = epoch_results_of(proc.stderr)
    first, last = epochs[min(epochs)]["valid"], epochs[max(epochs)]["valid"]
    subnets = sorted(k[len("acc_"):] for k in last if k.startswith("acc_") and k != "acc_mean")
    assert len(subnets) == 8, subnets
    report = {s: (float(first[f"acc_{s}"]), float(last[f"acc_{s}"]), greedy_cer(tmp_path, max(epochs), s))
              for s in subnets}
    failing = {s: r for s, r in report.items() if r[1] < MIN_ACC or r[2] > MAX_CER_CTC}
    print({s: r for s, r in report.items()})
    assert not failing, f"subnets that did not fit (acc epoch 1, acc last, greedy CTC CER last): {failing}"
    assert all(r[0] < MIN_ACC for r in report.values()), "fitted after one epoch: the test is too easy"

    # The recipe's dev-WER curve (local/convergence.py --dev_wer): decode_subnets on the
    # epoch checkpoints, scored against the references; the fit shows as a falling WER.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exp" / "train.log").write_text(proc.stderr)  # as run.sh tees it
    (tmp_path / "greedy.yaml").write_text(yaml.safe_dump({"ctc_greedy": True, "beam_size": 1, "ctc_weight": 1.0}))
    convergence = load_convergence()
    rows = convergence.curve(tmp_path / "exp")
    ends = [rows[0], rows[-1]]
    convergence.add_dev_wer(tmp_path / "exp", ends, tmp_path / "dev", tmp_path / "greedy.yaml", nj=1)
    for tag in ("largest", "smallest"):
        first_wer, last_wer = ends[0][f"wer_{tag}"], ends[1][f"wer_{tag}"]
        assert last_wer <= MAX_WER_LAST < first_wer, (tag, first_wer, last_wer)


def greedy_cer(d: Path, epoch: int, subnet: str) -> float:
    """CER of greedy CTC on ``d``/dev, each utterance decoded alone with the epoch's checkpoint.

    Not ESPnet's validation ``cer_ctc``: that takes the CTC argmax over every frame of the
    padded batch, so tokens emitted on padding count as errors; with ESPnet 202610+ (padded
    frames zeroed in the convolution module) that alone made it 0.24 where the
    utterances decoded alone, or the argmax within each utterance's length, give 0.04.
    """
    import jiwer
    import soundfile

    from espnet_allinone.data.kaldi import read_text
    from espnet_allinone.inference import Speech2Text

    s2t = Speech2Text(str(d / "exp/config.yaml"), str(d / f"exp/{epoch}epoch.pth"), subnet=subnet,
                      ctc_greedy=True, device="cpu")
    refs, wavs = read_text(d / "dev/text"), read_text(d / "dev/wav.scp")
    hyps = [s2t(soundfile.read(wavs[k], dtype="float32")[0])[0][0] or "" for k in refs]
    return jiwer.cer(list(refs.values()), hyps)


def epoch_results_of(log_text: str):
    """epoch_results on a log given as text."""
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        log = Path(d) / "train.log"
        log.write_text(log_text)
        return epoch_results(log)


def test_chars_of_the_tone_corpus():
    assert len(CHARS) == 5  # MIN_ACC's chance level above assumes 5 characters
