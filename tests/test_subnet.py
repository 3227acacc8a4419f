import random

import pytest

from espnet_allinone.subnet import SubnetSpace, SubnetSpec


@pytest.mark.parametrize(
    "name, spec",
    [
        ("12-1024-4bit", SubnetSpec(12, 1024, 4)),
        ("8-2048-32bit", SubnetSpec(8, 2048, 32)),
        (" 11-2560-6bit ", SubnetSpec(11, 2560, 6)),
        ("1-1-2bit", SubnetSpec(1, 1, 2)),
    ],
)
def test_parse_and_format_round_trip(name, spec):
    assert SubnetSpec.parse(name) == spec
    assert SubnetSpec.parse(spec.name) == spec
    assert str(spec) == name.strip()
    assert spec.quantized == (spec.bits != 32)


@pytest.mark.parametrize(
    "bad", ["12-1024", "12x1024x4bit", "12-1024-4", "a-b-4bit", "12-1024-4bits", "", "0-10-4bit"]
)
def test_malformed_names_raise(bad):
    with pytest.raises(ValueError):
        SubnetSpec.parse(bad)


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 31, 33])
def test_unsupported_bits_raise(bits):
    with pytest.raises(ValueError, match="bit-width"):
        SubnetSpec(12, 1024, bits)


def test_grid_space_order_largest_smallest():
    space = SubnetSpace(depths=[8, 12], widths=[1024, 2048], bits=[4, 8])
    assert len(space) == 8
    assert space.largest == SubnetSpec(12, 2048, 8)
    assert space.smallest == SubnetSpec(8, 1024, 4)
    assert space.names[0] == "12-2048-8bit"
    assert "8-1024-4bit" in space and "8-1024-32bit" not in space


def test_grid_defaults_from_encoder_size():
    space = SubnetSpace(bits=[4, 32], num_blocks=6, linear_units=256)
    assert space.names == ["6-256-32bit", "6-256-4bit"]


def test_explicit_list_and_validation_messages():
    space = SubnetSpace(["12-2048-8bit", "8-1024-4bit"], num_blocks=12, linear_units=2048)
    assert space.get(None) == SubnetSpec(12, 2048, 8)
    assert space.get("8-1024-4bit") == SubnetSpec(8, 1024, 4)
    with pytest.raises(ValueError, match="valid subnets: 12-2048-8bit, 8-1024-4bit"):
        space.get("8-2048-4bit")
    with pytest.raises(ValueError, match="valid subnets: 12-2048-8bit, 8-1024-4bit"):
        space.get("eight-layers")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(depths=[8, 13]), "deeper"),
        (dict(widths=[4096]), "wider"),
        (dict(bits=[1]), "bit-width"),
        (dict(subnets=["12-2048-8bit", "8-2048-32bit"]), "largest subnet 12-2048-32bit"),
        (dict(subnets=["12-2048-8bit"], depths=[8]), "either"),
        (dict(subnets=[]), "at least one"),
    ],
)
def test_bad_spaces_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SubnetSpace(num_blocks=12, linear_units=2048, **kwargs)


def test_sandwich_sampling_rule():
    space = SubnetSpace(depths=[8, 12], widths=[1024, 2048], bits=[4, 8])
    rng = random.Random(0)
    seen = set()
    for _ in range(200):
        chosen = space.sample("sandwich", 1, rng)
        assert len(chosen) == 3 and len(set(chosen)) == 3
        assert chosen[0] == space.largest and chosen[1] == space.smallest
        seen.add(chosen[2])
    # the random member covers every other subnet
    assert seen == set(space) - {space.largest, space.smallest}
    assert len(space.sample("sandwich", 2, rng)) == 4
    assert space.sample("all") == list(space)
    with pytest.raises(ValueError):
        space.sample("random")



@pytest.mark.parametrize("num_random", [0, 1, 2, 9])
def test_sandwich_draws_are_what_sampling_can_return(num_random):
    space = SubnetSpace(depths=[8, 12], widths=[1024, 2048], bits=[4, 8])
    draws = space.sandwich_draws(num_random)
    rng = random.Random(0)
    sampled = {frozenset(space.sample("sandwich", num_random, rng)) for _ in range(300)}
    assert sampled == {frozenset(d) for d in draws}
    assert len(draws) == len({frozenset(d) for d in draws})  # each draw once
    assert all(d[:2] == [space.largest, space.smallest] for d in draws)
    assert SubnetSpace(["6-256-32bit"]).sandwich_draws(num_random) == [[SubnetSpec.parse("6-256-32bit")]]

def test_sampling_single_subnet_space():
    space = SubnetSpace(["6-256-32bit"])
    assert space.sample("sandwich", 1) == [space.largest]


def test_attributes_compressed():
    space = SubnetSpace(depths=[8, 12], widths=[1024, 2048], bits=[4, 8])
    assert list(space.attributes_compressed(SubnetSpec(12, 2048, 8))) == []
    assert list(space.attributes_compressed(SubnetSpec(8, 2048, 4))) == ["depth", "bits"]


@pytest.mark.parametrize(
    "kwargs,want",
    [
        (dict(depths=[8, 12], widths=[1024, 2048], bits=[4, 8]), "12-2048-32bit"),
        (dict(depths=[4, 6], widths=[288, 576], bits=[32]), "6-576-32bit"),
    ],
)
def test_float_baseline_is_the_largest_shape_at_32_bits(kwargs, want):
    space = SubnetSpace(**kwargs)
    assert space.float_baseline == SubnetSpec.parse(want)
