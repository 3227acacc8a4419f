"""A failed registration leaves stock ESPnet working and says why, once."""

import os
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ASR_TRAIN_DATA_ARGS, NOT_ON_THIS_LINE, TRAIN_CONFIG, write_tone_corpus

# Python run before an ESPnet entry point: registration fails as it would on an ESPnet
# release the plugin does not support
FORCE_FAILURE = (
    "import runpy, sys\n"
    "import espnet_allinone.register as r\n"
    "def fail(*args, **kwargs):\n"
    "    raise ImportError('forced by the test')\n"
    "r.register_asr_task = r.patch_asr_inference = fail\n"
    "module, sys.argv = sys.argv[1], sys.argv[1:]\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)


def run_failing(module, *args, cwd, ok=True):
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", FORCE_FAILURE, module, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == ok, proc.stderr[-4000:]
    return proc


def _said_once(stderr: str) -> str:
    """Each failed hook's message, once; returns the first."""
    lines = [line for line in stderr.splitlines() if "could not register into ESPnet" in line]
    assert lines and len(lines) == len(set(lines)), stderr[-4000:]
    return lines[0]


@pytest.mark.parametrize("task", ["espnet2.tasks.asr", "espnet3.systems.esp2_asr.task"])
def test_failure_is_reported_once_and_the_names_raise_it(monkeypatch, capsys, task):
    """In espnet2's ASR task and in ESPnet3's copy of it (ESPnet 202609+)."""
    import importlib

    if task.startswith("espnet3"):
        pytest.importorskip("espnet3", reason=f"{NOT_ON_THIS_LINE}ESPnet3 ships with ESPnet 202609+")
    asr = importlib.import_module(task)

    import espnet_allinone
    from espnet_allinone import _hook, register

    def fail(module=None):
        raise ImportError("forced by the test")

    classes = {attr: dict(getattr(asr, attr).classes) for attr in _hook._CHOICES}
    monkeypatch.setattr(register, "register_asr_task", fail)
    monkeypatch.setattr(_hook, "_failure", None)
    monkeypatch.setattr(_hook, "_said", set())
    try:
        _hook._patch(task, asr)
        _hook._patch(task, asr)
        err = capsys.readouterr().err
        line = _said_once(err)
        from importlib.metadata import version

        assert f"ESPnet {version('espnet')}" in line and f"espnet_allinone {espnet_allinone.__version__}" in line
        assert "supported: espnet" in line and "forced by the test" in line
        assert line.endswith(f"{_hook._LOST[task]} are unavailable.")
        with pytest.raises(RuntimeError, match="allinone_conformer: espnet_allinone .* could not register"):
            asr.encoder_choices.get_class("allinone_conformer")(input_size=80)
        with pytest.raises(RuntimeError, match="allinone: espnet_allinone"):
            asr.model_choices.get_class("allinone")()
        assert asr.encoder_choices.get_class("conformer").__name__ == "ConformerEncoder"
        assert asr.model_choices.get_class("espnet").__name__ == "ESPnetASRModel"
    finally:
        for attr, saved in classes.items():
            getattr(asr, attr).classes.clear()
            getattr(asr, attr).classes.update(saved)


@pytest.mark.slow
def test_stock_espnet_trains_and_decodes_when_registration_fails(tmp_path):
    help_out = run_failing("espnet2.bin.asr_train", "--help", cwd=tmp_path)
    assert "--encoder" in help_out.stdout
    _said_once(help_out.stderr)

    write_tone_corpus(tmp_path, 4, 2)
    stock = dict(TRAIN_CONFIG, encoder="conformer", model="espnet", model_conf={"ctc_weight": 0.3})
    stock["encoder_conf"] = {k: v for k, v in TRAIN_CONFIG["encoder_conf"].items() if not k.startswith("subnet")}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(stock))
    common = ["--token_type", "char", "--token_list", "tokens.txt", "--use_preprocessor", "true",
              *ASR_TRAIN_DATA_ARGS, "--ngpu", "0"]
    trained = run_failing("espnet2.bin.asr_train", "--config", "train.yaml", *common,
                          "--output_dir", "exp", cwd=tmp_path)
    _said_once(trained.stderr)
    assert (tmp_path / "exp" / "1epoch.pth").is_file()

    decoded = run_failing(
        "espnet2.bin.asr_inference", "--asr_train_config", "exp/config.yaml", "--asr_model_file",
        "exp/1epoch.pth", "--data_path_and_name_and_type", "dev/wav.scp,speech,sound",
        "--output_dir", "decode", "--beam_size", "2", "--ngpu", "0", cwd=tmp_path)
    _said_once(decoded.stderr)
    assert len((tmp_path / "decode" / "1best_recog" / "text").read_text().splitlines()) == 2

    (tmp_path / "allinone.yaml").write_text(yaml.safe_dump(TRAIN_CONFIG))
    refused = run_failing("espnet2.bin.asr_train", "--config", "allinone.yaml", *common,
                          "--output_dir", "exp_allinone", cwd=tmp_path, ok=False)
    assert "allinone_conformer: espnet_allinone" in refused.stderr and "could not register" in refused.stderr
