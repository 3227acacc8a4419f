"""The ESPnet names the plugin subclasses, overrides or calls exist and behave as it calls them.

Run on both ESPnet lines (202511 and 202609-202611; pytest's header says which one ran).
When an ESPnet release renames, moves or changes one of them, this test says which and
where the plugin uses it, instead of an error deep inside a training. Names whose home or
call differs between the lines are taken from ``espnet_allinone.compat``; the tests below
call them as the plugin does. To support a newer ESPnet: ``ESPNET=<release> bash
tools/setup.sh`` into a new virtualenv (with a constraints/espnet<release>.txt), run this
file, adapt compat.py, run the suite, then raise the bound of ``espnet`` in setup.py.
"""

import importlib
import inspect

import pytest
import torch

from espnet_allinone import compat

# (module, attribute path, where and how the plugin relies on it)
RELIED_ON = [
    ("espnet2.tasks.asr", "encoder_choices.classes", "register.py: adds allinone_conformer/_wav2vec2"),
    ("espnet2.tasks.asr", "model_choices.classes", "register.py: adds allinone"),
    ("espnet2.tasks.asr", "ASRTask.build_model", "benchmarks, tests: the model asr_train builds"),
    ("espnet2.tasks.asr", "ASRTask.build_model_from_file", "export.py, report.py: load a trained model"),
    ("espnet2.bin.asr_inference", "Speech2Text", "inference.py: subclassed"),
    ("espnet2.bin.asr_inference", "Speech2Text._decode_single_sample", "inference.py: overridden (ctc_greedy)"),
    ("espnet2.bin.asr_inference", "Speech2Text.from_pretrained", "stock inference() builds Speech2Text with it"),
    ("espnet2.bin.asr_inference", "inference", "inference.py: wrapped (subnet, ctc_greedy)"),
    ("espnet2.bin.asr_inference", "get_parser", "inference.py: extended (--subnet, --ctc_greedy)"),
    ("espnet2.bin.asr_inference", "main", "_hook.py: python -m espnet2.bin.asr_inference runs it"),
    ("espnet2.bin.asr_train", "main", "bin/asr_train.py"),
    ("espnet2.asr.espnet_model", "ESPnetASRModel._extract_feats", "model.py encoder_input: the frontend"),
    ("espnet2.asr.espnet_model", "ESPnetASRModel._calc_ctc_loss", "model.py: each subnet's CTC loss"),
    ("espnet2.asr.espnet_model", "ESPnetASRModel._calc_att_loss", "model.py: each subnet's attention loss"),
    ("espnet2.asr.espnet_model", "autocast", "compat.frontend_autocast: ESPnet's frontend autocast"),
    ("espnet2.asr.espnet_model", "autocast_type", "compat.frontend_autocast"),
    ("espnet2.asr.encoder.conformer_encoder", "ConformerEncoder.forward", "encoders/conformer.py: subclassed"),
    ("espnet2.asr.encoder.abs_encoder", "AbsEncoder", "encoders/wav2vec2.py: subclassed"),
    ("espnet2.torch_utils.load_pretrained_model", "load_pretrained_model", "--init_param (tests/test_cross_line.py)"),
    ("espnet2.bin.pack", "main", "export.py: python -m espnet2.bin.pack asr (model-zoo zip)"),
    ("espnet2.bin.pack", "ASRPackedContents", "export.py: its --asr_train_config/--asr_model_file/--option"),
    ("espnet2.fileio.sound_scp", "soundfile_read", "data/audio.py"),
    ("espnet2.utils.types", "str2bool", "inference.py, decode_subnets.py"),
    ("espnet2.torch_utils.device_funcs", "force_gatherable", "model.py"),
]

# methods the plugin overrides or calls with these parameters
SIGNATURES = [
    ("espnet2.bin.asr_inference", "Speech2Text._decode_single_sample", ["self", "enc"]),
    ("espnet2.asr.espnet_model", "ESPnetASRModel._extract_feats", ["self", "speech", "speech_lengths"]),
    ("espnet2.asr.espnet_model", "ESPnetASRModel._calc_ctc_loss",
     ["self", "encoder_out", "encoder_out_lens", "ys_pad", "ys_pad_lens"]),
    ("espnet2.asr.espnet_model", "ESPnetASRModel._calc_att_loss",
     ["self", "encoder_out", "encoder_out_lens", "ys_pad", "ys_pad_lens"]),
    ("espnet2.asr.encoder.conformer_encoder", "ConformerEncoder.forward", ["self", "xs_pad", "ilens"]),
]


def test_stock_conformer_forward_calls_what_the_plugin_shares():
    """Prefix sharing shares the subsampling and each block as stock ConformerEncoder.forward
    calls them (``self.embed(xs_pad, masks)``, ``for ... in enumerate(self.encoders)``,
    ``encoder_layer(xs_pad, masks)``); a rewrite of that loop needs a look at
    espnet_allinone/sharing.py."""
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder

    src = inspect.getsource(ConformerEncoder.forward)
    for call in ("self.embed(xs_pad, masks)", "enumerate(self.encoders)", "encoder_layer(xs_pad, masks)"):
        assert call in src, f"espnet {_espnet_version()}: ConformerEncoder.forward no longer has {call!r}"


def _resolve(module: str, path: str):
    obj = importlib.import_module(module)
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _espnet_version() -> str:
    from importlib.metadata import version

    return f"{version('espnet')} (nets in {compat.NETS_PACKAGE})"


@pytest.mark.parametrize("module,path,use", RELIED_ON, ids=[f"{m}.{p}" for m, p, _ in RELIED_ON])
def test_espnet_name_exists(module, path, use):
    try:
        _resolve(module, path)
    except (ImportError, AttributeError) as e:
        pytest.fail(
            f"espnet {_espnet_version()} has no {module}.{path} ({e}); the plugin relies on it "
            f"in {use}. Adapt that use before raising the espnet bound in setup.py."
        )


@pytest.mark.parametrize("module,path,params", SIGNATURES, ids=[f"{m}.{p}" for m, p, _ in SIGNATURES])
def test_espnet_signature_starts_as_the_plugin_expects(module, path, params):
    got = list(inspect.signature(_resolve(module, path)).parameters)
    assert got[: len(params)] == params, (
        f"espnet {_espnet_version()}: {module}.{path} now takes {got}; the plugin overrides "
        f"or calls it as ({', '.join(params)}, ...)"
    )


def test_inference_module_uses_the_plugin_names():
    import espnet2.bin.asr_inference as stock

    import espnet_allinone.inference as ours

    assert stock.Speech2Text is ours.Speech2Text
    assert stock.inference is ours.inference and stock.get_parser is ours.get_parser
    assert ours.Speech2Text.__mro__[1].__module__ == "espnet2.bin.asr_inference"


def test_installed_espnet_is_within_the_declared_bounds():
    """The espnet this suite runs with satisfies the plugin's declared requirement, and
    that requirement has an upper bound (a release this suite passed with)."""
    from importlib.metadata import requires, version

    from packaging.requirements import Requirement

    reqs = [Requirement(r) for r in requires("espnet_allinone") or []]
    espnet = next(r for r in reqs if r.name == "espnet" and not r.marker)
    assert any(s.operator in ("<", "<=", "==") for s in espnet.specifier), (
        f"setup.py declares {espnet} without an upper bound"
    )
    assert espnet.specifier.contains(version("espnet")), (
        f"installed espnet {version('espnet')} is outside setup.py's {espnet} "
        "(an editable install reads setup.py when installed: pip install -e . again)"
    )


# --- the names of espnet_allinone.compat, called as the plugin calls them -----------------


def test_frontend_autocast_is_called_as_the_installed_espnet_calls_it():
    """The other line's call of ESPnet's autocast fails here (202609 moved it to
    ``torch.amp.autocast``, device type first): compat must pick this line's."""
    from espnet2.asr import espnet_model

    lin = torch.nn.Linear(3, 2)
    with compat.frontend_autocast(False):
        assert lin(torch.ones(1, 3)).dtype == torch.float32
    other_line = (
        (lambda: espnet_model.autocast("cuda", enabled=False, dtype=espnet_model.autocast_type))
        if compat.NETS_PACKAGE == "espnet.nets"
        else (lambda: espnet_model.autocast(False, dtype=espnet_model.autocast_type))
    )
    with pytest.raises((TypeError, RuntimeError, ValueError)):
        with other_line():
            pass


def test_nets_helpers_behave_as_the_plugin_uses_them():
    mask = compat.make_pad_mask(torch.tensor([1, 3]))
    assert mask.tolist() == [[False, True, True], [False, False, False]]
    ys_in, ys_out = compat.add_sos_eos(torch.tensor([[3, 4], [5, -1]]), 8, 9, -1)
    assert ys_in.tolist() == [[8, 3, 4], [8, 5, 9]] and ys_out.tolist() == [[3, 4, 9], [5, 9, -1]]
    err = compat.TooShortUttError("short", 3, 7)
    assert (err.actual_size, err.limit) == (3, 7)
    seq = compat.MultiSequential(torch.nn.Identity(), torch.nn.Identity())
    assert len(list(seq._modules.values())) == 2 and hasattr(seq, "layer_drop_rate")
    hyp = compat.Hypothesis(yseq=torch.tensor([1, 2]), score=0.5)
    assert hyp.yseq.tolist() == [1, 2] and hyp.score == 0.5
    pe = compat.RelPositionalEncoding(8, 0.0)
    x, pos = pe(torch.zeros(1, 5, 8))
    assert x.shape == (1, 5, 8) and pos.shape[-1] == 8
    assert compat.PositionalEncoding(8, 0.0)(torch.zeros(1, 5, 8)).shape == (1, 5, 8)


def test_check_short_utt_and_subsampling_layout():
    """``check_short_utt`` on ESPnet's Conv2dSubsampling (onnx_export's min_frames), and the
    subsampling's key layout that compat.upgrade_subsampling_keys converts a 202511 one to."""
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder

    enc = ConformerEncoder(20, output_size=8, attention_heads=2, linear_units=16, num_blocks=1)
    short, limit = compat.check_short_utt(enc.embed, 3)
    assert short and int(limit) == 7
    keys_202511 = {}
    for key, value in enc.state_dict().items():  # the same weights in the 202511 layout
        key = key.replace("embed.out.weight", "embed.out.0.weight").replace("embed.out.bias", "embed.out.0.bias")
        keys_202511[key.replace("embed.pos_enc.", "embed.out.1.")] = value
    compat.upgrade_subsampling_keys(keys_202511, "embed.", enc.embed)
    assert set(keys_202511) == set(enc.state_dict()), f"espnet {_espnet_version()}"


def test_ctc_prefix_scorer_window_as_the_installed_espnet_has_it():
    ctc = torch.nn.Module()
    ctc.log_softmax = lambda x: torch.log_softmax(x, -1)
    import espnet2.bin.asr_inference as stock

    cls = next(c for c in stock.Speech2Text.__mro__ if c.__module__ == "espnet2.bin.asr_inference")
    stock_default = inspect.signature(cls.__init__).parameters.get("ctc_window_margin")
    assert compat.ctc_window_margin_default() == (0 if stock_default is None else stock_default.default), (
        f"espnet {_espnet_version()}: stock Speech2Text's ctc_window_margin default is {stock_default}")
    exact = compat.ctc_prefix_scorer(ctc, eos=4, window_margin=0)
    assert getattr(exact, "window_margin", 0) == 0
    default = compat.ctc_window_margin_default()
    if "window_margin" in inspect.signature(compat.CTCPrefixScorer.__init__).parameters:
        assert compat.ctc_prefix_scorer(ctc, eos=4, window_margin=7).window_margin == 7
    else:
        assert default == 0
        with pytest.raises(ValueError, match="ctc_window_margin=7"):
            compat.ctc_prefix_scorer(ctc, eos=4, window_margin=7)
    exact.batch_init_state(torch.randn(6, 5))  # one (T, D) utterance, as the ONNX search hands it
    assert exact.impl is not None


def test_beam_search_classes_take_the_plugins_arguments():
    params = inspect.signature(compat.BatchBeamSearch.__init__).parameters
    for name in ("scorers", "weights", "beam_size", "vocab_size", "sos", "eos", "token_list", "pre_beam_score_key"):
        assert name in params, f"espnet {_espnet_version()}: BatchBeamSearch has no {name}"
    assert issubclass(compat.CTCPrefixScorer, compat.BatchScorerInterface) or hasattr(
        compat.CTCPrefixScorer, "batch_score_partial")
    assert compat.LengthBonus(5).score(torch.tensor([1]), None, torch.zeros(3, 4))[0].shape == (5,)


def test_stock_batch_decoding_goes_through_batch_decode():
    """From 202609.post1 stock ``inference`` and ``Speech2Text.__call__`` decode several
    utterances with ``batch_decode`` (the plugin's Speech2Text overrides it for greedy and
    lexicon CTC); 202511 had no batch decoding."""
    import espnet2.bin.asr_inference as stock

    from espnet_allinone.inference import _STOCK

    cls = _STOCK["Speech2Text"]
    if not hasattr(cls, "batch_decode"):
        assert "batch decoding is not implemented" in inspect.getsource(_STOCK["inference"])
        return
    assert list(inspect.signature(cls.batch_decode).parameters)[:3] == ["self", "speech", "speech_lengths"]
    assert "speech2text.batch_decode(" in inspect.getsource(_STOCK["inference"])
    assert "self.batch_decode(" in inspect.getsource(cls.__call__)
    assert stock.Speech2Text.batch_decode is not cls.batch_decode
