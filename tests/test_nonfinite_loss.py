"""A NaN/inf loss in one subnet: the stats name the subnet, and training stops after
``max_nonfinite_steps`` consecutive such batches instead of skipping updates forever.

What stock ESPnet does with it (espnet2/train/trainer.py): the summed loss is NaN, so is the
gradient norm, and the trainer logs "The grad norm is nan. Skipping updating the model." and
goes on with the next batch, for as long as it happens.
"""

import logging

import pytest
import torch
import yaml

from espnet_allinone.model import AllInOneASRModel
from tests.conftest import ASR_TRAIN_DATA_ARGS, TRAIN_CONFIG, batch, make_model, write_tone_corpus


def _nan_in(monkeypatch, subnet: str, when=lambda: True):
    """Make ``subnet``'s loss NaN (while ``when()``), as a diverged subnet's would be."""
    original = AllInOneASRModel._subnet_forward

    def forward(self, *args, **kwargs):
        loss, stats, outs = original(self, *args, **kwargs)
        if str(self.encoder.active_subnet) == subnet and when():
            loss = loss * float("nan")
        return loss, stats, outs

    monkeypatch.setattr(AllInOneASRModel, "_subnet_forward", forward)


def test_stats_name_the_subnet_whose_loss_is_not_finite(monkeypatch):
    model = make_model(num_random_subnets=0)  # largest 3-32-8bit, smallest 2-16-4bit
    _nan_in(monkeypatch, "2-16-4bit")
    model.train()
    loss, stats, _ = model(*batch())
    assert not torch.isfinite(loss)
    assert float(stats["nonfinite_2-16-4bit"]) == 1.0
    assert float(stats["nonfinite_3-32-8bit"]) == 0.0
    assert stats["nonfinite_3-16-8bit"] is None  # not sampled in this step


@pytest.mark.parametrize("limit", [1, 3])
def test_training_stops_after_consecutive_nonfinite_batches(monkeypatch, caplog, limit):
    model = make_model(num_random_subnets=0, max_nonfinite_steps=limit)
    calls = {"n": 0}

    def nan_now():
        calls["n"] += 1
        return calls["n"] != 2  # batch 2 is finite: the run starts again after it

    _nan_in(monkeypatch, "2-16-4bit", nan_now)
    model.train()
    with caplog.at_level(logging.WARNING):
        if limit > 1:
            model(*batch())  # 1: NaN
            model(*batch())  # 2: finite, resets the run
            for _ in range(limit - 1):
                model(*batch())
        with pytest.raises(FloatingPointError) as e:
            model(*batch())
    assert (f"NaN/inf loss in the last {limit} batches of subnet 2-16-4bit that computed it "
            f"(max_nonfinite_steps: {limit})") in str(e.value)
    assert "NaN/inf loss in this batch: subnet 2-16-4bit (1 in a row)" in caplog.text


def test_a_subnet_counts_the_batches_that_computed_it(monkeypatch):
    """A random subnet NaN whenever drawn reaches the limit, whatever the finite batches between."""
    model = make_model(num_random_subnets=1, max_nonfinite_steps=2)
    computed = []

    def count():
        computed.append(batches)
        return True

    _nan_in(monkeypatch, "3-16-4bit", count)  # one of 6 random subnets: rarely two batches in a row
    model.train()
    with pytest.raises(FloatingPointError, match="the last 2 batches of subnet 3-16-4bit"):
        for batches in range(200):
            model(*batch())
    assert len(computed) == 2 and computed[1] > computed[0] + 1  # finite batches between the two


def test_zero_never_stops_and_validation_never_counts(monkeypatch):
    model = make_model(num_random_subnets=0, max_nonfinite_steps=0)
    _nan_in(monkeypatch, "2-16-4bit")
    model.train()
    for _ in range(5):
        model(*batch())
    model.max_nonfinite_steps = 1
    model._nonfinite_run.clear()
    model.eval()
    with torch.no_grad():
        _, stats, _ = model(*batch())  # an evaluation: reported, never a reason to stop
    assert float(stats["nonfinite_2-16-4bit"]) == 1.0
    with pytest.raises(ValueError, match="max_nonfinite_steps must be >= 0"):
        make_model(max_nonfinite_steps=-1)


@pytest.mark.slow
def test_espnet_training_stops_with_the_subnet_named(tmp_path, monkeypatch, caplog):
    """Stock ``ASRTask.main`` (in process, so that the NaN can be injected): ESPnet skips the
    updates, and the run stops at the third batch naming the subnet."""
    from espnet2.tasks.asr import ASRTask

    write_tone_corpus(tmp_path, 12, 2)
    config = {**TRAIN_CONFIG, "model_conf": {**TRAIN_CONFIG["model_conf"], "num_random_subnets": 0,
                                             "max_nonfinite_steps": 3}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
    _nan_in(monkeypatch, "1-16-4bit")  # the smallest: in every step
    monkeypatch.chdir(tmp_path)
    with caplog.at_level(logging.WARNING), pytest.raises(FloatingPointError) as e:
        ASRTask.main(cmd=["--config", "train.yaml", "--token_type", "char", "--token_list", "tokens.txt",
                          *ASR_TRAIN_DATA_ARGS, "--output_dir", "exp", "--ngpu", "0"])
    assert "the last 3 batches of subnet 1-16-4bit" in str(e.value)
    assert caplog.text.count("Skipping updating the model") == 2  # ESPnet skipped batches 1 and 2
