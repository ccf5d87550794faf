"""What a customer typed into the shop chat, read as a quantity, an order or a search.

Buttons are the main way through the shop, but many customers type instead: "3" on a
product screen, "2 maziwa", "maziwa x2", or just "sukari" to find something. This module
turns such text into one of three answers, so that typing works as well as tapping:

- ``TypedQuantity``: a bare number (for the product being picked);
- ``TypedOrder``: a number and words that match exactly one product;
- ``TypedSearch``: the products the words match, best first (shown as buttons).

It is pure (the catalog comes in as an argument) and decides nothing about carts or
screens: a single match typed without a number is still a search, since nothing goes in
a cart unless the customer gave a quantity.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from bot.catalog import ProductSpec

MAX_RESULTS = 8  # buttons a search answer shows; more would bury the chat
MAX_TEXT = 60  # longer text is a message to the shop, not a search
MAX_TYPED_QUANTITY = 999  # the caller caps to what a cart allows; beyond this is a typo
MIN_PREFIX = 3  # "su" would match half the catalog: shorter words must match whole

# Words that carry no product in either language. Kept short on purpose: each one here
# is a word no product can be found by. Single letters ("a", "I") need no entry, being
# too short to match anyway, so "I want" is covered by "want".
FILLER = frozenset(
    {"na", "ya", "the", "of", "and", "please", "tafadhali", "want", "nataka", "naomba", "nipe"}
)

TIMES = frozenset({"x", "×"})  # "2x maziwa", "maziwa × 2"
# A word is a run of letters and digits. A number keeps its decimals ("1.5", so "3.5" is
# not read as 3) and a leading minus ("-3" is no quantity to add); "×" stands alone.
_TOKEN = re.compile(r"×|(?<![^\W_])-?\d+(?:[.,]\d+)*[^\W_]*|[^\W_]+")
_GLUED_TIMES = re.compile(r"x(\d+)|(\d+)x")  # "x2", "2x" typed as one word
_RUN = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+")  # "500ml" -> "500", "ml": "maziwa 500 ml"


@dataclass(frozen=True, slots=True)
class TypedQuantity:
    quantity: int


@dataclass(frozen=True, slots=True)
class TypedOrder:
    sku: str
    quantity: int


@dataclass(frozen=True, slots=True)
class TypedSearch:
    skus: tuple[str, ...]  # matching products, best first, at most MAX_RESULTS; may be empty
    quantity: int | None = None  # a number typed with the words ("2 sukari" with several sugars)


Typed = TypedQuantity | TypedOrder | TypedSearch


def read_typed(text: str, products: Sequence[ProductSpec]) -> Typed | None:
    """What ``text`` asks of the shop ``products``, or None when it asks nothing readable."""
    text = text.strip()
    if not text or len(text) > MAX_TEXT:
        return None
    if _is_number(text):  # "²" and "３" are digits to str.isdigit, not here
        return _quantity(text)
    tokens = _split_glued_times(_TOKEN.findall(_fold(text)))
    if not tokens:
        return None  # punctuation only
    # Filler goes first, so that "nataka 2 maziwa" still has its number at the start.
    tokens = [t for t in tokens if t in TIMES or _is_number(t) or _is_word(t)]
    number, rest = _take_number(tokens)
    words = [w for w in rest if _is_word(w)]  # drops an "x" or a digit left between words
    if number is None:
        return _answer(_matches(words, products), None) if words else None
    if not words:
        return _quantity(number)  # "nipe 3" is a quantity said politely
    if len(number) >= MIN_PREFIX:
        # "maziwa 500" asks for Maziwa 500ml, not 500 of them: a number long enough to
        # match as a word, and matching, is part of the name.
        named = _matches([*words, number], products)
        if named:
            return _answer(named, None)
    quantity = _quantity(number)
    if quantity is None:
        return None  # "0 maziwa" or "5000 maziwa": not an order we can take, nor a search
    return _answer(_matches(words, products), quantity.quantity)


def _answer(matches: list[str], quantity: int | None) -> TypedOrder | TypedSearch:
    """An order when one product matches and a number was typed, else the matches."""
    if len(matches) == 1 and quantity is not None:
        return TypedOrder(matches[0], quantity)
    return TypedSearch(tuple(matches[:MAX_RESULTS]), quantity)


def _quantity(digits: str) -> TypedQuantity | None:
    quantity = int(digits)
    return TypedQuantity(quantity) if 1 <= quantity <= MAX_TYPED_QUANTITY else None


def _is_word(token: str) -> bool:
    return len(token) >= 2 and token not in FILLER


def _fold(text: str) -> str:
    """Lower case, accents dropped ("Café" -> "cafe"), for comparing what was typed.

    A non-ASCII character that decomposes to a digit ("²" -> "2", "½" -> "1⁄2") becomes a
    space: a number counts only when typed in ASCII digits, as for a bare quantity.
    """
    folded: list[str] = []
    for char in text.casefold():
        if char.isascii():
            folded.append(char)
            continue
        plain = "".join(
            c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)
        )
        folded.append(" " if any(c.isdigit() for c in plain) else plain)
    return "".join(folded)


def _split_glued_times(tokens: list[str]) -> list[str]:
    split: list[str] = []
    for token in tokens:
        glued = _GLUED_TIMES.fullmatch(token)
        if glued is None:
            split.append(token)
        elif glued[1] is not None:
            split += ["x", glued[1]]
        else:
            split += [glued[2], "x"]
    return split


def _take_number(tokens: list[str]) -> tuple[str | None, list[str]]:
    """The number typed first or last (with an "x" either side of it), and the other tokens.

    Only one end is read: in "2 maziwa 500" the 2 is the quantity and "500" a word.
    """
    found = _number_at(tokens)
    if found is not None:
        number, used = found
        return number, tokens[used:]
    found = _number_at(tokens[::-1])
    if found is not None:
        number, used = found
        return number, tokens[: len(tokens) - used]
    return None, tokens


def _number_at(tokens: list[str]) -> tuple[str, int] | None:
    """The number at the start of ``tokens`` and how many tokens it takes, "x"s included."""
    at = 1 if tokens and tokens[0] in TIMES else 0
    if at >= len(tokens) or not _is_number(tokens[at]):
        return None
    after = at + 1
    return tokens[at], after + 1 if after < len(tokens) and tokens[after] in TIMES else after


def _is_number(token: str) -> bool:
    return token.isascii() and token.isdigit()


def _matches(words: list[str], products: Sequence[ProductSpec]) -> list[str]:
    """Skus of the products every word matches: by name first, then catalog order."""
    by_name: list[str] = []
    by_other: list[str] = []  # matched only with the category or the sku
    for product in products:
        name = _keys(product.name, product.name_sw)
        if _all_match(words, name):
            by_name.append(product.sku)
        elif _all_match(words, name | _keys(product.category, product.category_sw, product.sku)):
            by_other.append(product.sku)
    return by_name + by_other


def _keys(*texts: str) -> set[str]:
    """The words of ``texts`` a typed word can match: each whole, and its letter and digit
    runs ("2kg" gives "2kg", "2" and "kg")."""
    keys: set[str] = set()
    for token in _TOKEN.findall(_fold(" ".join(texts))):
        keys.add(token)
        keys.update(_RUN.findall(token))
    return keys


def _all_match(words: list[str], keys: set[str]) -> bool:
    return all(any(_matches_key(word, key) for key in keys) for word in words)


def _matches_key(word: str, key: str) -> bool:
    return key.startswith(word) if len(word) >= MIN_PREFIX else key == word
