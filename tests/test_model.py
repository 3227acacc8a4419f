import copy

import pytest
import torch

from espnet_allinone.model import LAMBDA_PRESETS
from espnet_allinone.subnet import Subnet
from tests.conftest import as_trained, batch, make_encoder, make_model


def test_loss_finite_and_backward_reaches_encoder_decoder_and_steps():
    model = make_model(subnet_sampling="all")
    loss, stats, weight = model(*batch())
    assert torch.isfinite(loss).all() and weight.item() == 2
    loss.sum().backward()
    grads = {n: p.grad for n, p in model.named_parameters()}
    assert grads["encoder.encoders.0.feed_forward.w_1.weight"].abs().sum() > 0
    assert grads["decoder.decoders.0.feed_forward.w_1.weight"].abs().sum() > 0
    assert grads["ctc.ctc_lo.weight"].abs().sum() > 0
    steps = [n for n in grads if "weight_log_step" in n]
    assert steps and all(grads[n] is not None and grads[n].abs().sum() > 0 for n in steps)


def test_training_stats_cover_every_subnet_and_follow_sandwich_rule():
    model = make_model()  # sandwich, k=1
    space = model.encoder.subnet_space
    for _ in range(5):
        _, stats, _ = model(*batch())
        run = [s for s in space if stats[f"loss_{s}"] is not None]
        assert len(run) == 3
        assert space.largest in run and space.smallest in run
        for s in space:  # same keys every step, NaN (None) when not sampled
            assert f"acc_{s}" in stats and f"kl_{s}" in stats
        assert stats[f"kl_{space.largest}"] is None
        assert all(stats[f"kl_{s}"] is not None for s in run if s != space.largest)


def test_features_computed_once_per_batch():
    model = make_model(subnet_sampling="all")
    calls = []
    model.normalize = torch.nn.Identity()  # any feature module: count its calls
    model.normalize.forward = lambda x, lens: (calls.append(1), (x, lens))[1]
    model(*batch())
    assert len(calls) == 1


def _stock_twin(model, spec, encoder_conf=None):
    """A stock ESPnetASRModel computing float subnet ``spec`` of ``model``: a stock
    ConformerEncoder of its depth and width holding the sliced shared weights, and
    the model's own CTC and decoder weights."""
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
    from espnet2.asr.espnet_model import ESPnetASRModel

    from tests.conftest import IDIM, TINY
    from tests.test_conformer_encoder import _sliced_stock_state

    conf = {**TINY, **(encoder_conf or {}), "num_blocks": spec.depth, "linear_units": spec.width}
    conf["interctc_layer_idx"] = [i for i in conf.get("interctc_layer_idx", []) if i < spec.depth]
    enc = ConformerEncoder(IDIM, **conf)
    with model.encoder.using_subnet(spec):
        enc.load_state_dict(_sliced_stock_state(model.encoder, spec), strict=True)
    twin = ESPnetASRModel(
        vocab_size=model.vocab_size, token_list=model.token_list, frontend=None, specaug=None,
        normalize=None, preencoder=None, encoder=enc, postencoder=None,
        decoder=copy.deepcopy(model.decoder), ctc=copy.deepcopy(model.ctc), joint_network=None,
        ctc_weight=model.ctc_weight, interctc_weight=model.interctc_weight,
    )
    return twin.eval()


def _posteriors(model, x, xl, y, yl):
    """CTC and decoder log-posteriors of a stock model (what the KL compares)."""
    from espnet_allinone.compat import add_sos_eos

    enc, lens = model.encode(x, xl)
    if isinstance(enc, tuple):  # (final, intermediate outputs)
        enc = enc[0]
    if model.decoder is None:  # ctc_weight 1: ESPnet builds no decoder
        return model.ctc.log_softmax(enc), lens, None
    ys_in, _ = add_sos_eos(y, model.sos, model.eos, model.ignore_id)
    dec, _ = model.decoder(enc, lens, ys_in, yl + 1)
    return model.ctc.log_softmax(enc), lens, dec.log_softmax(-1)


@pytest.mark.parametrize(
    "model_conf,encoder_conf",
    [
        (dict(ctc_weight=0.3), {}),
        (dict(ctc_weight=1.0), {}),
        (dict(ctc_weight=0.3, interctc_weight=0.5), dict(interctc_layer_idx=[1])),
    ],
    ids=["hybrid", "ctc-only", "intermediate-ctc"],
)
def test_loss_is_eq4(model_conf, encoder_conf):
    """Eq. 4 against stock ESPnet: each L_i is the loss of a stock ESPnetASRModel of that
    subnet's size (sliced weights), each KL_i is computed from those stock models'
    posteriors, and L = L_max + sum_i lambda1_i L_i + lambda2_i KL_i (footnote 4)."""
    grid = dict(subnet_depths=[2, 3], subnet_widths=[16, 32], subnet_bits=[32])
    enc = make_encoder(grid=grid, **encoder_conf)
    model = as_trained(make_model(enc, subnet_sampling="all", lambda_preset="conformer", **model_conf))
    model.eval()  # deterministic (no dropout)
    x, xl, y, yl = batch()
    y[1, int(yl[1]):] = -1  # padded as ESPnet's collate pads text
    with torch.no_grad():
        loss, stats, _ = model(x, xl, y.clone(), yl)
        space = model.encoder.subnet_space
        twins = {s: _stock_twin(model, s, encoder_conf) for s in space}
        y_ids = y.masked_fill(y == -1, model.ignore_id)  # what ESPnet's forward feeds the decoder
        ref_ctc, ref_lens, ref_att = _posteriors(twins[space.largest], x, xl, y_ids, yl)
        expected = twins[space.largest](x, xl, y.clone(), yl)[0]
        for s in space:
            if s == space.largest:
                continue
            loss_i = twins[s](x, xl, y.clone(), yl)[0]
            assert torch.allclose(stats[f"loss_{s}"], loss_i, rtol=1e-5), s
            ctc, lens, att = _posteriors(twins[s], x, xl, y_ids, yl)
            assert torch.equal(lens, ref_lens)
            kl_ctc = sum((ref_ctc[b, :n].exp() * (ref_ctc[b, :n] - ctc[b, :n])).sum()
                         for b, n in enumerate(lens.tolist())) / len(xl)
            kl_att = 0.0 if att is None else sum(
                (ref_att[b, :n].exp() * (ref_att[b, :n] - att[b, :n])).sum() for b, n in enumerate((yl + 1).tolist())
            ) / len(xl)
            kl = model.ctc_weight * kl_ctc + (1 - model.ctc_weight) * kl_att
            lam1, lam2 = (0.8, 0.2) if s.depth < space.largest.depth else (1.0, 1.0)
            assert model.lambdas[s] == (lam1, lam2)
            expected = expected + lam1 * loss_i + lam2 * kl
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_without_kl_no_kl_term():
    model = as_trained(make_model(subnet_sampling="all", use_kl=False))
    model.eval()
    with torch.no_grad():
        loss, stats, _ = model(*batch())
    space = model.encoder.subnet_space
    expected = stats[f"loss_{space.largest}"] + sum(
        model.lambdas[s][0] * stats[f"loss_{s}"] for s in space if s != space.largest
    )
    assert torch.allclose(loss, expected)
    assert all(stats[f"kl_{s}"] is None for s in space)


def test_kl_is_small_for_near_identical_subnets():
    enc = make_encoder(grid=dict(subnets=["3-32-32bit", "3-32-8bit"]))
    model = as_trained(make_model(enc, subnet_sampling="all", lambda_preset="uniform"))
    model.eval()
    with torch.no_grad():
        _, stats, _ = model(*batch())
    assert 0 <= stats["kl_3-32-8bit"] < 1e-2  # 8-bit weights barely move the posteriors


def test_kl_stop_gradient_on_the_largest():
    """SG(p_max): with lambda1 = 0, the subnet's KL sends no gradient into units only the
    largest uses, so their gradient equals that of L_max alone."""
    def grads(subnets):
        torch.manual_seed(0)
        enc = make_encoder(grid=dict(subnets=["3-32-32bit", "3-16-32bit"]), dropout_rate=0.0,
                           positional_dropout_rate=0.0)
        model = make_model(enc, subnet_sampling="all", lambda1={"width": 0.0}, lambda2={"width": 5.0})
        model.subnets_for_step = lambda: [model.encoder.subnet_space.get(s) for s in subnets]
        torch.manual_seed(1)
        loss, stats, _ = model(*batch())
        loss.sum().backward()
        return model.encoder.encoders[0].feed_forward.w_1.weight.grad, stats

    g_max, _ = grads(["3-32-32bit"])
    g_all, stats = grads(["3-32-32bit", "3-16-32bit"])
    assert stats["kl_3-16-32bit"] > 0
    assert torch.allclose(g_all[16:], g_max[16:], atol=1e-6)  # no KL gradient into the largest
    assert not torch.allclose(g_all[:16], g_max[:16], atol=1e-6)  # but into the subnet


def test_kl_matches_a_direct_computation():
    """KL(p_max || p_i) over valid CTC frames / batch and valid decoder tokens / batch."""
    enc = make_encoder(grid=dict(subnets=["3-32-32bit", "2-16-4bit"]))
    model = as_trained(make_model(enc, ctc_weight=0.3))
    model.eval()
    x, xl, y, yl = batch(b=3)
    yl = torch.tensor([5, 3, 2])
    with torch.no_grad():
        feats, lens = model.encoder_input(x, xl)
        outs = {}
        for name in ["3-32-32bit", "2-16-4bit"]:
            model.encoder.set_subnet(name)
            _, _, outs[name] = model._subnet_forward(feats, lens, y.clone(), yl)
        got = model._kl_regulariser(outs["3-32-32bit"], outs["2-16-4bit"], yl)

        def kl(p_logits, q_logits, valid):
            p, q = p_logits.log_softmax(-1), q_logits.log_softmax(-1)
            return sum((p[b, :n].exp() * (p[b, :n] - q[b, :n])).sum() for b, n in enumerate(valid))

        olens = outs["3-32-32bit"]["lens"]
        kl_ctc = kl(outs["3-32-32bit"]["ctc"], outs["2-16-4bit"]["ctc"], olens.tolist()) / 3
        kl_att = kl(outs["3-32-32bit"]["att"], outs["2-16-4bit"]["att"], (yl + 1).tolist()) / 3
    assert outs["3-32-32bit"]["ctc"].shape[:2] == (3, int(olens.max()))
    assert torch.allclose(got, 0.3 * kl_ctc + 0.7 * kl_att, rtol=1e-5)


def test_validation_evaluates_every_subnet_and_restores_selection():
    model = as_trained(make_model())
    model.encoder.set_subnet("2-16-4bit")
    model.eval()
    with torch.no_grad():
        _, stats, _ = model(*batch())
    for s in model.encoder.subnet_space:
        assert stats[f"loss_{s}"] is not None and stats[f"acc_{s}"] is not None
        assert stats[f"cer_{s}"] is not None  # ESPnet computes CER in validation
    assert model.encoder.active_subnet == Subnet.uniform(2, 16, 4)
    assert stats["acc"] == stats["acc_3-32-8bit"]


@pytest.mark.parametrize(
    "conf, match",
    [
        (dict(subnet_sampling="random"), "sandwich"),
        (dict(lambda_preset="bert"), "lambda_preset"),
        (dict(lambda1={"heads": 1.0}), "unknown lambda"),
        (dict(num_random_subnets=-1), "num_random"),
    ],
)
def test_bad_model_conf(conf, match):
    with pytest.raises(ValueError, match=match):
        make_model(**conf)


def test_requires_allinone_encoder():
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder

    from tests.conftest import IDIM, TINY

    with pytest.raises(ValueError, match="all-in-one encoder"):
        make_model(ConformerEncoder(IDIM, **TINY))


def test_lambda_presets_match_paper_footnotes():
    assert LAMBDA_PRESETS["conformer"] == (
        {"depth": 0.8, "width": 1.0, "bits": 1.0},
        {"depth": 0.2, "width": 1.0, "bits": 1.0},
    )
    assert LAMBDA_PRESETS["ssl"][0] == {"depth": 1.0, "width": 1.0, "bits": 1.0}
    assert LAMBDA_PRESETS["ssl"][1] == {"depth": 0.005, "width": 0.1, "bits": 0.1}
    model = make_model(lambda_preset="ssl", lambda2={"width": 0.3})
    assert model.lambdas[Subnet.uniform(3, 16, 8)] == (1.0, 0.3)
    assert model.lambdas[Subnet.uniform(2, 16, 8)] == (1.0, 0.005)  # min over attributes


def test_checkpoint_round_trip_and_mismatch_errors():
    model = make_model()
    model(*batch())  # initialises step sizes and statistics
    other = make_model()
    other.load_state_dict(model.state_dict())
    for (k, v), (k2, v2) in zip(model.state_dict().items(), other.state_dict().items()):
        assert k == k2
        torch.testing.assert_close(v, v2, rtol=0, atol=0, equal_nan=True)  # NaN: step never used
    # another subnet space: per-subnet BatchNorm statistics do not match
    wrong_space = make_model(make_encoder(grid=dict(subnet_depths=[1, 3], subnet_widths=[16, 32], subnet_bits=[4, 8])))
    with pytest.raises(ValueError, match="subnet space"):
        wrong_space.load_state_dict(model.state_dict(), strict=False)
    # another shape: torch's size check
    wider = make_model(make_encoder(linear_units=64, grid=dict(subnet_widths=[16, 64], subnet_bits=[4, 8])))
    with pytest.raises(RuntimeError, match="size mismatch"):
        wider.load_state_dict(model.state_dict(), strict=False)


def test_shared_prefixes_give_the_same_loss_and_gradients():
    """The model shares subsampling/block outputs between the subnets of a step; with
    dropout off, loss and every gradient equal those of computing each subnet alone."""
    grads = []
    for share in (True, False):
        torch.manual_seed(0)
        model = make_model(subnet_sampling="all", share_prefixes=share)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        loss, _, _ = model(*batch())
        loss.backward()
        grads.append((loss.detach(), {n: p.grad for n, p in model.named_parameters()}))
    (loss_a, ga), (loss_b, gb) = grads
    assert torch.allclose(loss_a, loss_b, rtol=1e-5)
    assert ga.keys() == gb.keys()
    for n in ga:
        if ga[n] is None or gb[n] is None:
            assert ga[n] is None and gb[n] is None, n
        else:
            # atol: biases right before BatchNorm have a zero gradient up to rounding
            assert torch.allclose(ga[n], gb[n], rtol=1e-4, atol=1e-5), n


def test_sandwich_layerwise_draws_fit_the_space():
    import random as _random

    space = make_encoder().subnet_space
    rng = _random.Random(3)
    pairs = {(s.width, s.bits) for s in space}
    draws = [space.sample("sandwich_layerwise", 2, rng) for _ in range(50)]
    assert all(d[0] == space.largest and d[1] == space.smallest and len(d) == 4 for d in draws)
    drawn = [s for d in draws for s in d[2:]]
    assert all(s.depth in {x.depth for x in space} and set(s.blocks) <= pairs for s in drawn)
    assert any(type(s).__name__ == "Subnet" for s in drawn)


def test_sandwich_layerwise_training_step_learns_through_a_layerwise_subnet():
    import random as _random

    _random.seed(1)
    model = make_model(subnet_sampling="sandwich_layerwise", num_random_subnets=1)
    model.train()
    drawn = model.subnets_for_step()
    assert type(drawn[2]).__name__ == "Subnet"
    _random.seed(1)  # the forward draws the same
    loss, stats, _ = model(*batch())
    assert torch.isfinite(loss) and stats["loss_layerwise"] is not None and stats["kl_layerwise"] is not None
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    lam1, lam2 = model.lambdas_of(drawn[2])
    attrs = list(model.encoder.subnet_space.attributes_compressed(drawn[2]))
    assert attrs and lam1 == min(model._lam1[a] for a in attrs)
    as_trained(model)  # every grid subnet's state set, as after more steps
    model.eval()  # validation computes the grid only: no always-empty (NaN in the log) layer-wise keys
    with torch.no_grad():
        _, stats, _ = model(*batch())
    assert not [k for k in stats if k.endswith("_layerwise")]
    assert all(stats[f"acc_{s}"] is not None for s in model.encoder.subnet_space)
