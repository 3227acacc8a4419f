"""Registration into ESPnet3 (ESPnet 202609+): its copy of the ASR task's class choices gets the plugin's
names (a failure there: tests/test_registration_failure.py), and ESPnet3's untrusted bundle loading still accepts
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


def test_untrusted_bundle_loading_accepts_stock_asr_bundles_and_nothing_more_of_the_plugin():
    import espnet2.bin.asr_inference as stock_inference
    from espnet3.publication import inference_model
    from omegaconf import OmegaConf

    assert stock_inference.Speech2Text.__module__ == "espnet_allinone.inference"  # the plugin's subclass
    stock = OmegaConf.create({"model": {"_target_": "espnet2.bin.asr_inference.Speech2Text"}})
    assert inference_model._disallowed_targets(stock) == []
    for target in ("espnet_allinone.export.load_allinone", "espnet_allinone.inference.select_subnet"):
        assert inference_model._disallowed_targets(OmegaConf.create({"m": {"_target_": target}})) == [target]
