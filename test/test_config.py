"""The shared strict-config loader: every config refuses unknown keys and wrong scalar types alike."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from mtl_perception.config import ConfigError, from_dict, is_float_text
from mtl_perception.data.augment import AugmentConfig
from mtl_perception.networks.config import model_config_from_dict
from mtl_perception.training.config import train_config_from_dict


@dataclass
class Example:
    rate: float = 1.0
    count: int = 1
    enabled: bool = True
    name: str = "a"
    limit: int | None = None
    size: tuple[int, int] = (2, 3)
    tags: tuple[str, ...] = ()


def test_matching_types_load_and_ints_are_fine_floats() -> None:
    config = from_dict(
        Example, {"rate": 2, "count": 3, "enabled": False, "limit": None, "size": [4, 5], "tags": ["x"]}
    )
    assert config == Example(rate=2.0, count=3, enabled=False, size=(4, 5), tags=("x",))
    assert isinstance(config.rate, float)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"rate": "fast"}, "Example: rate: expected float, got 'fast'"),
        ({"count": True}, "count: expected int, got True"),  # bool is an int subclass
        ({"count": 1.5}, "count: expected int, got 1.5"),
        ({"enabled": 1}, "enabled: expected bool"),
        ({"name": 3}, "name: expected str"),
        ({"limit": "many"}, "limit: expected int or null"),
        ({"rate": None}, "rate: expected float, got None"),
        ({"size": 4}, "size: expected a list, got 4"),
        ({"size": [4]}, "size: expected 2 values"),
        ({"size": [4, "5"]}, "size: item 1: expected int"),
        ({"tags": ["x", 2]}, "tags: item 1: expected str"),
    ],
)
def test_wrong_types_are_named(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        from_dict(Example, data)
    assert message in str(info.value)


def test_float_written_without_a_dot_gets_the_yaml_hint() -> None:
    assert is_float_text("1e-3") and is_float_text(" -2E+4 ") and not is_float_text("1.0e-3")
    with pytest.raises(ConfigError, match=r"write 1\.0e-3"):
        from_dict(Example, {"rate": "1e-3"})
    with pytest.raises(ConfigError, match=r"item 0: .*write 1\.0e-3"):
        from_dict(AugmentConfig, {"zoom_range": ["1e-1", 1.0]})


def test_every_strict_config_checks_types_the_same_way() -> None:
    with pytest.raises(ConfigError, match=r"config\.optim: lr: expected float, got 'fast'"):
        train_config_from_dict({"optim": {"lr": "fast"}})
    with pytest.raises(ConfigError, match=r"config\.data\.augmentation: hue: expected float, got 'fast'"):
        train_config_from_dict({"data": {"augmentation": {"hue": "fast"}}})
    with pytest.raises(ConfigError, match="model: decoder_channels: expected int, got 'fast'"):
        model_config_from_dict({"decoder_channels": "fast"})
    with pytest.raises(ConfigError, match=r"embedding_grid \[2, 5\] needs a cell per 1/32 feature"):
        model_config_from_dict({"embedding_grid": [2, 5], "input_size": [64, 128]})
    with pytest.raises(ConfigError, match=r"model: input_size: item 0: expected int, got 256\.5"):
        model_config_from_dict({"mode": "mono", "input_size": [256.5, 512]})
    with pytest.raises(ConfigError, match="augmentation: crop_size: expected 2 values"):
        from_dict(AugmentConfig, {"crop_size": [64, 64, 3]}, "augmentation")


def test_range_checks_still_run_after_the_type_check() -> None:
    with pytest.raises(ConfigError, match="batch_size must be >= 1"):
        train_config_from_dict({"data": {"batch_size": 0}})
    with pytest.raises(ConfigError, match="hue must be in"):
        from_dict(AugmentConfig, {"hue": 0.9})


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"procedural_share": 1.0}, "procedural_share must be in"),
        ({"procedural_val_pairs": 0}, "procedural_val_pairs must be >= 1"),
        ({"semantic_label_share": 1.5}, "semantic_label_share must be in"),
        ({"pseudo_label_teacher": "t.pt"}, "pseudo_label_teacher needs pseudo_labels"),
        ({"mix_root": "data/flying"}, "mix_root and mix_share > 0 go together"),
        ({"mix_root": "data/flying", "mix_share": 0.5, "procedural_share": 0.5}, "leave room"),
    ],
)
def test_every_data_range_check_runs(data: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        train_config_from_dict({"data": data})
