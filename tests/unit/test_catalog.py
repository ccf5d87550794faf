"""Catalog and chat settings: good values load; bad ones name the place and the fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from bot.catalog import (
    MAX_PRICE,
    CatalogError,
    ProductSpec,
    parse_products,
    read_catalog_file,
    with_translations,
)
from bot.config import ConfigError, load_config

UNGA = {"sku": "unga", "name": "Unga 2kg", "price": 210, "category": "Staples"}
SUKUMA = {"sku": "sukuma", "name": "Sukuma wiki", "price": 30}

CATALOG_FILE = """
[[products]]
sku = "unga"
name = "Unga 2kg"
price = 210
category = "Staples"
description = "Maize flour"

[[products]]
sku = "sukuma"
name = "Sukuma wiki"
price = 30
"""

TOML_CATALOG = """
[shop]
name = "Test Duka"

[[catalog.products]]
sku = "unga"
name = "Unga 2kg"
price = 210
category = "Staples"
"""

TOKEN = "123456789:AAE-abc_DEF0123456789xyz"


def config_file(tmp_path: Path, text: str = "") -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


# --- parse_products -----------------------------------------------------------------------


def test_a_good_list_becomes_product_specs_in_order() -> None:
    """Every field is read; category and description default to empty; text is trimmed."""
    entries = [
        {**UNGA, "description": " Maize flour "},
        {**SUKUMA, "name": " Sukuma wiki "},
    ]
    assert parse_products(entries, source="catalog.products") == [
        ProductSpec("unga", "Unga 2kg", 210, "Staples", "Maize flour"),
        ProductSpec("sukuma", "Sukuma wiki", 30),
    ]


def test_an_empty_list_is_an_empty_catalog() -> None:
    """No products is allowed (the shop says it has none yet)."""
    assert parse_products([], source="catalog.products") == []


def test_the_highest_price_one_push_can_carry_is_accepted() -> None:
    """Price 250,000 is the STK push maximum and is allowed."""
    [spec] = parse_products([{**UNGA, "price": MAX_PRICE}], source="catalog.products")
    assert spec.price == 250_000


def test_a_duplicate_sku_is_refused_at_its_second_place() -> None:
    """The second product with a taken sku is named, and the fix says to make it unique."""
    with pytest.raises(CatalogError) as caught:
        parse_products([UNGA, SUKUMA, {**SUKUMA, "name": "Other"}], source="catalog.products")
    assert caught.value.key == "catalog.products[3]"
    assert "'sukuma' appears twice" in caught.value.problem
    assert "its own sku" in caught.value.fix


@pytest.mark.parametrize("price", [0, -5, 1.5, "100", True, MAX_PRICE + 1], ids=repr)
def test_a_price_that_is_not_whole_shillings_in_range_is_refused(price: object) -> None:
    """Zero, negative, fractional, text, boolean and over-the-limit prices are refused."""
    with pytest.raises(CatalogError) as caught:
        parse_products([SUKUMA, {**UNGA, "price": price}], source="catalog.products")
    assert caught.value.key == "catalog.products[2]"
    assert f"price of 'unga' is {price!r}" in caught.value.problem
    assert "whole number from 1 to 250,000" in caught.value.fix
    assert "Fix:" in str(caught.value)


@pytest.mark.parametrize("name", [None, "", "   "], ids=["absent", "empty", "blank"])
def test_a_product_without_a_name_is_refused(name: str | None) -> None:
    """A missing or blank name is refused with a fix that shows the key to add."""
    entry: dict[str, Any] = {"sku": "unga", "price": 210}
    if name is not None:
        entry["name"] = name
    with pytest.raises(CatalogError) as caught:
        parse_products([entry], source="catalog.products")
    assert caught.value.key == "catalog.products[1]"
    assert "'unga' has no name" in caught.value.problem
    assert 'name = "..."' in caught.value.fix


def test_an_unknown_key_is_refused_with_the_keys_allowed() -> None:
    """A typo such as ``colour`` is named, and the fix lists the allowed keys."""
    with pytest.raises(CatalogError) as caught:
        parse_products([{**UNGA, "colour": "white"}], source="catalog.products")
    assert caught.value.key == "catalog.products[1]"
    assert "['colour']" in caught.value.problem
    assert "sku, name, price, category, description" in caught.value.fix
    assert "name_sw, category_sw, description_sw" in caught.value.fix
    assert "\n" not in str(caught.value)


# --- Kiswahili ----------------------------------------------------------------------------

UNGA_SW = {
    **UNGA,
    "name_sw": " Unga wa mahindi 2kg ",
    "category_sw": "Vyakula vya msingi",
    "description": "Maize flour",
    "description_sw": "Wa kupika ugali",
}


def test_swahili_texts_are_read_and_shown_only_in_kiswahili() -> None:
    """name_sw, category_sw and description_sw are trimmed and chosen for "sw" only."""
    [spec] = parse_products([UNGA_SW], source="catalog.products")
    assert (spec.name_sw, spec.category_sw, spec.description_sw) == (
        "Unga wa mahindi 2kg",
        "Vyakula vya msingi",
        "Wa kupika ugali",
    )
    assert (spec.name_in("sw"), spec.category_in("sw"), spec.description_in("sw")) == (
        "Unga wa mahindi 2kg",
        "Vyakula vya msingi",
        "Wa kupika ugali",
    )
    assert (spec.name_in("en"), spec.category_in("en"), spec.description_in("en")) == (
        "Unga 2kg",
        "Staples",
        "Maize flour",
    )


def test_without_swahili_texts_kiswahili_customers_see_the_english_ones() -> None:
    """Each Swahili text is optional; a missing one falls back to its English text."""
    [spec] = parse_products([{**UNGA, "name_sw": "Unga wa mahindi"}], source="catalog.products")
    assert (spec.name_in("sw"), spec.category_in("sw"), spec.description_in("sw")) == (
        "Unga wa mahindi",
        "Staples",
        "",
    )


@pytest.mark.parametrize("key", ["name_sw", "category_sw", "description_sw"])
def test_a_swahili_text_that_is_not_text_is_refused(key: str) -> None:
    """A number or list where Swahili text belongs names the key."""
    with pytest.raises(CatalogError) as caught:
        parse_products([{**UNGA, key: 7}], source="catalog.products")
    assert caught.value.problem == f"{key} must be text"


def test_a_swahili_name_over_100_characters_is_refused() -> None:
    """name_sw has the same limit as name."""
    with pytest.raises(CatalogError, match="name_sw of 'unga' is longer than 100"):
        parse_products([{**UNGA, "name_sw": "a" * 101}], source="catalog.products")


def test_a_swahili_category_too_long_for_a_button_is_refused() -> None:
    """category_sw is a button label: the category's limit applies."""
    with pytest.raises(CatalogError, match=r"category_sw .* is too long"):
        parse_products([{**UNGA, "category_sw": "m" * 57}], source="catalog.products")


def test_a_swahili_category_without_a_category_is_refused() -> None:
    """category_sw names a category: without one it would name nothing."""
    with pytest.raises(CatalogError) as caught:
        parse_products([{**SUKUMA, "category_sw": "Mboga"}], source="catalog.products")
    assert "has category_sw but no category" in caught.value.problem


def test_a_category_with_two_swahili_names_is_refused_where_the_second_is() -> None:
    """One category, one Swahili name: given once is enough, given twice it must agree."""
    ok = [
        {**UNGA, "category_sw": "Vyakula vya msingi"},
        {**UNGA, "sku": "mchele", "name": "Rice"},
        {**UNGA, "sku": "sukari", "name": "Sugar", "category_sw": "Vyakula vya msingi"},
    ]
    assert len(parse_products(ok, source="catalog.products")) == 3
    clash = [*ok, {**UNGA, "sku": "chai", "name": "Tea", "category_sw": "Nafaka"}]
    with pytest.raises(CatalogError) as caught:
        parse_products(clash, source="catalog.products")
    assert caught.value.key == "catalog.products[4]"
    assert "'Vyakula vya msingi'" in caught.value.problem
    assert "'Nafaka'" in caught.value.problem


def test_products_read_back_from_the_database_get_their_swahili_texts() -> None:
    """The table keeps English only: the configured catalog adds the Swahili by sku."""
    [configured] = parse_products([UNGA_SW], source="catalog.products")
    stored = ProductSpec("unga", "Unga 2kg", 210, "Staples", "Maize flour")
    other = ProductSpec("chai", "Tea", 90)
    assert with_translations([stored, other], [configured]) == [configured, other]


def test_a_swahili_text_is_dropped_when_its_english_one_changed() -> None:
    """Another process synced a renamed product: its old translation no longer fits."""
    [configured] = parse_products([UNGA_SW], source="catalog.products")
    stored = ProductSpec("unga", "Unga 1kg", 120, "Staples", "Maize flour")
    [found] = with_translations([stored], [configured])
    assert (found.name_in("sw"), found.category_in("sw"), found.description_in("sw")) == (
        "Unga 1kg",
        "Vyakula vya msingi",
        "Wa kupika ugali",
    )


@pytest.mark.parametrize(
    "sku", [None, "", "a" * 33, "add:unga", 7], ids=["absent", "empty", "long", "colon", "int"]
)
def test_an_unusable_sku_is_refused(sku: object) -> None:
    """Missing, empty, too long (over 32), with a colon (button separator) or not text."""
    entry: dict[str, Any] = {"name": "Unga", "price": 210}
    if sku is not None:
        entry["sku"] = sku
    with pytest.raises(CatalogError) as caught:
        parse_products([entry], source="catalog.products")
    assert caught.value.key == "catalog.products[1]"
    assert "is not usable" in caught.value.problem


def test_a_non_list_or_non_table_is_refused() -> None:
    """``products`` must be a list of tables."""
    with pytest.raises(CatalogError, match="list of tables"):
        parse_products({"sku": "unga"}, source="catalog.products")
    with pytest.raises(CatalogError, match="is not a table"):
        parse_products(["unga"], source="catalog.products")


# --- read_catalog_file --------------------------------------------------------------------


def test_a_catalog_file_with_products_tables_is_read(tmp_path: Path) -> None:
    """A ``[[products]]`` file gives the specs in file order."""
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG_FILE)
    assert read_catalog_file(path) == [
        ProductSpec("unga", "Unga 2kg", 210, "Staples", "Maize flour"),
        ProductSpec("sukuma", "Sukuma wiki", 30),
    ]


def test_a_missing_catalog_file_names_duka_catalog(tmp_path: Path) -> None:
    """A path to nothing is blamed on DUKA_CATALOG and names the path."""
    path = tmp_path / "nowhere.toml"
    with pytest.raises(CatalogError) as caught:
        read_catalog_file(path)
    assert caught.value.key == "DUKA_CATALOG"
    assert str(path) in caught.value.problem
    assert "TOML file" in caught.value.fix


def test_a_catalog_file_with_bad_toml_names_the_file(tmp_path: Path) -> None:
    """A syntax error names the file and asks for the syntax to be corrected."""
    path = tmp_path / "catalog.toml"
    path.write_text('[[products]]\nsku = "unga\n')
    with pytest.raises(CatalogError) as caught:
        read_catalog_file(path)
    assert caught.value.key == str(path)
    assert "not valid TOML" in caught.value.problem
    assert "correct the syntax" in caught.value.fix


def test_a_catalog_file_with_another_table_is_refused(tmp_path: Path) -> None:
    """``[[product]]`` (singular) is a typo, not an empty catalog."""
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG_FILE.replace("[[products]]", "[[product]]"))
    with pytest.raises(CatalogError) as caught:
        read_catalog_file(path)
    assert "['product']" in caught.value.problem
    assert "[[products]]" in caught.value.fix


def test_a_bad_product_in_a_file_is_located_in_that_file(tmp_path: Path) -> None:
    """The error names the file and the product's position."""
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG_FILE.replace("price = 30", "price = 0"))
    with pytest.raises(CatalogError) as caught:
        read_catalog_file(path)
    assert caught.value.key == f"{path}: products[2]"


# --- load_config: catalog -----------------------------------------------------------------


def test_duka_catalog_points_the_config_at_a_catalog_file(tmp_path: Path) -> None:
    """With DUKA_CATALOG set, the products come from that file."""
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(CATALOG_FILE)
    config = load_config(env={"DUKA_CATALOG": str(catalog)}, path=config_file(tmp_path))
    assert [p.sku for p in config.catalog] == ["unga", "sukuma"]
    assert config.catalog[0] == ProductSpec("unga", "Unga 2kg", 210, "Staples", "Maize flour")


def test_catalog_products_in_the_config_file_are_loaded(tmp_path: Path) -> None:
    """``[[catalog.products]]`` in config.toml gives the catalog."""
    config = load_config(env={}, path=config_file(tmp_path, TOML_CATALOG))
    assert config.catalog == (ProductSpec("unga", "Unga 2kg", 210, "Staples"),)


def test_swahili_texts_in_the_config_file_are_loaded(tmp_path: Path) -> None:
    """[shop] name_sw and a product's Swahili texts come through load_config."""
    text = TOML_CATALOG.replace(
        'name = "Test Duka"', 'name = "Test Duka"\nname_sw = " Duka la Majaribio "'
    ).replace('name = "Unga 2kg"', 'name = "Unga 2kg"\nname_sw = "Unga wa mahindi 2kg"')
    config = load_config(env={}, path=config_file(tmp_path, text))
    assert config.shop_name_sw == "Duka la Majaribio"
    assert config.catalog[0].name_in("sw") == "Unga wa mahindi 2kg"


def test_without_a_swahili_shop_name_there_is_none(tmp_path: Path) -> None:
    """[shop] name_sw is optional: absent, the shop's name is used in both languages."""
    assert load_config(env={}, path=config_file(tmp_path, TOML_CATALOG)).shop_name_sw == ""


def test_an_empty_swahili_shop_name_stops_start_up(tmp_path: Path) -> None:
    """Written but empty is a mistake, named with its key."""
    text = TOML_CATALOG.replace('name = "Test Duka"', 'name = "Test Duka"\nname_sw = " "')
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, path=config_file(tmp_path, text))
    assert caught.value.key == "shop.name_sw"


def test_no_catalog_anywhere_is_an_empty_catalog(tmp_path: Path) -> None:
    """Neither the file nor DUKA_CATALOG lists products: the catalog is empty."""
    assert load_config(env={}, path=config_file(tmp_path)).catalog == ()


def test_a_bad_product_in_the_config_file_stops_start_up_naming_the_key(tmp_path: Path) -> None:
    """A ConfigError names ``catalog.products[1]`` and carries the fix."""
    path = config_file(tmp_path, TOML_CATALOG.replace("price = 210", 'price = "210"'))
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, path=path)
    assert caught.value.key == "catalog.products[1]"
    assert "Configuration error in catalog.products[1]" in str(caught.value)
    assert "whole number from 1 to 250,000" in str(caught.value)


def test_an_unknown_key_under_catalog_stops_start_up(tmp_path: Path) -> None:
    """``[catalog]`` only knows ``products``."""
    with pytest.raises(ConfigError) as caught:
        load_config(env={}, path=config_file(tmp_path, "[catalog]\nitems = []\n"))
    assert caught.value.key == "catalog.items"


def test_a_missing_duka_catalog_file_stops_start_up(tmp_path: Path) -> None:
    """DUKA_CATALOG pointing at nothing is a ConfigError naming DUKA_CATALOG."""
    env = {"DUKA_CATALOG": str(tmp_path / "nowhere.toml")}
    with pytest.raises(ConfigError) as caught:
        load_config(env=env, path=config_file(tmp_path))
    assert caught.value.key == "DUKA_CATALOG"


# --- load_config: merchants and Telegram --------------------------------------------------


def test_merchant_ids_from_the_environment_are_split_on_commas(tmp_path: Path) -> None:
    """``"1, 2"`` gives (1, 2); spaces and empty parts are ignored."""
    env = {"DUKA_MERCHANT_TELEGRAM_IDS": "1, 2,"}
    assert load_config(env=env, path=config_file(tmp_path)).merchant_telegram_ids == (1, 2)


def test_merchant_ids_from_the_config_file(tmp_path: Path) -> None:
    """``[merchant] telegram_ids`` is used when the environment does not set them."""
    path = config_file(tmp_path, "[merchant]\ntelegram_ids = [11, 22]\n")
    assert load_config(env={}, path=path).merchant_telegram_ids == (11, 22)


def test_a_non_numeric_merchant_id_stops_start_up(tmp_path: Path) -> None:
    """``"x"`` is a ConfigError naming DUKA_MERCHANT_TELEGRAM_IDS."""
    with pytest.raises(ConfigError) as caught:
        load_config(env={"DUKA_MERCHANT_TELEGRAM_IDS": "x"}, path=config_file(tmp_path))
    assert caught.value.key == "DUKA_MERCHANT_TELEGRAM_IDS"
    assert "12345678,87654321" in str(caught.value)


def test_without_a_bot_token_telegram_is_off(tmp_path: Path) -> None:
    """No TELEGRAM_BOT_TOKEN: no Telegram settings."""
    assert load_config(env={}, path=config_file(tmp_path)).telegram is None


@pytest.mark.parametrize("token", ["not-a-token", "123456", ":abc", "12345:abc def", "abc:123"])
def test_a_malformed_bot_token_stops_start_up(tmp_path: Path, token: str) -> None:
    """A value that is not ``<digits>:<letters>`` is refused, pointing at @BotFather."""
    with pytest.raises(ConfigError) as caught:
        load_config(env={"TELEGRAM_BOT_TOKEN": token}, path=config_file(tmp_path))
    assert caught.value.key == "TELEGRAM_BOT_TOKEN"
    assert "@BotFather" in str(caught.value)
    assert token not in str(caught.value)  # a token is a secret: never echoed


def test_a_valid_bot_token_gives_telegram_settings_with_a_generated_secret(
    tmp_path: Path,
) -> None:
    """Polling by default, and a fresh webhook secret of characters Telegram allows."""
    path = config_file(tmp_path)
    telegram = load_config(env={"TELEGRAM_BOT_TOKEN": TOKEN}, path=path).telegram
    assert telegram is not None
    assert telegram.token == TOKEN
    assert (telegram.api_base_url, telegram.webhook_url) == ("", "")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,256}", telegram.webhook_secret)
    again = load_config(env={"TELEGRAM_BOT_TOKEN": TOKEN}, path=path).telegram
    assert again is not None
    assert again.webhook_secret != telegram.webhook_secret
    assert TOKEN not in repr(telegram)


def test_a_webhook_secret_with_forbidden_characters_stops_start_up(tmp_path: Path) -> None:
    """TELEGRAM_WEBHOOK_SECRET may only use A-Z a-z 0-9 _ -."""
    env = {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": "not/allowed!"}
    with pytest.raises(ConfigError) as caught:
        load_config(env=env, path=config_file(tmp_path))
    assert caught.value.key == "TELEGRAM_WEBHOOK_SECRET"


def test_telegram_api_base_url_and_webhook_url_are_read(tmp_path: Path) -> None:
    """The Bot API base URL loses its trailing slash; the webhook path is derived."""
    env = {
        "TELEGRAM_BOT_TOKEN": TOKEN,
        "TELEGRAM_API_BASE_URL": "http://127.0.0.1:8081/",
        "TELEGRAM_WEBHOOK_URL": "https://shop.example.com/telegram/hook",
        "TELEGRAM_WEBHOOK_SECRET": "s3cret_-value",
    }
    telegram = load_config(env=env, path=config_file(tmp_path)).telegram
    assert telegram is not None
    assert telegram.api_base_url == "http://127.0.0.1:8081"
    assert telegram.webhook_path == "/telegram/hook"
    assert telegram.webhook_secret == "s3cret_-value"
