"""A truncated or foreign model file given to decoding or export is a clear error naming
the file; export writes its outputs atomically."""

import re

import pytest
import torch
import yaml

from espnet_allinone.checkpoint import CheckpointError
from espnet_allinone.export import export_packed, export_stock, load_allinone
from tests.conftest import make_allinone_files


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("model")
    config, model_file = make_allinone_files(d)
    state = torch.load(model_file, weights_only=True)
    data = model_file.read_bytes()
    bad = {
        "truncated": (data[: len(data) // 2], r"not a PyTorch file, or one cut short"),
        "empty": (b"", r"not a PyTorch file, or one cut short \(0 bytes"),
        "not_pytorch": (b"utt1 hello\n", r"not a PyTorch file"),
    }
    for name, (content, _) in bad.items():
        (d / f"{name}.pth").write_bytes(content)
    # ESPnet's resume state next to the model files: not a model
    torch.save({"model": state, "optimizers": [{}], "reporter": {}, "scaler": None}, d / "checkpoint.pth")
    # another model's state dict
    torch.save({"encoder.embed.conv.0.weight": torch.zeros(3, 1, 3, 3), "decoder.w": torch.ones(2)},
               d / "foreign.pth")
    expected = {name: why for name, (_, why) in bad.items()}
    expected["checkpoint"] = r"ESPnet's resume state \(checkpoint.pth\), not a model"
    expected["foreign"] = r"a state dict of another model: .*size mismatch|a state dict of another model"
    return config, model_file, expected


CASES = ["truncated", "empty", "not_pytorch", "checkpoint", "foreign"]


@pytest.mark.parametrize("name", CASES)
def test_export_names_the_bad_model_file(files, name):
    config, model_file, expected = files
    path = model_file.parent / f"{name}.pth"
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ": " + expected[name]):
        load_allinone(config, path)


@pytest.mark.parametrize("name", ["truncated", "checkpoint", "foreign"])
def test_decoding_names_the_bad_model_file(files, name):
    from espnet_allinone.inference import Speech2Text

    config, model_file, expected = files
    path = model_file.parent / f"{name}.pth"
    with pytest.raises(CheckpointError, match=re.escape(str(path)) + ": " + expected[name]):
        Speech2Text(asr_train_config=str(config), asr_model_file=str(path))


def test_good_model_file_loads(files):
    config, model_file, _ = files
    assert hasattr(load_allinone(config, model_file).encoder, "subnet_space")


@pytest.mark.parametrize("export", [export_stock, export_packed])
def test_export_that_fails_midway_leaves_no_partial_output(files, tmp_path, monkeypatch, export):
    """A full disk at the last file: the directory is complete or absent, and an earlier
    complete export under the same name is kept."""
    config, model_file, _ = files
    model, train_config = load_allinone(config, model_file), yaml.safe_load(config.read_text())
    out = tmp_path / "export"
    export(model, train_config, "1-16-4bit", out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real_save, calls = torch.save, []

    def save_then_fail(obj, f, *a, **k):
        calls.append(f)
        if len(calls) == (2 if export is export_packed else 1):
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", save_then_fail)
    with pytest.raises(OSError, match="No space left"):
        export(model, train_config, "2-32-8bit", tmp_path / "new")
    assert not (tmp_path / "new").exists()
    calls.clear()
    with pytest.raises(OSError, match="No space left"):
        export(model, train_config, "2-32-8bit", out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the old export, whole
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no temporary left behind


@pytest.mark.parametrize("criteria, name", [
    ([["valid", "acc_mean", "max"], ["valid", "loss", "min"]], "valid.acc_mean.ave.pth"),
    ([["valid", "loss", "min"]], "valid.loss.ave.pth"),
])
def test_averaged_model_name_follows_the_first_best_model_criterion(criteria, name):
    from espnet_allinone.checkpoint import averaged_model_name

    assert averaged_model_name({"best_model_criterion": criteria}) == name


def test_averaged_model_name_needs_a_criterion():
    from espnet_allinone.checkpoint import averaged_model_name

    with pytest.raises(ValueError, match="no best_model_criterion: name the model file"):
        averaged_model_name({"encoder": "allinone_conformer"})
