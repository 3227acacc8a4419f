import random

import pytest

from espnet_allinone.subnet import Subnet, SubnetSpace


@pytest.mark.parametrize(
    "name, spec",
    [
        ("12-1024-4bit", Subnet.uniform(12, 1024, 4)),
        ("8-2048-32bit", Subnet.uniform(8, 2048, 32)),
        (" 11-2560-6bit ", Subnet.uniform(11, 2560, 6)),
        ("1-1-2bit", Subnet.uniform(1, 1, 2)),
    ],
)
def test_parse_and_format_round_trip(name, spec):
    assert Subnet.parse(name) == spec
    assert Subnet.parse(spec.name) == spec
    assert str(spec) == name.strip()
    assert spec.quantized == (spec.bits != 32)


@pytest.mark.parametrize(
    "bad", ["12-1024", "12x1024x4bit", "12-1024-4", "a-b-4bit", "12-1024-4bits", "", "0-10-4bit"]
)
def test_malformed_names_raise(bad):
    with pytest.raises(ValueError):
        Subnet.parse(bad)


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 31, 33])
def test_unsupported_bits_raise(bits):
    with pytest.raises(ValueError, match="bit-width"):
        Subnet.uniform(12, 1024, bits)


def test_grid_space_order_largest_smallest():
    space = SubnetSpace(depths=[8, 12], widths=[1024, 2048], bits=[4, 8])
    assert len(space) == 8
    assert space.largest == Subnet.uniform(12, 2048, 8)
    assert space.smallest == Subnet.uniform(8, 1024, 4)
    assert space.names[0] == "12-2048-8bit"
    assert "8-1024-4bit" in space and "8-1024-32bit" not in space


def test_grid_defaults_from_encoder_size():
    space = SubnetSpace(bits=[4, 32], num_blocks=6, linear_units=256)
    assert space.names == ["6-256-32bit", "6-256-4bit"]


def test_explicit_list_and_validation_messages():
    space = SubnetSpace(["12-2048-8bit", "8-1024-4bit"], num_blocks=12, linear_units=2048)
    assert space.get(None) == Subnet.uniform(12, 2048, 8)
    assert space.get("8-1024-4bit") == Subnet.uniform(8, 1024, 4)
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
    assert SubnetSpace(["6-256-32bit"]).sandwich_draws(num_random) == [[Subnet.parse("6-256-32bit")]]

def test_sampling_single_subnet_space():
    space = SubnetSpace(["6-256-32bit"])
    assert space.sample("sandwich", 1) == [space.largest]


def test_attributes_compressed():
    space = SubnetSpace(depths=[8, 12], widths=[1024, 2048], bits=[4, 8])
    assert list(space.attributes_compressed(Subnet.uniform(12, 2048, 8))) == []
    assert list(space.attributes_compressed(Subnet.uniform(8, 2048, 4))) == ["depth", "bits"]


@pytest.mark.parametrize(
    "kwargs,want",
    [
        (dict(depths=[8, 12], widths=[1024, 2048], bits=[4, 8]), "12-2048-32bit"),
        (dict(depths=[4, 6], widths=[288, 576], bits=[32]), "6-576-32bit"),
    ],
)
def test_float_baseline_is_the_largest_shape_at_32_bits(kwargs, want):
    space = SubnetSpace(**kwargs)
    assert space.float_baseline == Subnet.parse(want)


def test_one_subnet_type_uniform_is_a_constructor_and_a_property():
    uniform = Subnet.uniform(6, 576, 8)
    assert uniform.is_uniform and uniform.blocks == ((576, 8),) * 6
    assert Subnet.parse("6:576x8*6") == uniform and Subnet.parse("6:576x8*6").name == "6-576-8bit"
    mixed = Subnet.parse("6:576x8,576x8,288x4*4")
    assert not mixed.is_uniform and (mixed.depth, mixed.width, mixed.bits, mixed.front_bits) == (6, 576, 8, 8)
    assert mixed.name == "6:576x8*2,288x4*4" and Subnet.parse(mixed.name) == mixed
    # ordered by (depth, width, bits), then blocks
    assert sorted([mixed, Subnet.uniform(6, 288, 4), Subnet.uniform(4, 576, 8)]) == [
        Subnet.uniform(4, 576, 8), Subnet.uniform(6, 288, 4), mixed]


def test_space_names_are_uniform_and_get_checks_names_strictly():
    with pytest.raises(ValueError, match="holds uniform subnets"):
        SubnetSpace(["6-576-8bit", "6:576x8,288x4*5"])
    space = SubnetSpace(["6-576-8bit", "4-288-4bit"], num_blocks=6, linear_units=576)
    with pytest.raises(ValueError, match="not in this model's subnet space"):
        space.get("6-288-4bit")  # a uniform name must be one of the space
    assert space.get("6:288x4*6") == Subnet.uniform(6, 288, 4)  # a layer-wise name that fits
    assert space.get(Subnet.uniform(6, 288, 4)) == Subnet.uniform(6, 288, 4)  # so does a Subnet
    with pytest.raises(ValueError, match=r"does not fit this model: depth 7 > num_blocks 6"):
        space.get("7:288x4*7")
