"""Reading what a customer typed: a quantity, an order of one product, or a search."""

from __future__ import annotations

import pytest

from bot.catalog import ProductSpec
from bot.chat.typed import (
    MAX_RESULTS,
    Typed,
    TypedOrder,
    TypedQuantity,
    TypedSearch,
    read_typed,
)

UNGA = ProductSpec("unga-2kg", "Unga 2kg", 210, "Staples", name_sw="Unga wa ngano")
SUKARI = ProductSpec("sukari", "Sukari 1kg", 180, "Staples", name_sw="Sukari 1kg")
BROWN = ProductSpec("sukari-brown", "Sukari brown 1kg", 220, "Staples")
MAZIWA = ProductSpec(
    "milk", "Milk 500ml", 60, "Dairy", name_sw="Maziwa 500ml", category_sw="Maziwa na mayai"
)
MKATE = ProductSpec("mkate", "Mkate", 65, "Bakery", name_sw="Mkate")
# Named "Sugar" only by its category: ranks after the products named sugar.
SWEETS = ProductSpec("pipi", "Pipi", 10, "Sugar & sweets", category_sw="Peremende")
SUGAR = ProductSpec("sugar", "Sugar 2kg", 350, "Staples", name_sw="Sukari 2kg")
CATALOG = [UNGA, SUKARI, BROWN, MAZIWA, MKATE]


def read(text: str) -> Typed | None:
    return read_typed(text, CATALOG)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", TypedQuantity(3)),
        (" 12 ", TypedQuantity(12)),
        ("007", TypedQuantity(7)),
        ("999", TypedQuantity(999)),
        ("1", TypedQuantity(1)),
        ("3.", TypedQuantity(3)),  # punctuation around a number is ignored
        ("2x", TypedQuantity(2)),
        ("x 4", TypedQuantity(4)),
        ("nipe 3", TypedQuantity(3)),  # "give me 3": filler around a number
    ],
)
def test_a_number_alone_is_a_quantity(text: str, expected: Typed) -> None:
    assert read(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "0",
        "1000",
        "99999999999999999999",
        "²",  # str.isdigit says yes; int() would too, via NFKD: only ASCII digits count
        "³ ",
        "３",  # fullwidth
        "٣",  # Arabic-Indic
        "½",
        "0 maziwa",
        "1000 maziwa",
        "maziwa x0",
    ],
)
def test_numbers_out_of_range_or_not_ascii_are_not_read(text: str) -> None:
    assert read(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "\n\t",
        "?!",
        "...",
        "👍",
        "x",
        "×",
        "na",  # filler alone asks nothing
        "Nataka, please",
        "I want",
        "a",
        "maziwa " * 10,  # 70 characters: a message to the shop, not a search
    ],
)
def test_text_without_a_quantity_or_words_is_not_read(text: str) -> None:
    assert read(text) is None


@pytest.mark.parametrize(
    "text",
    [
        "2 maziwa",
        "maziwa 2",
        "2x maziwa",
        "2 x Maziwa",
        "2X MAZIWA",
        "maziwa x2",
        "maziwa x 2",
        "maziwa 2x",
        "2×maziwa",
        "maziwa × 2",
        "2 milk",  # the English name
        "2, maziwa!",
        "nataka 2 maziwa",  # filler before the number
        "I want 2 maziwa please",
        "naomba maziwa 2",
        "2 mazi",  # a prefix of 3 letters or more
        "2 maziwa 500ml",
        "2 maziwa 500 ml",  # "500" and "ml" match the runs of "500ml"
        "2 Mazíwa",  # accents ignored
    ],
)
def test_a_number_with_words_of_one_product_is_an_order(text: str) -> None:
    assert read(text) == TypedOrder("milk", 2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unga 5", TypedOrder("unga-2kg", 5)),
        ("unga 2kg x3", TypedOrder("unga-2kg", 3)),
        ("unga 2 kg 3", TypedOrder("unga-2kg", 3)),
        ("3 unga wa ngano", TypedOrder("unga-2kg", 3)),  # the Kiswahili name
        ("mkate 999", TypedOrder("mkate", 999)),  # the caller caps to what a cart allows
        ("2 sukari brown", TypedOrder("sukari-brown", 2)),
        ("2 sukari 1kg brown", TypedOrder("sukari-brown", 2)),  # words in any order
    ],
)
def test_orders_of_other_products(text: str, expected: Typed) -> None:
    assert read(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("maziwa", TypedSearch(("milk",))),  # one match, no number: a button, not a cart
        ("Milk", TypedSearch(("milk",))),
        ("MAZIWA!", TypedSearch(("milk",))),
        ("maz", TypedSearch(("milk",))),
        ("mkate brown", TypedSearch(())),  # every word must match, in one product
        ("mkate tafadhali", TypedSearch(("mkate",))),  # "please" in Kiswahili
        ("sukari", TypedSearch(("sukari", "sukari-brown"))),
        ("suk", TypedSearch(("sukari", "sukari-brown"))),
        ("SUKARI 1kg", TypedSearch(("sukari", "sukari-brown"))),
        ("sukari brown", TypedSearch(("sukari-brown",))),
        ("2 sukari", TypedSearch(("sukari", "sukari-brown"), 2)),
        ("sukari x3", TypedSearch(("sukari", "sukari-brown"), 3)),
        ("staples", TypedSearch(("unga-2kg", "sukari", "sukari-brown"))),  # category
        ("dairy", TypedSearch(("milk",))),
        ("mayai", TypedSearch(("milk",))),  # the Kiswahili category
        ("sukari-brown", TypedSearch(("sukari-brown",))),  # the sku
        ("1kg", TypedSearch(("sukari", "sukari-brown"))),
        ("maziwa 500", TypedSearch(("milk",))),  # 500 of "500ml", not 500 bottles
        ("500 maziwa", TypedSearch(("milk",))),
        ("unga 2 kg", TypedSearch(("unga-2kg",))),
        ("2kg unga", TypedSearch(("unga-2kg",))),  # "2kg" is a word, not "2 x kg"
        ("² maziwa", TypedSearch(("milk",))),  # "²" is no number: dropped like punctuation
        ("nyama", TypedSearch(())),  # no match
        ("2 nyama", TypedSearch((), 2)),
        ("su", TypedSearch(())),  # 2 letters must match a whole word
        ("wa", TypedSearch(("unga-2kg",))),  # ... and do: "Unga wa ngano"
        ("ngano unga", TypedSearch(("unga-2kg",))),
        ("3.5", TypedSearch(())),  # a decimal is no quantity; no product has it
        ("-3", TypedSearch(())),  # nor is a negative number: nothing goes in a cart
        ("maziwa 100", TypedOrder("milk", 100)),  # a long number that matches nothing
    ],
)
def test_words_search_the_catalog(text: str, expected: Typed) -> None:
    assert read(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Named sugar (in either language) before sugar only by category; then catalog order.
        ("sugar", TypedSearch(("sugar", "pipi"))),
        ("sukari", TypedSearch(("sukari", "sugar"))),
        ("sweets", TypedSearch(("pipi",))),
        ("peremende", TypedSearch(("pipi",))),
        ("2 sweets", TypedOrder("pipi", 2)),
    ],
)
def test_name_matches_rank_before_category_matches(text: str, expected: Typed) -> None:
    assert read_typed(text, [SWEETS, SUKARI, SUGAR]) == expected


def test_a_search_shows_at_most_max_results_best_first() -> None:
    """Twelve sugars: the first eight by catalog order, the number kept."""
    sugars = [ProductSpec(f"s{i}", f"Sukari {i}", 100 + i, "Staples") for i in range(12)]
    by_category = ProductSpec("jam", "Jam", 90, "Sukari")  # first in the catalog, last here
    found = read_typed("2 sukari", [by_category, *sugars])
    assert found == TypedSearch(tuple(f"s{i}" for i in range(MAX_RESULTS)), 2)


def test_an_empty_catalog_finds_nothing() -> None:
    assert read_typed("2 maziwa", []) == TypedSearch((), 2)
    assert read_typed("3", []) == TypedQuantity(3)


def test_sixty_characters_are_still_a_search() -> None:
    text = "maziwa" + " " * 54
    assert read(text) == TypedSearch(("milk",))  # stripped first
    assert read("maziwa" + " na" * 18) == TypedSearch(("milk",))  # 60 characters
    assert read("maziwa" + " na" * 18 + "!") is None  # 61
