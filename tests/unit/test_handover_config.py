"""``[shop]`` delivery and pickup settings: read into ``HandoverOptions``, and every wrong
value refused in one line that names the key and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.config import ConfigError, load_config
from bot.handover import Handover, HandoverOptions, Zone

BOTH = """
[shop]
name = "Mama Njeri"
fulfilment = ["pickup", "delivery"]
pickup_point = "Shop 12, Kenyatta Market"
pickup_hours = "8:00-19:00"
[[shop.delivery_zones]]
name = "CBD"
fee = 100
[[shop.delivery_zones]]
name = "Estate"
fee = 0
"""


def load(tmp_path: Path, toml: str) -> HandoverOptions:
    path = tmp_path / "config.toml"
    path.write_text(toml)
    return load_config(env={}, path=path, with_catalog=False).handover


def test_both_ways_with_zones_are_read(tmp_path: Path) -> None:
    assert load(tmp_path, BOTH) == HandoverOptions(
        (Handover.PICKUP, Handover.DELIVERY),
        "Shop 12, Kenyatta Market",
        "8:00-19:00",
        (Zone("CBD", 100), Zone("Estate", 0)),
    )


def test_without_settings_checkout_asks_nothing(tmp_path: Path) -> None:
    assert not load(tmp_path, '[shop]\nname = "Mama Njeri"\n').asks


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('fulfilment = ["post"]', "shop.fulfilment"),
        ('fulfilment = ["pickup", "pickup"]\npickup_point = "Shop"', "shop.fulfilment"),
        ('fulfilment = "pickup"\npickup_point = "Shop"', None),  # one way, written bare
        ('fulfilment = ["pickup"]', "shop.pickup_point"),
        ('fulfilment = ["delivery"]', "shop.delivery_zones"),
        (
            'fulfilment = ["delivery"]\n[[shop.delivery_zones]]\nname = "CBD"\nfee = 99.5',
            "shop.delivery_zones[1].fee",
        ),
        (
            'fulfilment = ["delivery"]\n[[shop.delivery_zones]]\nname = "CBD"\nfee = -1',
            "shop.delivery_zones[1].fee",
        ),
        (
            'fulfilment = ["delivery"]\n[[shop.delivery_zones]]\nname = "CBD"',
            "shop.delivery_zones[1]",
        ),
        (
            'fulfilment = ["delivery"]\n[[shop.delivery_zones]]\nname = "Nairobi Central Business"'
            "\nfee = 100",
            "shop.delivery_zones[1].name",
        ),
        (
            '[[shop.delivery_zones]]\nname = "CBD"\nfee = 1\n[[shop.delivery_zones]]\n'
            'name = "CBD"\nfee = 2',
            "shop.delivery_zones[2].name",
        ),
    ],
)
def test_a_wrong_value_names_its_key(tmp_path: Path, toml: str, key: str | None) -> None:
    text = f'[shop]\nname = "Mama Njeri"\n{toml}\n'
    if key is None:
        assert load(tmp_path, text).offers == (Handover.PICKUP,)
        return
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text)
    assert caught.value.key == key
    assert "\n" not in str(caught.value)
