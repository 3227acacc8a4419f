"""Whether an LSQ step size is initialised is explicit state in the checkpoint
(``weight_log_step_ready``), and a trained step that is NaN is an error naming the layer
and bit-width, never silently re-initialised."""

import pytest
import torch

from espnet_allinone.elastic import ElasticWeight
from tests.conftest import batch, make_model

LAYER = "encoder.encoders.0.feed_forward.w_1"


def _trained_model():
    """A model whose 4- and 8-bit steps are initialised and moved by one update."""
    model = make_model()
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    model(*batch())[0].backward()
    opt.step()
    return model


def _layer(model, name=LAYER) -> ElasticWeight:
    return dict(model.named_modules())[name]


def test_initialised_state_travels_with_the_checkpoint():
    model = _trained_model()
    state = model.state_dict()
    ready = state[f"{LAYER}.weight_log_step_ready"]
    assert list(_layer(model).weight_log_step) == ["4bit", "8bit"]
    assert ready.tolist() == [1.0, 1.0]
    fresh = make_model()
    assert fresh.state_dict()[f"{LAYER}.weight_log_step_ready"].tolist() == [0.0, 0.0]
    fresh.load_state_dict(state)
    fresh.train()
    fresh(*batch())  # uses the loaded steps: nothing re-initialised from the weights
    for k, v in model.state_dict().items():
        if "weight_log_step" in k:
            # exactly equal; steps of layers no subnet of the batch used stay zero in both
            torch.testing.assert_close(fresh.state_dict()[k], v, rtol=0, atol=0, equal_nan=True, msg=k)


def test_nan_in_a_trained_step_is_an_error_naming_layer_and_bits():
    state = _trained_model().state_dict()
    state[f"{LAYER}.weight_log_step.8bit"][3] = float("nan")  # one channel diverged
    other = make_model()
    with pytest.raises(ValueError, match=rf"{LAYER}: the trained 8bit step sizes .* NaN/inf in "
                                         r"1 of 32 output channels \(first: \[3\]\)"):
        other.load_state_dict(state)


def test_nan_in_a_trained_step_at_use_is_an_error():
    model = _trained_model()
    layer = _layer(model)
    with torch.no_grad():
        layer.weight_log_step["4bit"][0] = float("nan")
    layer._steps_checked = set()  # as after any load
    with pytest.raises(FloatingPointError, match=r"encoders.0.feed_forward.w_1: the trained 4bit"):
        layer.step(4)
