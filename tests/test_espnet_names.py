"""The ESPnet names the plugin subclasses, overrides or calls still exist.

When an ESPnet release renames or removes one of them, this test says which and where
the plugin uses it, instead of an AttributeError deep inside a training. To support a
newer ESPnet: install it, run this file, adapt the listed uses, then raise the upper
bound of ``espnet`` in setup.py (and requirements-py311.txt where it applies).
"""

import importlib
import inspect

import pytest

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
    ("espnet2.asr.espnet_model", "autocast", "model.py encoder_input: ESPnet's frontend autocast"),
    ("espnet2.asr.espnet_model", "autocast_type", "model.py encoder_input"),
    ("espnet2.asr.encoder.conformer_encoder", "ConformerEncoder.forward", "encoders/conformer.py: subclassed"),
    ("espnet2.asr.encoder.abs_encoder", "AbsEncoder", "encoders/wav2vec2.py: subclassed"),
    ("espnet.nets.pytorch_backend.transformer.repeat", "MultiSequential", "encoders/conformer.py: subclassed"),
    ("espnet.nets.pytorch_backend.transformer.subsampling", "TooShortUttError", "decode_subnets.py"),
    ("espnet.nets.pytorch_backend.nets_utils", "make_pad_mask", "model.py"),
    ("espnet.nets.beam_search", "Hypothesis", "inference.py: greedy CTC results"),
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
    """Prefix sharing memoizes calls of ``embed`` and of each block as stock
    ConformerEncoder.forward makes them (``self.embed(xs_pad, masks)``, ``for ... in
    enumerate(self.encoders)``, ``encoder_layer(xs_pad, masks)``); a rewrite of that loop
    needs a look at espnet_allinone/elastic.py's share_calls."""
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
    import espnet

    return getattr(espnet, "__version__", "?")


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
