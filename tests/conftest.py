import os
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml
from espnet2.asr.ctc import CTC
from espnet2.asr.decoder.transformer_decoder import TransformerDecoder

from espnet_allinone.elastic import ElasticWeight, SubnetBatchNorm1d
from espnet_allinone.encoders.conformer import AllInOneConformerEncoder
from espnet_allinone.model import AllInOneASRModel

# Tiny shapes shared by the tests.
IDIM = 20
ADIM = 16
UNITS = 32
VOCAB = 10
TINY = dict(
    output_size=ADIM,
    attention_heads=2,
    linear_units=UNITS,
    num_blocks=3,
    rel_pos_type="latest",
    pos_enc_layer_type="rel_pos",
    selfattention_layer_type="rel_selfattn",
    macaron_style=True,
    input_layer="conv2d",
)
GRID = dict(subnet_depths=[2, 3], subnet_widths=[16, 32], subnet_bits=[4, 8])
# checkpoints written by the ESPnet 202511 line (tests/data/make_espnet202511_fixture.py)
FIXTURE_202511 = Path(__file__).parent / "data" / "espnet202511"


def pytest_report_header(config):
    import platform
    from importlib.metadata import version

    from espnet_allinone import compat

    line = "202511" if compat.NETS_PACKAGE == "espnet.nets" else "202609-202611"
    return (f"ESPnet line {line}: espnet {compat.ESPNET_VERSION}, torch {torch.__version__}, "
            f"Python {platform.python_version()}, espnet_allinone {version('espnet_allinone')}")


# A skip whose reason starts so says the test does not apply to the installed ESPnet line; any
# other skip (a missing tool or package) fails the run under ALLINONE_NO_SKIPS=1 (tools/test.sh),
# since the tests back the README's claims.
NOT_ON_THIS_LINE = "not on this ESPnet line: "
_SKIPPED: list = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        _note_skip(report)


def pytest_collectreport(report):  # a module-level skip (importorskip) skips at collection
    if report.skipped:
        _note_skip(report)


def _note_skip(report) -> None:
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    reason = reason.removeprefix("Skipped: ")
    if not reason.startswith(NOT_ON_THIS_LINE):
        _SKIPPED.append((report.nodeid, reason))


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED and os.environ.get("ALLINONE_NO_SKIPS") == "1":
        terminalreporter.section("skipped tests (ALLINONE_NO_SKIPS=1: the run fails)")
        for nodeid, reason in _SKIPPED:
            terminalreporter.write_line(f"{nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and os.environ.get("ALLINONE_NO_SKIPS") == "1" and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    random.seed(0)


def make_encoder(grid=GRID, **kw):
    conf = {**TINY, **kw}
    return AllInOneConformerEncoder(IDIM, **grid, **conf)


def as_trained(module: torch.nn.Module) -> torch.nn.Module:
    """Stand in for training in tests of other mechanics: every bit-width's step sizes initialised
    from the weights and counted as trained on every output channel, every BatchNorm statistic counted
    as updated once, the FFN order settled (what training steps that run each subnet set; the
    statistics keep their values). Returns ``module``."""
    for m in module.modules():
        if hasattr(m, "settle_ffn_order"):
            m.settle_ffn_order()
        if isinstance(m, ElasticWeight):
            for key in m.weight_log_step:
                m.init_steps(int(key[: -len("bit")]))
            with torch.no_grad():
                m.weight_log_step_width.fill_(m.weight.size(0))
            m._widths_trained = {}
        elif isinstance(m, SubnetBatchNorm1d):
            for name, buf in m.named_buffers():
                if name.startswith("num_batches_tracked"):
                    buf.clamp_(min=1)
    return module


def make_model(encoder=None, **model_conf):
    encoder = encoder or make_encoder()
    return AllInOneASRModel(
        vocab_size=VOCAB,
        token_list=[f"t{i}" for i in range(VOCAB - 1)] + ["<sos/eos>"],
        frontend=None,
        specaug=None,
        normalize=None,
        preencoder=None,
        encoder=encoder,
        postencoder=None,
        decoder=TransformerDecoder(VOCAB, ADIM, attention_heads=2, linear_units=UNITS, num_blocks=1),
        ctc=CTC(VOCAB, ADIM),
        joint_network=None,
        **{"ctc_weight": 0.3, **model_conf},
    )


def batch(b=2, t=60):
    x = torch.randn(b, t, IDIM)
    xl = torch.tensor([t] + [t - 10] * (b - 1))
    y = torch.randint(1, VOCAB - 1, (b, 5))
    yl = torch.tensor([5] + [3] * (b - 1))
    return x, xl, y, yl


# Tiny end-to-end data and training config for tests that run ESPnet's entry points.
CHARS = list("abcde")


def write_tone_data(root: Path, n: int, seed: int, samples_per_char: int = 3200):
    """n utterances: one tone of ``samples_per_char`` samples (16 kHz) per character of a
    random 2-4 char text; writes wav.scp, text and speech_shape."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True)
    scp, text, shape = [], [], []
    for i in range(n):
        uid = f"{root.name}_{i:02d}"
        chars = rng.choice(CHARS, size=rng.integers(2, 5))
        wav = np.concatenate(
            [np.sin(2 * np.pi * (300 + 150 * CHARS.index(c)) * np.arange(samples_per_char) / 16000)
             for c in chars]
        ) * 0.3 + rng.normal(0, 0.01, len(chars) * samples_per_char)
        soundfile.write(root / f"{uid}.wav", wav.astype(np.float32), 16000)
        scp.append(f"{uid} {root / (uid + '.wav')}")
        text.append(f"{uid} {''.join(chars)}")
        shape.append(f"{uid} {len(wav)}")
    for name, lines in [("wav.scp", scp), ("text", text), ("speech_shape", shape)]:
        (root / name).write_text("\n".join(lines) + "\n")


TRAIN_CONFIG = {
    "frontend_conf": {"n_fft": 400, "hop_length": 160, "n_mels": 20},
    "encoder": "allinone_conformer",
    "encoder_conf": {
        "output_size": 16, "attention_heads": 2, "linear_units": 32, "num_blocks": 2,
        "input_layer": "conv2d", "macaron_style": True, "rel_pos_type": "latest",
        "pos_enc_layer_type": "rel_pos", "selfattention_layer_type": "rel_selfattn",
        "subnet_depths": [1, 2], "subnet_widths": [16, 32], "subnet_bits": [4, 32],
    },
    "decoder": "transformer",
    "decoder_conf": {"attention_heads": 2, "linear_units": 32, "num_blocks": 1},
    "model": "allinone",
    "model_conf": {"ctc_weight": 0.3, "subnet_sampling": "sandwich", "use_kl": True},
    "optim": "adam", "optim_conf": {"lr": 0.002},
    "batch_type": "unsorted", "batch_size": 2, "max_epoch": 1,
    "num_workers": 0, "use_tensorboard": False, "seed": 0,
}

def write_token_list(path: Path, chars=CHARS):
    """ESPnet char token list: <blank>, <unk>, the characters, <sos/eos>."""
    path.write_text("\n".join(["<blank>", "<unk>", *chars, "<sos/eos>"]) + "\n")


def write_tone_corpus(root: Path, num_train: int, num_dev: int):
    """root/{train,dev} (write_tone_data) and root/tokens.txt, as ASR_TRAIN_DATA_ARGS expect."""
    write_tone_data(root / "train", num_train, 0)
    write_tone_data(root / "dev", num_dev, 1)
    write_token_list(root / "tokens.txt")


# the data arguments of espnet2.bin.asr_train for dirs written by write_tone_data, as asr.sh passes them
ASR_TRAIN_DATA_ARGS = [
    "--train_data_path_and_name_and_type", "train/wav.scp,speech,sound",
    "--train_data_path_and_name_and_type", "train/text,text,text",
    "--train_shape_file", "train/speech_shape",
    "--valid_data_path_and_name_and_type", "dev/wav.scp,speech,sound",
    "--valid_data_path_and_name_and_type", "dev/text,text,text",
    "--valid_shape_file", "dev/speech_shape",
]


N_MELS = TRAIN_CONFIG["frontend_conf"]["n_mels"]


def make_allinone_files(d, chars=CHARS, **encoder_conf):
    """config.yaml + model.pth of a randomly initialised all-in-one model (fixed seed) standing
    in for a trained one: distinct BatchNorm statistics per subnet, counted as updated, and every
    bit-width's step sizes initialised (what a training step that runs each subnet sets); a
    global-MVN stats file; its token list holds ``chars``."""
    from espnet2.tasks.asr import ASRTask

    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    np.savez(d / "feats_stats.npz", count=np.array(100.0),
             sum=rng.normal(0, 10, N_MELS), sum_square=np.full(N_MELS, 400.0))
    write_token_list(d / "tokens.txt", chars)
    config = {
        **TRAIN_CONFIG,
        "encoder_conf": {**TRAIN_CONFIG["encoder_conf"], "subnet_bits": [4, 8, 32],
                         "use_cnn_module": True, "cnn_module_kernel": 5, **encoder_conf},
        "normalize": "global_mvn",
        "normalize_conf": {"stats_file": str(d / "feats_stats.npz")},
    }
    (d / "train.yaml").write_text(yaml.safe_dump(config))
    args = ASRTask.get_parser().parse_args(
        ["--config", str(d / "train.yaml"), "--token_list", str(d / "tokens.txt"),
         "--token_type", "char", "--output_dir", str(d / "exp")]
    )
    torch.manual_seed(0)
    model = ASRTask.build_model(args)
    for m in model.encoder.modules():
        if isinstance(m, SubnetBatchNorm1d):  # distinct statistics per (width, bits)
            for name, buf in m.named_buffers():
                if name.startswith("running_"):
                    buf.copy_(torch.rand_like(buf) + 0.5)
                elif name.startswith("num_batches_tracked"):
                    buf.fill_(10)
    as_trained(model)
    (d / "config.yaml").write_text(yaml.safe_dump(vars(args)))
    torch.save(model.state_dict(), d / "model.pth")
    return d / "config.yaml", d / "model.pth"


def set_frontend_fs(config_file: Path, fs) -> None:
    """Write ``frontend_conf: {fs: ...}`` into a model's config.yaml as asr.sh passes it
    (``--frontend_conf fs=16k``); None leaves ESPnet's default (no key)."""
    if fs is None:
        return
    conf = yaml.safe_load(config_file.read_text())
    conf["frontend_conf"] = {**(conf.get("frontend_conf") or {}), "fs": fs}
    config_file.write_text(yaml.safe_dump(conf))
