"""allinone_wav2vec2: a tiny random HF Wav2Vec2ForCTC saved to disk, loaded by the encoder."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

transformers = pytest.importorskip("transformers")
from espnet2.asr.ctc import CTC  # noqa: E402
from espnet2.tasks.asr import ASRTask  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Model,
)

from espnet_allinone.bin import hf_token_list  # noqa: E402
from espnet_allinone.elastic import ElasticLinear, ElasticWeight  # noqa: E402
from espnet_allinone.encoders.wav2vec2 import AllInOneWav2Vec2Encoder  # noqa: E402
from espnet_allinone.hf_vocabulary import espnet_vocabulary  # noqa: E402
from espnet_allinone.quant import integer_codes, qmax  # noqa: E402
from tests.conftest import ASR_TRAIN_DATA_ARGS, CHARS, as_trained, write_tone_data  # noqa: E402

HIDDEN, UNITS, LAYERS = 32, 64, 3
GRID = dict(subnet_depths=[2, 3], subnet_widths=[32, 64], subnet_bits=[4, 32])


def save_tiny_checkpoint(path: Path, pad_id: int = 0, seed: int = 0) -> Path:
    """A random Wav2Vec2ForCTC with a char vocabulary, saved as from the hub."""
    torch.manual_seed(seed)
    specials = ["<s>", "</s>", "<unk>", "|"]
    specials.insert(pad_id, "<pad>")
    vocab = {t: i for i, t in enumerate(specials + CHARS)}
    config = Wav2Vec2Config(
        vocab_size=len(vocab), hidden_size=HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=2, intermediate_size=UNITS, conv_dim=(16,) * 4, conv_kernel=(10, 4, 4, 4),
        conv_stride=(5, 4, 4, 4), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        mask_time_prob=0.0, layerdrop=0.0, pad_token_id=pad_id,
    )
    Wav2Vec2ForCTC(config).save_pretrained(path)
    (path / "vocab.json").write_text(json.dumps(vocab))
    Wav2Vec2CTCTokenizer(str(path / "vocab.json")).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("w2v2"))


def make_encoder(ckpt, grid=GRID, **kw) -> AllInOneWav2Vec2Encoder:
    """An encoder on ``ckpt``'s weights, its step sizes initialised (as_trained), in eval mode."""
    return as_trained(AllInOneWav2Vec2Encoder(1, str(ckpt), **grid, **kw)).eval()


def waveforms(lengths=(4000, 3000), seed=0):
    """Zero-padded batch (B, L), lengths (B,), and the unpadded arrays."""
    rng = np.random.default_rng(seed)
    wavs = [rng.normal(0.1, 0.3, n).astype(np.float32) for n in lengths]
    xs = torch.zeros(len(wavs), max(lengths))
    for i, w in enumerate(wavs):
        xs[i, : len(w)] = torch.from_numpy(w)
    return xs, torch.tensor(lengths), wavs


def hf_inputs(wavs):
    """What HF's own pipeline feeds the model (normalised, padded, attention mask)."""
    fe = Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    return fe(wavs, sampling_rate=16000, padding=True, return_tensors="pt")


@pytest.mark.parametrize("lengths", [(4000,), (4000, 3000)])
def test_largest_float_subnet_with_head_equals_hf_logits(ckpt, tmp_path, lengths):
    hf = Wav2Vec2ForCTC.from_pretrained(ckpt).eval()
    hf_token_list.main(["--hf_model", str(ckpt), "--output_dir", str(tmp_path)])
    tokens = (tmp_path / "tokens.txt").read_text().split()
    ctc = CTC(len(tokens), HIDDEN)
    ctc.load_state_dict({k[len("ctc."):]: v for k, v in torch.load(tmp_path / "ctc_head.pth").items()})
    encoder = make_encoder(ckpt)
    xs, ilens, wavs = waveforms(lengths)
    inputs = hf_inputs(wavs)
    with torch.no_grad():
        ref = hf(inputs.input_values, attention_mask=inputs.attention_mask).logits
        out, olens, _ = encoder(xs, ilens)
        logits = ctc.ctc_lo(out)
    assert encoder.active_subnet.name == "3-64-32bit"
    assert olens.tolist() == hf._get_feat_extract_output_lengths(ilens).tolist()
    for b, n in enumerate(olens.tolist()):
        torch.testing.assert_close(logits[b, :n], ref[b, :n], atol=1e-5, rtol=1e-4)


def test_l2_order_keeps_the_full_model_and_ranks_units(ckpt):
    stored, ordered = make_encoder(ckpt, ffn_order="keep"), make_encoder(ckpt, ffn_order="l2")
    xs, ilens, _ = waveforms()
    with torch.no_grad():
        a, b = stored(xs, ilens)[0], ordered(xs, ilens)[0]
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    for s_layer, o_layer in zip(stored.wav2vec2.encoder.layers, ordered.wav2vec2.encoder.layers):
        ffn = o_layer.feed_forward
        importance = ffn.intermediate_dense.weight.norm(dim=1) * ffn.output_dense.weight.norm(dim=0)
        assert torch.all(importance[:-1] >= importance[1:])
        assert not torch.equal(ffn.intermediate_dense.weight, s_layer.feed_forward.intermediate_dense.weight)


@pytest.mark.parametrize("subnet", ["2-32-32bit", "3-32-32bit", "2-64-32bit"])
def test_sliced_subnet_equals_smaller_hf_model(ckpt, subnet):
    encoder = make_encoder(ckpt)
    encoder.set_subnet(subnet)
    depth, width = encoder.active_subnet.depth, encoder.active_subnet.width
    config = Wav2Vec2Config.from_pretrained(ckpt, num_hidden_layers=depth, intermediate_size=width,
                                            mask_time_prob=0.0)
    small = Wav2Vec2Model(config).eval()
    state = {}
    for k, v in encoder.wav2vec2.state_dict().items():
        if "weight_log_step" in k or k == "masked_spec_embed":
            continue
        if k.startswith("encoder.layers.") and int(k.split(".")[2]) >= depth:
            continue
        if k.endswith("intermediate_dense.weight") or k.endswith("intermediate_dense.bias"):
            v = v[:width]
        elif k.endswith("output_dense.weight"):
            v = v[:, :width]
        state[k] = v
    small.load_state_dict(state, strict=False)
    assert set(small.state_dict()) - set(state) <= {"masked_spec_embed"}
    xs, ilens, wavs = waveforms()
    inputs = hf_inputs(wavs)
    with torch.no_grad():
        ref = small(inputs.input_values, attention_mask=inputs.attention_mask).last_hidden_state
        out, olens, _ = encoder(xs, ilens)
    for b, n in enumerate(olens.tolist()):
        torch.testing.assert_close(out[b, :n], ref[b, :n], atol=1e-5, rtol=1e-4)


def test_front_end_stays_float_layers_are_quantized(ckpt):
    encoder = make_encoder(ckpt)
    w2v = encoder.wav2vec2
    for part in (w2v.feature_extractor, w2v.feature_projection, w2v.encoder.pos_conv_embed):
        assert not any(isinstance(m, ElasticWeight) for m in part.modules())
        assert not any("weight_log_step" in n for n, _ in part.named_parameters())
    for layer in w2v.encoder.layers:
        linears = [m for m in layer.modules() if isinstance(m, torch.nn.Linear)]
        assert len(linears) == 6 and all(isinstance(m, ElasticLinear) for m in linears)
        assert all(list(m.weight_log_step) == ["4bit"] for m in linears)
    xs, ilens, _ = waveforms()
    outs = {}
    for subnet in ["3-64-32bit", "3-64-4bit"]:
        encoder.set_subnet(subnet)
        with torch.no_grad():
            outs[subnet] = (encoder.front_end(xs, ilens)[0], encoder(xs, ilens)[0])
    # same float front end, different (quantized) Transformer output
    assert torch.equal(outs["3-64-32bit"][0], outs["3-64-4bit"][0])
    assert not torch.allclose(outs["3-64-32bit"][1], outs["3-64-4bit"][1])


def test_ffn_order_takes_the_conformers_words(ckpt):
    with pytest.raises(ValueError, match="ffn_order must be one of l2, keep: 'stored'"):
        make_encoder(ckpt, ffn_order="stored")


def test_quantized_weights_lie_on_the_grid(ckpt):
    encoder = make_encoder(ckpt)
    encoder.set_subnet("2-32-4bit")
    checked = 0
    for layer in list(encoder.wav2vec2.encoder.layers)[:2]:
        for m in layer.modules():
            if isinstance(m, ElasticLinear):
                w, _ = m.active_weight()
                step = m.active_step()
                codes = integer_codes(m.sliced()[0], step, 4).codes
                assert codes.abs().max() <= qmax(4)
                torch.testing.assert_close(w, codes.float() * step)
                assert w.shape[0] == 32 or w.shape[1] == 32 or w.shape == (HIDDEN, HIDDEN)
                checked += 1
    assert checked == 12


def test_front_end_runs_once_per_step_and_shares_the_time_mask(ckpt):
    encoder = AllInOneWav2Vec2Encoder(1, str(ckpt), **GRID, mask_time_prob=0.5, mask_time_length=2).train()
    calls = []
    encoder.wav2vec2.feature_extractor.register_forward_hook(lambda *a: calls.append(1))
    xs, ilens, _ = waveforms()
    masked = []
    encoder.wav2vec2.encoder.register_forward_pre_hook(lambda m, args: masked.append(args[0].detach()))
    xs = xs[:, : int(ilens.max())]
    with encoder.using_subnet(None), encoder.sharing_prefixes():  # as AllInOneASRModel runs a step:
        for subnet in ["3-64-32bit", "2-32-4bit"]:  # every subnet on the very same batch tensors
            encoder.set_subnet(subnet)
            encoder(xs, ilens)
    assert len(calls) == 1
    assert torch.equal(masked[0], masked[1])
    assert encoder.active_subnet.name == "3-64-32bit"
    encoder(xs, ilens)  # outside a step: computed again, new mask
    assert len(calls) == 2


@pytest.mark.parametrize("use_attention_mask", [True, False])
def test_a_step_shares_the_first_layers_of_equal_width_and_bits(ckpt, use_attention_mask):
    """Inside a step the HF encoder's loop runs each layer once per prefix of (width, bits): the
    depth-2 subnets reuse the depth-3 ones' first two layers, and every output is the subnet's alone."""
    encoder = as_trained(make_encoder(ckpt, use_attention_mask=use_attention_mask)).eval()
    xs, ilens, _ = waveforms()
    calls = []
    for i, layer in enumerate(encoder.wav2vec2.encoder.layers._modules.values()):
        layer.register_forward_hook(lambda *a, i=i: calls.append(i))
    subnets = list(encoder.subnet_space)  # largest first, as the model runs them
    with torch.no_grad():
        alone = {}
        for s in subnets:
            encoder.set_subnet(s)
            alone[s] = encoder(xs, ilens)[0]
        calls.clear()
        with encoder.sharing_prefixes():
            for s in subnets:
                encoder.set_subnet(s)
                assert torch.equal(encoder(xs, ilens)[0], alone[s]), s
    assert len(calls) == 3 * len({(s.width, s.bits) for s in subnets})  # depth 3 once per (width, bits)


def test_bad_subnet_lists_the_space(ckpt):
    encoder = make_encoder(ckpt)
    with pytest.raises(ValueError, match="valid subnets: 3-64-32bit"):
        encoder.set_subnet("1-64-32bit")
    with pytest.raises(ValueError, match="wider than the encoder"):
        make_encoder(ckpt, grid=dict(subnet_widths=[128]))


def test_not_a_wav2vec2_checkpoint(ckpt, tmp_path):
    with pytest.raises(ValueError, match="not a Hugging Face wav2vec2 checkpoint"):
        AllInOneWav2Vec2Encoder(1, str(tmp_path))
    bert = BertConfig(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=16)
    bert.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="'bert' model, not 'wav2vec2'"):
        AllInOneWav2Vec2Encoder(1, str(tmp_path))
    with pytest.raises(ValueError, match="input_size: 1"):
        AllInOneWav2Vec2Encoder(80, str(ckpt))


@pytest.mark.parametrize("pad_id", [0, 2])
def test_hf_token_list_puts_blank_first_and_permutes_the_head(tmp_path, pad_id):
    ckpt = save_tiny_checkpoint(tmp_path / "ckpt", pad_id=pad_id)
    hf_token_list.main(["--hf_model", str(ckpt), "--output_dir", str(tmp_path / "tok")])
    tokens = (tmp_path / "tok" / "tokens.txt").read_text().split()
    vocab = json.loads((ckpt / "vocab.json").read_text())
    assert tokens[0] == "<blank>" and len(tokens) == len(vocab)
    assert {"<space>", "<sos/eos>", "<unk>", *CHARS} <= set(tokens)
    head = torch.load(tmp_path / "tok" / "ctc_head.pth")
    lm_head = Wav2Vec2ForCTC.from_pretrained(ckpt).lm_head
    hf_name = {"<blank>": "<pad>", "<space>": "|", "<sos/eos>": "</s>"}
    for i, t in enumerate(tokens):
        j = vocab[hf_name.get(t, t)]
        assert torch.equal(head["ctc.ctc_lo.weight"][i], lm_head.weight[j].detach())


def test_hf_token_list_rejects_a_checkpoint_without_vocabulary(tmp_path):
    with pytest.raises(ValueError, match="no wav2vec2 CTC vocabulary"):
        espnet_vocabulary(str(tmp_path))


def test_built_without_weights_then_loaded_equals_the_loaded_encoder(ckpt, tmp_path):
    """load_weights=False (config.json only, no FFN reordering) + the ESPnet state dict of
    an encoder built from the weights computes the same function: decoding a trained
    model does not need the HF weights."""
    (tmp_path / "config.json").write_bytes((Path(ckpt) / "config.json").read_bytes())
    full = as_trained(AllInOneWav2Vec2Encoder(1, str(ckpt), **GRID, mask_time_prob=0.0)).eval()
    bare = AllInOneWav2Vec2Encoder(1, str(tmp_path), **GRID, mask_time_prob=0.0, load_weights=False).eval()
    x, lens = torch.randn(2, 8000), torch.tensor([8000, 6000])
    with torch.no_grad():
        assert not torch.allclose(full(x, lens)[0], bare(x, lens)[0])
        bare.load_state_dict(full.state_dict())
        for subnet in ["3-64-32bit", "2-32-4bit"]:
            full.set_subnet(subnet)
            bare.set_subnet(subnet)
            torch.testing.assert_close(full(x, lens)[0], bare(x, lens)[0], rtol=0, atol=0)
    with pytest.raises(ValueError, match="not a Hugging Face wav2vec2 checkpoint"):
        AllInOneWav2Vec2Encoder(1, str(tmp_path / "none"), load_weights=False)


# ---- end to end, through the stock ESPnet entry points as asr.sh calls them ----

def _run(args, cwd):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


@pytest.fixture(scope="module")
def trained(ckpt, tmp_path_factory):
    d = tmp_path_factory.mktemp("w2v2_e2e")
    write_tone_data(d / "train", 6, 0, samples_per_char=4800)
    write_tone_data(d / "dev", 2, 1, samples_per_char=4800)
    _run([sys.executable, "-m", "espnet_allinone.bin.hf_token_list", "--hf_model", str(ckpt),
          "--output_dir", "tokens"], cwd=d)
    config = {
        "input_size": 1, "frontend": None, "specaug": None, "normalize": None,
        "encoder": "allinone_wav2vec2",
        "encoder_conf": {"hf_model": str(ckpt), **GRID, "mask_time_prob": 0.05, "mask_time_length": 2},
        "model": "allinone",
        "model_conf": {"ctc_weight": 1.0, "lambda_preset": "ssl", "subnet_sampling": "sandwich"},
        "init_param": ["tokens/ctc_head.pth"],
        "optim": "adamw", "optim_conf": {"lr": 1e-3},
        "scheduler": "piecewiselinearwarmuplr",
        "scheduler_conf": {"warmup_steps_list": [0, 1, 3], "warmup_lr_list": [0.0, 1e-3, 0.0]},
        "batch_type": "unsorted", "batch_size": 2, "max_epoch": 1,
        "best_model_criterion": [["valid", "loss", "min"]],
        "num_workers": 0, "use_tensorboard": False, "seed": 0,
    }
    (d / "train.yaml").write_text(yaml.safe_dump(config))
    proc = _run(
        [
            sys.executable, "-m", "espnet2.bin.asr_train", "--config", "train.yaml",
            "--token_type", "char", "--token_list", "tokens/tokens.txt", "--use_preprocessor", "true",
            *ASR_TRAIN_DATA_ARGS,
            "--output_dir", "exp", "--ngpu", "0",
        ],
        cwd=d,
    )
    (d / "exp" / "train.log").write_text(proc.stderr)
    return d


@pytest.mark.slow
def test_stock_asr_train_fine_tunes_allinone_wav2vec2(trained, ckpt):
    config = yaml.safe_load((trained / "exp" / "config.yaml").read_text())
    assert config["encoder"] == "allinone_wav2vec2" and config["model"] == "allinone"
    log = (trained / "exp" / "train.log").read_text()
    for subnet in ["3-64-32bit", "3-64-4bit", "2-32-32bit", "2-32-4bit"]:
        assert f"cer_ctc_{subnet}=" in log, subnet
    assert config["init_param"] == ["tokens/ctc_head.pth"]
    state = torch.load(trained / "exp" / "1epoch.pth", map_location="cpu")
    # the trained CTC layer started from the HF lm_head (ESPnet's init_param) and moved a little
    head = torch.load(trained / "tokens" / "ctc_head.pth")["ctc.ctc_lo.weight"]
    fresh = ASRTask.build_model_from_file(trained / "exp" / "config.yaml", device="cpu")[0].ctc.ctc_lo.weight
    moved = (state["ctc.ctc_lo.weight"] - head).norm() / head.norm()
    assert 0 < moved < 0.1 < (fresh - head).norm() / head.norm()
    # the encoder started from the pretrained HF weights and was fine-tuned
    hf = Wav2Vec2ForCTC.from_pretrained(ckpt).state_dict()
    for key in ("encoder.layers.0.attention.q_proj.weight", "feature_projection.projection.weight"):
        pretrained, tuned = hf[f"wav2vec2.{key}"], state[f"encoder.wav2vec2.{key}"]
        assert 0 < (tuned - pretrained).norm() / pretrained.norm() < 0.1, key


def _decode(d: Path, subnet: str):
    out = d / f"decode_{subnet}"
    (d / f"decode_{subnet}.yaml").write_text(
        yaml.safe_dump({"beam_size": 2, "ctc_weight": 1.0, "subnet": subnet})
    )
    proc = _run(
        [
            sys.executable, "-m", "espnet2.bin.asr_inference", "--config", f"decode_{subnet}.yaml",
            "--asr_train_config", "exp/config.yaml", "--asr_model_file", "exp/1epoch.pth",
            "--data_path_and_name_and_type", "dev/wav.scp,speech,sound",
            "--output_dir", str(out), "--ngpu", "0",
        ],
        cwd=d,
    )
    assert f"decoding with subnet {subnet}" in proc.stderr
    score = (out / "1best_recog" / "score").read_text().splitlines()
    assert len(score) == 2
    return score


@pytest.mark.slow
def test_stock_asr_inference_decodes_two_subnets(trained):
    assert _decode(trained, "3-64-32bit") != _decode(trained, "2-32-4bit")
