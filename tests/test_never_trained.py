"""State that training never set is never used silently.

A model trained with ``num_random_subnets: 0`` runs only the largest and the smallest subnet; every
other subnet computes with step sizes no training step initialised, or BatchNorm statistics no batch
updated. Decoding, export, search, the report and validation must say so (naming the subnet, the
layer and what), and use such state only where the user asks for it. ESPnet's checkpoint averaging
of checkpoints taken before and after a bit-width's steps became ready must load and decode.
"""

import logging
import random
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
import yaml

from espnet_allinone.elastic import NeverTrainedError
from espnet_allinone.export import load_allinone
from tests.conftest import as_trained, batch, make_allinone_files, make_encoder, make_model, write_tone_data

# make_allinone_files' space: depths [1, 2] x widths [16, 32] x bits [4, 8, 32]
LARGEST, SMALLEST = "2-32-32bit", "1-16-4bit"
TRAINED = {LARGEST, SMALLEST, "1-32-32bit"}  # 1-32-32bit: block 1 of the largest, no steps
BN_ONLY = "1-16-32bit"  # no step sizes; its w16-32bit statistics: never updated
CHANNELS = "1-32-4bit"  # 4-bit steps of w_1's channels 16..31 (the smallest runs 16) and w32-4bit statistics
STEPS_AND_BN = "2-16-4bit"  # block 2's 4-bit steps and w16-4bit statistics: never set


def _train_steps(model, n: int, num_random_subnets: int, seed: int = 0):
    """``n`` Adam steps of ``model`` on random speech (B, L) and text, sandwich with ``num_random_subnets``."""
    model.train()
    model.num_random_subnets = num_random_subnets
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        speech = torch.randn(2, 8000, generator=g)
        text = torch.randint(2, 7, (2, 4), generator=g)
        opt.zero_grad()
        model(speech, torch.tensor([8000, 6000]), text, torch.tensor([4, 3]))[0].backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained_sandwich_k0(tmp_path_factory):
    """config.yaml + model.pth of a model trained one step with ``num_random_subnets: 0``."""
    d = tmp_path_factory.mktemp("k0")
    config, _ = make_allinone_files(d)
    torch.manual_seed(0)
    model = load_allinone(config, None)  # built from the config alone: nothing trained yet
    _train_steps(model, 1, num_random_subnets=0)
    torch.save(model.state_dict(), d / "k0.pth")
    write_tone_data(d / "dev", 2, 5)
    return config, d / "k0.pth", d


def test_never_trained_lists_layer_and_what(trained_sandwich_k0):
    config, model_file, _ = trained_sandwich_k0
    encoder = load_allinone(config, model_file).encoder
    untrained = {s.name for s in encoder.subnet_space if encoder.never_trained(s)}
    assert untrained == {s.name for s in encoder.subnet_space} - TRAINED
    assert encoder.never_trained(BN_ONLY) == ["encoders.0.conv_module.norm: BatchNorm statistics w16-32bit "
                                              "(no batch updated them)"]
    assert set(encoder.never_trained(CHANNELS)) == {
        "encoders.0.feed_forward.w_1: 4-bit step sizes of output channels 16..31 (trained: the first 16)",
        "encoders.0.feed_forward_macaron.w_1: 4-bit step sizes of output channels 16..31 (trained: the first 16)",
        "encoders.0.conv_module.norm: BatchNorm statistics w32-4bit (no batch updated them)"}
    parts = encoder.never_trained(STEPS_AND_BN)
    assert "encoders.1.feed_forward.w_1: 4-bit step sizes" in parts
    assert "encoders.1.conv_module.norm: BatchNorm statistics w16-4bit (no batch updated them)" in parts
    assert not any(p.startswith(("embed.", "encoders.0.")) for p in parts)  # those ran in the smallest
    assert "8-bit step sizes" in encoder.never_trained("2-32-8bit")[0]


@pytest.mark.parametrize("subnet, says", [
    (BN_ONLY, ["subnet 1-16-32bit", "encoders.0.conv_module.norm: BatchNorm statistics w16-32bit",
               "espnet_allinone.bin.recalibrate --subnet 1-16-32bit", "--allow_untrained"]),
    (STEPS_AND_BN, ["subnet 2-16-4bit", "encoders.1.self_attn.linear_q: 4-bit step sizes",
                    "num_random_subnets >= 1", "--allow_untrained"]),
])
def test_decoding_a_never_trained_subnet_is_an_error(trained_sandwich_k0, subnet, says):
    from espnet_allinone.inference import Speech2Text

    config, model_file, _ = trained_sandwich_k0
    with pytest.raises(NeverTrainedError) as e:
        Speech2Text(str(config), str(model_file), subnet=subnet, ctc_greedy=True, device="cpu")
    for s in says:
        assert s in str(e.value)
    if subnet == STEPS_AND_BN:  # recalibration cannot set step sizes: not offered
        assert "recalibrate" not in str(e.value)


def test_trained_subnets_decode_and_allow_untrained_decodes_with_a_warning(trained_sandwich_k0, caplog):
    from espnet_allinone.inference import Speech2Text

    config, model_file, d = trained_sandwich_k0
    wav, _ = soundfile.read(d / "dev" / "dev_00.wav", dtype="float32")
    for subnet in TRAINED:
        Speech2Text(str(config), str(model_file), subnet=subnet, ctc_greedy=True, device="cpu")(wav)
    with caplog.at_level(logging.WARNING):
        s2t = Speech2Text(str(config), str(model_file), subnet=STEPS_AND_BN, ctc_greedy=True, device="cpu",
                          allow_untrained=True)
    assert "subnet 2-16-4bit uses never-trained state (allowed)" in caplog.text
    s2t(wav)  # decodes: its steps initialised from the weights
    assert s2t.asr_model.encoder.encoders[1].feed_forward.w_1.steps_ready(4)


def test_steps_of_channels_a_narrower_training_never_ran_are_named_without_batchnorm():
    """Without a BatchNorm to flag it (``use_cnn_module: false``, as wav2vec2), a width no training
    forward ran at a bit-width is still named: the steps of its extra output channels never trained."""
    model = make_model(make_encoder(use_cnn_module=False), num_random_subnets=0)  # 3-32-8bit, 2-16-4bit
    model.train()
    model(*batch())[0].backward()
    encoder = model.encoder
    assert encoder.never_trained("2-16-4bit") == [] and encoder.never_trained("3-32-8bit") == []
    assert set(encoder.never_trained("2-32-4bit")) == {
        f"encoders.{i}.{ffn}.w_1: 4-bit step sizes of output channels 16..31 (trained: the first 16)"
        for i in range(2) for ffn in ("feed_forward", "feed_forward_macaron")}
    assert "8-bit step sizes of output channels" not in " ".join(encoder.never_trained("3-16-8bit"))


def test_allowing_untrained_channels_keeps_the_trained_steps(trained_sandwich_k0):
    config, model_file, _ = trained_sandwich_k0
    encoder = load_allinone(config, model_file).encoder
    layer = encoder.encoders[0].feed_forward.w_1
    before = layer.weight_log_step["4bit"].detach().clone()
    assert encoder.check_trained(CHANNELS, allow_untrained=True)  # named, allowed
    assert torch.equal(layer.weight_log_step["4bit"], before)  # the smallest's trained steps untouched
    assert encoder.never_trained(CHANNELS)  # and still said to be untrained


def test_a_step_used_outside_training_is_never_initialised():
    model = make_model()
    layer = model.encoder.encoders[2].feed_forward.w_1
    model.eval()
    with pytest.raises(NeverTrainedError, match="encoders.2.feed_forward.w_1: the 4-bit step sizes were never"):
        layer.step(4)
    assert not layer.steps_ready(4)
    model.train()
    layer.step(4)  # a training forward initialises at first use
    assert layer.steps_ready(4)


@pytest.mark.parametrize("nj", [1, pytest.param(2, marks=pytest.mark.slow)])
def test_decode_subnets_cli_refuses_before_decoding_anything(trained_sandwich_k0, tmp_path, capsys, nj):
    from espnet_allinone.bin import decode_subnets

    config, model_file, d = trained_sandwich_k0
    args = ["--asr_train_config", str(config), "--asr_model_file", str(model_file), "--data_dir", str(d / "dev"),
            "--config", str(_greedy_conf(tmp_path)), "--output_dir", str(tmp_path / "out"),
            "--subnets", SMALLEST, BN_ONLY, "--nj", str(nj)]
    assert decode_subnets.main(args) == 2
    err = capsys.readouterr().err
    assert "error: subnet 1-16-32bit computes with state that training never set" in err
    assert not (tmp_path / "out" / SMALLEST).exists()  # nothing decoded
    assert decode_subnets.main(args + ["--allow_untrained", "true"]) == 0
    assert (tmp_path / "out" / BN_ONLY / "dev" / "text").is_file()


def _greedy_conf(tmp_path: Path) -> Path:
    path = tmp_path / "decode.yaml"
    path.write_text(yaml.safe_dump({"ctc_greedy": True}))
    return path


def test_export_cli_refuses_and_allows_when_asked(trained_sandwich_k0, tmp_path, capsys):
    from espnet_allinone.bin import export

    config, model_file, _ = trained_sandwich_k0
    args = ["--asr_train_config", str(config), "--asr_model_file", str(model_file), "--subnet", LARGEST,
            "2-32-8bit", "--out_dir", str(tmp_path / "out"), "--formats", "stock"]
    with pytest.raises(SystemExit) as e:
        export.main(args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "subnet 2-32-8bit computes with state that training never set: embed.conv.0: 8-bit step sizes" in err
    assert not (tmp_path / "out").exists()  # the check comes before any file is written
    export.main(args + ["--allow_untrained", "true"])
    assert (tmp_path / "out" / "2-32-8bit" / "stock" / "model.pth").is_file()


def test_library_export_refuses_a_never_trained_subnet(trained_sandwich_k0):
    from espnet_allinone.export import subnet_weights

    config, model_file, _ = trained_sandwich_k0
    model = load_allinone(config, model_file)
    train_config = yaml.safe_load(Path(config).read_text())
    with pytest.raises(NeverTrainedError, match="subnet 1-16-32bit"):
        subnet_weights(model, train_config, BN_ONLY)
    subnet_weights(model, train_config, SMALLEST)


def test_search_skips_never_trained_candidates(trained_sandwich_k0):
    from espnet2.text.build_tokenizer import build_tokenizer

    from espnet_allinone.search import Budget, Candidate, ProxyScorer, canonical, evolve

    config, model_file, d = trained_sandwich_k0
    model = load_allinone(config, model_file)
    wavs = {f"u{i}": np.random.default_rng(i).normal(0, 0.1, 8000).astype(np.float32) for i in range(2)}
    proxy = ProxyScorer(model, wavs, {k: "ab" for k in wavs}, list(model.token_list), build_tokenizer("char"))
    with pytest.raises(NeverTrainedError, match="subnet 1-16-32bit"):
        proxy(model.encoder.subnet_space.get(BN_ONLY))
    encoder = model.encoder
    lines = []

    def make(blocks):
        spec = canonical(encoder, blocks)
        return Candidate(spec, encoder.subnet_size(spec).bits / 8, encoder.compression_ratio(spec))

    scored = evolve(proxy, make, Budget.parse("ratio=1x"), [1, 2], [(32, 32), (16, 4), (32, 4)],
                    population=2, generations=1, seeds=[s.blocks for s in encoder.subnet_space], log=lines.append)
    assert set(scored) and all(not encoder.never_trained(c.spec) for c in scored.values())
    skipped = [line for line in lines if line.startswith("[search] skipped 1-16-32bit: subnet 1-16-32bit computes")]
    assert len(skipped) == 1  # logged once, never scored


def test_report_refuses_a_decoded_never_trained_subnet(trained_sandwich_k0, tmp_path, capsys):
    from espnet_allinone.bin import report

    config, model_file, _ = trained_sandwich_k0
    (tmp_path / "data" / "test").mkdir(parents=True)
    (tmp_path / "data" / "test" / "text").write_text("u1 a b\n")
    for subnet in (SMALLEST, BN_ONLY):
        (tmp_path / "decode" / subnet / "test").mkdir(parents=True)
        (tmp_path / "decode" / subnet / "test" / "text").write_text("u1 a b\n")
    args = ["--asr_train_config", str(config), "--asr_model_file", str(model_file), "--decode_dir",
            str(tmp_path / "decode"), "--data_dir", str(tmp_path / "data" / "test"), "--out_dir",
            str(tmp_path / "out"), "--wer_backend", "jiwer"]
    with pytest.raises(SystemExit):
        report.main(args)
    assert "subnet 1-16-32bit computes with state that training never set" in capsys.readouterr().err
    report.main(args + ["--allow_untrained", "true"])
    results = (tmp_path / "out" / "RESULTS.md").read_text()
    assert "(1-16-32bit) computes with state training never set (reported with --allow_untrained): " \
           "encoders.0.conv_module.norm: BatchNorm statistics w16-32bit" in results
    assert "(1-16-4bit) computes" not in results


def test_recalibrate_estimates_never_updated_statistics_of_a_uniform_subnet(trained_sandwich_k0):
    config, model_file, _ = trained_sandwich_k0
    encoder = load_allinone(config, model_file).encoder
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    feats = [(torch.randn(2, 60, 20), torch.tensor([60, 50])) for _ in range(2)]
    assert encoder.recalibrate_batchnorm(BN_ONLY, feats) == 2
    assert encoder.never_trained(BN_ONLY) == []
    changed = {k for k, v in encoder.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {f"encoders.0.conv_module.norm.{s}_w16-32bit"
                       for s in ("running_mean", "running_var", "num_batches_tracked")}
    with pytest.raises(ValueError, match="whose BatchNorm statistics were all trained"):
        encoder.recalibrate_batchnorm(SMALLEST, feats)
    with pytest.raises(NeverTrainedError, match="2-16-4bit: recalibration estimates BatchNorm statistics, but "
                                                "the subnet's step sizes were never trained either"):
        encoder.recalibrate_batchnorm(STEPS_AND_BN, feats)


def test_validation_leaves_out_never_trained_subnets_and_says_so(caplog):
    model = make_model(subnet_sampling="sandwich", num_random_subnets=0)  # largest 3-32-8bit, smallest 2-16-4bit
    model.eval()
    with pytest.raises(NeverTrainedError, match="subnet 3-32-8bit"):  # nothing trained: nothing to compare with
        model(*batch())
    model.train()
    model(*batch())[0].backward()
    model.eval()
    with caplog.at_level(logging.WARNING), torch.no_grad():
        _, stats, _ = model(*batch())
        model(*batch())
    evaluated = {s.name for s in model.encoder.subnet_space if stats[f"loss_{s}"] is not None}
    assert evaluated == {"3-32-8bit", "2-32-8bit", "2-16-4bit"}  # 2-32-8bit: the largest's first blocks
    said = [r.message for r in caplog.records if r.message.startswith("validation leaves out subnet 3-16-4bit")]
    assert len(said) == 1  # once, not per batch
    as_trained(model)
    model.eval()  # a new evaluation pass reads the state again
    _, stats, _ = model(*batch())
    assert all(stats[f"loss_{s}"] is not None for s in model.encoder.subnet_space)


# ------------------------------------------------------------------ averaged checkpoints (asr.sh)
def test_three_checkpoint_average_loads_and_decodes(tmp_path):
    """ESPnet's ``average_nbest_models`` over epochs 1-3, where the 8-bit steps became ready after
    epoch 1 (the largest and smallest subnet only until then, every subnet after): the average loads, and its
    8-bit steps are the mean of the two checkpoints that had them, not pulled toward the placeholder."""
    from espnet2.main_funcs.average_nbest_models import average_nbest_models
    from espnet2.train.reporter import Reporter

    from espnet_allinone.inference import Speech2Text

    config, _ = make_allinone_files(tmp_path / "model")
    torch.manual_seed(0)
    model = load_allinone(config, None)
    exp = tmp_path / "exp"
    exp.mkdir()
    reporter = Reporter()
    layer = "encoder.encoders.0.feed_forward.w_1"  # 4-bit steps ready from epoch 1 (the smallest), 8-bit from 2
    ckpts = []
    for epoch, sampling in ((1, "sandwich"), (2, "all"), (3, "all")):
        random.seed(epoch)
        reporter.set_epoch(epoch)
        model.subnet_sampling = sampling  # epoch 1: the largest and smallest only; then every subnet
        _train_steps(model, 2, num_random_subnets=0, seed=epoch)
        state = {n: v.clone() for n, v in model.state_dict().items()}
        ckpts.append(state)
        torch.save(state, exp / f"{epoch}epoch.pth")
        with reporter.observe("valid") as sub:
            sub.register({"acc": 0.5 + 0.1 * epoch})
            sub.next()
    ready = [c[f"{layer}.weight_log_step_ready"].tolist() for c in ckpts]
    assert ready[0] == [1.0, 0.0] and ready[1] == ready[2] == [1.0, 1.0]  # [4bit, 8bit]
    average_nbest_models(exp, reporter, [("valid", "acc", "max")], 3)
    averaged = exp / "valid.acc.ave_3best.pth"
    avg_state = torch.load(averaged)
    assert avg_state[f"{layer}.weight_log_step_ready"].tolist() == pytest.approx([1.0, 2 / 3])
    assert avg_state["encoder.subnet_space_table"].tolist() == ckpts[0]["encoder.subnet_space_table"].tolist()

    loaded = load_allinone(config, averaged)
    state = loaded.state_dict()
    want = (ckpts[1][f"{layer}.weight_log_step.8bit"] + ckpts[2][f"{layer}.weight_log_step.8bit"]) / 2
    torch.testing.assert_close(state[f"{layer}.weight_log_step.8bit"], want)
    want4 = sum(c[f"{layer}.weight_log_step.4bit"] for c in ckpts) / 3
    torch.testing.assert_close(state[f"{layer}.weight_log_step.4bit"], want4)
    assert state[f"{layer}.weight_log_step_ready"].tolist() == [1.0, 1.0]
    # trained widths [4bit, 8bit]: 16, 32, 32 -> the mean, 26 (rounded down); -, 32, 32 -> 32
    assert [c[f"{layer}.weight_log_step_width"].tolist() for c in ckpts] == [[16.0, 0.0], [32.0, 32.0], [32.0, 32.0]]
    assert state[f"{layer}.weight_log_step_width"].tolist() == [26.0, 32.0]
    with pytest.raises(NeverTrainedError, match="w_1: 4-bit step sizes of output channels 26..31"):
        Speech2Text(str(config), str(averaged), subnet="1-32-4bit", ctc_greedy=True, device="cpu")
    assert bool(state["encoder.ffn_units_ordered"])
    bn = "encoder.encoders.0.conv_module.norm.num_batches_tracked"
    assert int(state[bn]) == sum(int(c[bn]) for c in ckpts)  # ESPnet sums integer buffers
    wav = np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32)
    for subnet in ("2-32-8bit", "1-16-4bit"):
        s2t = Speech2Text(str(config), str(averaged), subnet=subnet, ctc_greedy=True, device="cpu")
        assert isinstance(s2t(wav)[0][2], list)
