"""The Switchboard and LibriSpeech recipes' documented commands under ESPnet's real ``asr.sh``.

Runs ``egs2/swbd_allinone/asr1`` (a copy in a temp dir) with the minimal ESPnet checkout of
``../shared/espnet_lite`` on a tiny synthetic stand-in corpus whose data dirs carry the
recipe's names (train_nodup, train_dev, and eval2000_swbd with segments, a NIST stm and a
glm): ``local/setup_espnet.sh --template_only``, ``run.sh --skip_local_data true``
stage 1 (asr.sh stages 2-10: format, speed perturbation, BPE, statistics), stages 2-3 (asr.sh
stage 11 training of an all-in-one model, stages 12-13 for one of its subnets: decoding via
``--inference_args --subnet``, sclite, local/score.sh's Hub5 scoring) and stage 4 (the report:
Hub5 WER, RTF from asr.sh's calculate_rtf.log). CPU, nj 1, a tiny training config; one test
set and one subnet, since every decoded set costs asr.sh's stage 13 six Python start-ups.

LibriSpeech (``egs2/librispeech_allinone/asr1``): a random tiny ``Wav2Vec2ForCTC`` saved as from
the hub stands in for wav2vec2-base-100h, the corpus for train_clean_100 / dev / dev_clean;
``run.sh --skip_local_data true`` stages 1 (asr.sh 2-4), 2 (``hf_token_list``), 3 (asr.sh 10-11,
the CTC head through ``--pretrained_model``) and 4 (asr.sh 12-13 for one subnet).
"""

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SWBD = ROOT / "egs2/swbd_allinone/asr1"
ESPNET_LITE = ROOT.parent / "shared/espnet_lite/espnet_lite.tgz"

# the tiny all-in-one system: 2 subnets (2-64-8bit, 1-64-8bit) of a 2-block Conformer
TINY_CONFIG = {
    "encoder": "allinone_conformer",
    "encoder_conf": dict(output_size=32, attention_heads=2, linear_units=64, num_blocks=2,
                         input_layer="conv2d", cnn_module_kernel=3, macaron_style=True,
                         use_cnn_module=True, rel_pos_type="latest", pos_enc_layer_type="rel_pos",
                         selfattention_layer_type="rel_selfattn", subnet_depths=[1, 2],
                         subnet_widths=[64], subnet_bits=[8]),
    "decoder": "transformer",
    "decoder_conf": dict(attention_heads=2, linear_units=64, num_blocks=1),
    "model": "allinone",
    "model_conf": dict(ctc_weight=0.3, subnet_sampling="all", use_kl=True,
                       lambda_preset="conformer"),
    "frontend_conf": dict(n_fft=512, hop_length=160, n_mels=20),
    "optim": "adam",
    "optim_conf": dict(lr=0.002),
    "batch_type": "folded",
    "batch_size": 8,
    "max_epoch": 1,
    "num_workers": 0,
    "best_model_criterion": [["valid", "acc_mean", "max"]],
    "keep_nbest_models": 1,
    "use_tensorboard": False,
}
TEST_SETS = "eval2000_swbd"
SUBNET = "1-64-8bit"  # the smaller subnet (Sys. 2K of the table)
STM_HEADER = "".join(
    f';; LABEL "{k}" "{v}" ""\n'
    for k, v in [("O", "Overall"), ("en", "English"), ("M", "Male"), ("F", "Female"),
                 ("SWB", "Switchboard"), ("CH", "CallHome")]
)
GLM = """;; a small hand-made GLM
* name "standin"
* desc "test"
* format = 'NIST1'
* max_nrules = '100'
* copy_no_hit = 'T'
* case_sensitive = 'F'
I'M => I AM / [ ] __ [ ] ;;
"""


def _read(path: Path) -> dict:
    return dict(line.split(" ", 1) for line in path.read_text().splitlines() if line.strip())


def _seconds(wav: str) -> float:
    import soundfile

    info = soundfile.info(wav)
    return info.frames / info.samplerate


def write_kaldi_dir(src: Path, dst: Path) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    for f in ("wav.scp", "text", "utt2spk", "spk2utt"):
        shutil.copy(src / f, dst / f)


def write_cts_test_set(src: Path, dst: Path, prefix: str, label: str) -> None:
    """A test set as local/cts_stm_data_prep.sh lays one out: one recording (conversation
    side A) per utterance of ``src``, utterance ids ``<file>-A_<start>-<end>``, segments,
    stm (with LABEL lines, as NIST's) and glm."""
    dst.mkdir(parents=True, exist_ok=True)
    wavs, texts = _read(src / "wav.scp"), _read(src / "text")
    rows = []
    for i, utt in enumerate(sorted(wavs)):
        fname, dur = f"{prefix}_{4000 + i}", _seconds(wavs[utt].strip())
        seg = f"{fname}-A_000000-{int(dur * 100):06d}"
        rows.append((seg, fname, wavs[utt].strip(), dur, texts[utt].strip()))
    with open(dst / "wav.scp", "w") as wav, open(dst / "segments", "w") as segs, \
            open(dst / "text", "w") as text, open(dst / "utt2spk", "w") as u2s, \
            open(dst / "spk2utt", "w") as s2u, open(dst / "stm", "w") as stm:
        stm.write(STM_HEADER)
        for seg, fname, path, dur, words in rows:
            wav.write(f"{fname}-A {path}\n")
            segs.write(f"{seg} {fname}-A 0.00 {int(dur * 100) / 100:.2f}\n")
            text.write(f"{seg} {words}\n")
            u2s.write(f"{seg} {fname}-A\n")
            s2u.write(f"{fname}-A {seg}\n")
            stm.write(f"{fname} A {fname}_A 0.00 {int(dur * 100) / 100:.2f} <O,en,M,{label}> "
                      f"{words}\n")
    (dst / "glm").write_text(GLM)


def _run(cmd, cwd: Path, env: dict, log: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, shell=True)
    log.write_text(f"$ {cmd}\n{out.stdout}\n{out.stderr}")
    assert out.returncode == 0, (
        f"{cmd} failed, log {log}:\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}")
    return out


@pytest.fixture(scope="module")
def espnet_lite(tmp_path_factory) -> Path:
    from espnet_allinone import compat
    from tests.conftest import NOT_ON_THIS_LINE

    if compat.NETS_PACKAGE != "espnet.nets":
        pytest.skip(f"{NOT_ON_THIS_LINE}espnet {compat.ESPNET_VERSION}: the espnet_lite fixture is a checkout "
                    "of the 202511 era (asr.sh of f48416b) whose pyscripts import espnet.utils, which "
                    "ESPnet 202609+ no longer has (a checkout of that line imports espnet2.legacy); "
                    "these runs are on the 202511 line")
    if not ESPNET_LITE.exists():
        pytest.skip(f"{ESPNET_LITE} absent: the minimal ESPnet checkout (asr.sh) these "
                    "recipe runs need lies in ../shared, beside this project")
    for mod in ("resampy", "kaldiio"):
        try:
            __import__(mod)
        except ImportError:
            pytest.skip(f"{mod} missing (asr.sh stage 3 imports it): "
                        "pip install espnet_allinone[recipe]")
    for tool in ("sox", "perl"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (asr.sh needs it)")
    root = tmp_path_factory.mktemp("espnet")
    with tarfile.open(ESPNET_LITE) as tar:
        tar.extractall(root)
    return root / "espnet_lite"


def _env() -> dict:
    env = dict(os.environ)
    env["ESPNET_VENV"] = str(Path(sys.executable).parent.parent)
    env.pop("ESPNET_ROOT", None)
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow
def test_swbd_recipe_runs_under_asr_sh(espnet_lite, tmp_path):
    recipe = tmp_path / "egs2/swbd_allinone/asr1"
    shutil.copytree(SWBD, recipe, symlinks=False,
                    ignore=shutil.ignore_patterns("data", "dump", "exp"))
    env = _env()
    # the synthetic stand-in corpus, in the recipe's data dir names
    synth = tmp_path / "synth"
    subprocess.run([sys.executable, "-m", "espnet_allinone.data.synth", "--out_dir", str(synth),
                    "--num_train", "40", "--num_dev", "8", "--num_test", "8",
                    "--num_test_unseen", "4", "--num_dev_unseen", "0", "--nj", "1"], check=True, capture_output=True)
    data = recipe / "data"
    write_kaldi_dir(synth / "train", data / "train_nodup")
    write_kaldi_dir(synth / "dev", data / "train_dev")
    write_cts_test_set(synth / "test", data / "eval2000_swbd", "sw", "SWB")
    (recipe / "tiny.yaml").write_text(yaml.safe_dump(TINY_CONFIG))
    logs = tmp_path / "logs"
    logs.mkdir()

    _run(f"local/setup_espnet.sh --template_only {espnet_lite}", recipe, env, logs / "setup.log")
    opts = (f'--test_sets "{TEST_SETS}" --ngpu 0 --nj 1 --inference_nj 1 --nbpe 40 '
            f"--asr_config tiny.yaml")
    _run(f"./run.sh --skip_local_data true --stage 1 --stop_stage 1 {opts}", recipe, env,
         logs / "run_stage1.log")
    assert (recipe / "dump/raw/train_nodup_sp/text").exists()  # speed perturbation
    assert (recipe / "data/en_token_list/bpe_unigram40/tokens.txt").exists()  # spm_train
    _run(f"./run.sh --stage 2 --stop_stage 3 --systems K --decode_subnets {SUBNET} {opts} "
         '--inference_args "--beam_size 2"', recipe, env, logs / "run_stage2_3.log")
    exp = recipe / "exp/asr_K"
    assert (exp / "valid.acc_mean.ave.pth").exists()
    decoded = exp / "decode_subnets" / SUBNET / TEST_SETS
    assert "decoding with subnet 1-64-8bit" in (decoded / "logdir/asr_inference.1.log").read_text()
    assert len((decoded / "text").read_text().splitlines()) == 8
    assert "RTF:" in (decoded / "logdir/calculate_rtf.log").read_text()
    assert (decoded / "score_wer/result.txt").exists()  # asr.sh's sclite
    assert "hubscr.pl -h hub5" in (decoded / "score_hub5/result.txt").read_text()
    assert not (exp / "decode_subnets/2-64-8bit").exists()
    _run(f'./run.sh --stage 4 --stop_stage 4 --systems K --test_sets "{TEST_SETS}"', recipe,
         env, logs / "run_stage4.log")
    results = (recipe / "exp/results/table2/RESULTS.md").read_text()
    assert "hubscr.pl -h hub5" in results
    row = next(line.split("|") for line in results.splitlines() if line.startswith("| 2K"))
    assert row[2].strip() == SUBNET
    assert row[-4].strip() != "-" and row[-2].strip() != "-"  # Hub5 WER; RTF from calculate_rtf.log


LIBRI = ROOT / "egs2/librispeech_allinone/asr1"
LETTERS = list("ABCDEFGHIJKLMNOPQRSTUVWXYZ'")


def save_tiny_wav2vec2(path: Path) -> Path:
    """A random 3-layer Wav2Vec2ForCTC with wav2vec2-base-100h's kind of vocabulary
    (<pad> <s> </s> <unk> | and upper-case letters), saved as from the hub."""
    import json

    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2ForCTC

    torch.manual_seed(0)
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", "|"] + LETTERS)}
    config = Wav2Vec2Config(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=3, num_attention_heads=2,
        intermediate_size=64, conv_dim=(16,) * 4, conv_kernel=(10, 4, 4, 4),
        conv_stride=(5, 4, 4, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        mask_time_prob=0.0, layerdrop=0.0, pad_token_id=0,
    )
    Wav2Vec2ForCTC(config).save_pretrained(path)
    (path / "vocab.json").write_text(json.dumps(vocab))
    Wav2Vec2CTCTokenizer(str(path / "vocab.json")).save_pretrained(path)
    return path


LIBRI_OPTS = "--asr_config tiny.yaml --test_sets dev_clean --ngpu 0 --nj 1 --inference_nj 1"
LIBRI_SUBNET = "2-32-8bit"  # the smallest subnet of the tiny Table 4 space


@pytest.fixture(scope="module")
def librispeech_trained(espnet_lite, tmp_path_factory):
    """The LibriSpeech recipe's run.sh stages 1-3 (asr.sh 2-4, hf_token_list, asr.sh 10-11) on
    the stand-in corpus with a random tiny wav2vec2 checkpoint."""
    pytest.importorskip("transformers", reason="the wav2vec2 extra (transformers) is not installed")
    tmp_path = tmp_path_factory.mktemp("librispeech")
    recipe = tmp_path / "egs2/librispeech_allinone/asr1"
    shutil.copytree(LIBRI, recipe, symlinks=False,
                    ignore=shutil.ignore_patterns("data", "dump", "exp", "downloads"))
    env = _env()
    ckpt = save_tiny_wav2vec2(tmp_path / "wav2vec2_tiny")
    synth = tmp_path / "synth"
    subprocess.run([sys.executable, "-m", "espnet_allinone.data.synth", "--out_dir", str(synth),
                    "--num_train", "40", "--num_dev", "8", "--num_test", "8",
                    "--num_test_unseen", "4", "--num_dev_unseen", "0", "--nj", "1"], check=True, capture_output=True)
    data = recipe / "data"
    for src, dst in [("train", "train_clean_100"), ("dev", "dev"), ("test", "dev_clean")]:
        write_kaldi_dir(synth / src, data / dst)
        text = data / dst / "text"  # LibriSpeech's transcripts are upper case
        text.write_text("".join(f"{k} {v.upper()}\n" for k, v in _read(text).items()))
    # the Table 4 K config at the checkpoint's size: 3/2 layers x 64/32 FFN units x 8 bits
    conf = yaml.safe_load((recipe / "conf/tuning/train_asr_wav2vec2_table4_K.yaml").read_text())
    conf["encoder_conf"].update(subnet_depths=[2, 3], subnet_widths=[32, 64], subnet_bits=[8])
    conf.update(batch_bins=400000, max_epoch=1, num_workers=0, keep_nbest_models=1,
                scheduler_conf={"warmup_steps_list": [0, 2, 10],
                                "warmup_lr_list": [0.0, 1.0e-4, 0.0]})
    (recipe / "tiny.yaml").write_text(yaml.safe_dump(conf))
    logs = tmp_path / "logs"
    logs.mkdir()
    opts = f"--hf_model {ckpt} {LIBRI_OPTS}"

    _run(f"local/setup_espnet.sh --template_only {espnet_lite}", recipe, env, logs / "setup.log")
    _run(f"./run.sh --skip_local_data true --stage 1 --stop_stage 1 {opts}", recipe, env,
         logs / "run_stage1.log")
    assert (recipe / "dump/raw/train_clean_100/wav.scp").exists()
    _run(f"./run.sh --stage 2 --stop_stage 2 {opts}", recipe, env, logs / "run_stage2.log")
    tokens = (recipe / "data/en_token_list/char/tokens.txt").read_text().split()
    assert tokens[0] == "<blank>" and {"<space>", "<sos/eos>", "A"} <= set(tokens)
    _run(f"./run.sh --stage 3 --stop_stage 3 {opts}", recipe, env, logs / "run_stage3.log")
    return recipe, env, opts, logs


@pytest.mark.slow
def test_librispeech_recipe_runs_under_asr_sh(librispeech_trained):
    recipe, env, opts, logs = librispeech_trained
    exp = recipe / "exp/asr_tiny"  # --asr_tag: the config's name
    assert "--init_param data/en_token_list/char/ctc_head.pth" in (exp / "train.log").read_text()
    assert (exp / "valid.loss.ave.pth").exists()
    _run(f"./run.sh --stage 4 --stop_stage 4 {opts} --decode_subnets {LIBRI_SUBNET} "
         "--ctc_decoding beam", recipe, env, logs / "run_stage4_beam.log")
    decoded = exp / f"decode_ctc_beam_{LIBRI_SUBNET}" / "dev_clean"
    log = (decoded / "logdir/asr_inference.1.log").read_text()
    assert f"decoding with subnet {LIBRI_SUBNET}" in log and "--ctc_greedy false" in log
    assert len((decoded / "text").read_text().splitlines()) == 8
    assert "RTF:" in (decoded / "logdir/calculate_rtf.log").read_text()
    assert (decoded / "score_wer/result.txt").exists()


@pytest.mark.slow
def test_librispeech_greedy_decoding_under_asr_sh(librispeech_trained):
    """Greedy CTC (the default) logs a 'best hypo' line per utterance as ESPnet's beam
    search does, which asr.sh's stage 12 RTF step (calculate_rtf.py) counts."""
    recipe, env, opts, logs = librispeech_trained
    _run(f"./run.sh --stage 4 --stop_stage 4 {opts} --decode_subnets {LIBRI_SUBNET}", recipe,
         env, logs / "run_stage4_greedy.log")
    decoded = recipe / f"exp/asr_tiny/decode_ctc_{LIBRI_SUBNET}/dev_clean"
    log = (decoded / "logdir/asr_inference.1.log").read_text()
    assert "--ctc_greedy false" not in log and log.count("best hypo: ") == 8
    assert len((decoded / "text").read_text().splitlines()) == 8
    assert "RTF:" in (decoded / "logdir/calculate_rtf.log").read_text()
    assert (decoded / "score_wer/result.txt").exists()
