"""Registration into ESPnet3 (ESPnet 202609+): its copy of the ASR task's class choices gets the plugin's
names, a failure there leaves stock ESPnet3 working, and ESPnet3's untrusted bundle loading still accepts
stock ASR bundles, whose ``espnet2.bin.asr_inference.Speech2Text`` is the plugin's subclass once installed."""

import subprocess
import sys

import pytest

from tests.conftest import NOT_ON_THIS_LINE

pytest.importorskip("espnet3", reason=f"{NOT_ON_THIS_LINE}ESPnet3 ships with ESPnet 202609+")


def _run(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (the plugin's import hook as ESPnet3's processes see it)."""
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # imports ESPnet3's task module in a fresh process: ~15 s
def test_espnet3_task_choices_hold_the_plugin_names_and_its_parser_takes_them():
    proc = _run(
        "import espnet3.systems.esp2_asr.task as t\n"
        "from espnet_allinone.encoders.conformer import AllInOneConformerEncoder\n"
        "from espnet_allinone.model import AllInOneASRModel\n"
        "assert t.encoder_choices.get_class('allinone_conformer') is AllInOneConformerEncoder\n"
        "assert t.encoder_choices.get_class('allinone_wav2vec2').__name__ == 'AllInOneWav2Vec2Encoder'\n"
        "assert t.model_choices.get_class('allinone') is AllInOneASRModel\n"
        "args = t.ASRTask.get_parser().parse_args(['--encoder', 'allinone_conformer', '--model', 'allinone'])\n"
        "assert (args.encoder, args.model) == ('allinone_conformer', 'allinone')\n"
        "print('ok')\n")
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-3000:]


def test_a_failure_in_espnet3_leaves_its_stock_choices_and_says_why(monkeypatch, capsys):
    import espnet3.systems.esp2_asr.task as t

    from espnet_allinone import _hook, register

    def fail(module=None):
        raise ImportError("forced by the test")

    classes = {attr: dict(getattr(t, attr).classes) for attr in _hook._CHOICES}
    monkeypatch.setattr(register, "register_asr_task", fail)
    monkeypatch.setattr(_hook, "_failure", None)
    monkeypatch.setattr(_hook, "_said", set())
    try:
        _hook._patch("espnet3.systems.esp2_asr.task", t)
        err = capsys.readouterr().err
        assert err.count("could not register into ESPnet") == 1 and "in ESPnet3" in err
        with pytest.raises(RuntimeError, match="allinone_conformer: espnet_allinone .* could not register"):
            t.encoder_choices.get_class("allinone_conformer")(input_size=80)
        assert t.encoder_choices.get_class("conformer").__name__ == "ConformerEncoder"
        assert t.model_choices.get_class("espnet").__name__ == "ESPnetASRModel"
    finally:
        for attr, saved in classes.items():
            getattr(t, attr).classes.clear()
            getattr(t, attr).classes.update(saved)


def test_untrusted_bundle_loading_accepts_stock_asr_bundles_and_nothing_more_of_the_plugin():
    from omegaconf import OmegaConf

    import espnet2.bin.asr_inference as stock_inference
    from espnet3.publication import inference_model

    assert stock_inference.Speech2Text.__module__ == "espnet_allinone.inference"  # the plugin's subclass
    stock = OmegaConf.create({"model": {"_target_": "espnet2.bin.asr_inference.Speech2Text"}})
    assert inference_model._disallowed_targets(stock) == []
    for target in ("espnet_allinone.export.load_allinone", "espnet_allinone.inference.select_subnet"):
        assert inference_model._disallowed_targets(OmegaConf.create({"m": {"_target_": target}})) == [target]
