"""Property-based fuzzing of the four webhooks over real HTTP on 127.0.0.1: the STK callback,
C2B confirmation and validation, the Telegram webhook and the WhatsApp webhook.

Bodies are arbitrary bytes, arbitrary JSON, and the real shapes with fields mutated; headers
and framing vary (Content-Type, a false Content-Encoding, wrong secrets and signatures,
chunked, a Content-Length that lies). After every request (``checks``): never a 500, the
server still answers, a refused request changes no table, and a refused STK or C2B body is
kept raw as a ``rejected`` event. Examples are derandomized, so every run tries the same ones.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from urllib.parse import quote_from_bytes

import pytest
from hypothesis import strategies as st

from bot.app import PAYMENTS
from payments.simulator import rules
from tests.every_channel import TELEGRAM_PATH
from tests.fakes.graph_api import DEFAULT_VERIFY_TOKEN
from tests.fuzz.callbacks import StkTargets, c2b_examples, c2b_shapes, stk_examples
from tests.fuzz.channels import (
    telegram_examples,
    telegram_shape_strategy,
    telegram_shapes,
    whatsapp_examples,
    whatsapp_shape_strategy,
    whatsapp_shapes,
)
from tests.fuzz.checks import Tally, run_example
from tests.fuzz.example import Route
from tests.fuzz.harness import WHATSAPP_PATH, FuzzDuka, fuzz, open_fuzz_duka
from tests.fuzz.sweep import TEXT_HOSTILE, cases_for, sweep
from tests.fuzz.wire import BROKEN_FRAMINGS, http_request
from tests.helpers import make_order, payment_rows

CUSTOMER_CHAT = 1001


async def pending_attempt(fz: FuzzDuka) -> StkTargets:
    """An order with an STK attempt that stays pending, and the URL its push gave Daraja."""
    order = await make_order(fz.engine)
    fz.duka.simulator.force_next_outcome(rules.NEVER_RESOLVES)
    await fz.duka.app[PAYMENTS].start_payment(order.id, "0712345678")
    [payment] = await payment_rows(fz.engine, order.id)
    checkout_id = payment.checkout_request_id
    url = fz.duka.simulator.transactions[checkout_id].push.callback_url
    return StkTargets(fz.stk_path, "/" + url.split("/", 3)[3], checkout_id)


def show(tally: Tally) -> None:
    """The outcomes, for ``pytest -rP``: what the examples exercised."""
    for outcome, count in sorted(tally.items()):
        print(f"{count:5d}  {outcome}")


async def test_stk_callback_keeps_every_refused_body_and_never_answers_500(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Arbitrary and near-valid callbacks, at the configured URL, at a pending attempt's own
    URL and at wrong ones: never a 500; a refused body changes nothing and is kept raw; an
    unknown CheckoutRequestID is answered 200 and kept as an orphan."""
    tally: Tally = Counter()
    async with open_fuzz_duka(sqlite_url, tmp_path) as fz:
        targets = await pending_attempt(fz)
        check = functools.partial(run_example, fz, tally)
        await fuzz(stk_examples(targets), check, examples=150)
    show(tally)
    assert tally["callback: 200, orphan"] > 0
    assert tally["callback: 400, kept as rejected"] > 0
    assert tally["callback: 413, kept as rejected"] > 0
    assert tally["callback: wrong secret, 404"] > 0


async def test_c2b_keeps_every_refused_confirmation_and_validation_never_writes(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Arbitrary and near-valid Paybill bodies: confirmation keeps every refused body raw and
    changes nothing for it; validation answers every body 200 and never writes."""
    tally: Tally = Counter()
    async with open_fuzz_duka(sqlite_url, tmp_path) as fz:
        order = await make_order(fz.engine)
        shapes = c2b_shapes(order.reference, order.total)
        examples = c2b_examples(fz.c2b_path, fz.c2b_validation_path, shapes)
        await fuzz(examples, functools.partial(run_example, fz, tally), examples=100)
    show(tally)
    assert tally["c2b: 400, kept as rejected"] > 0
    assert tally["c2b: 200, unmatched"] > 0
    assert tally["c2b: wrong secret, 404"] + tally["c2b-validation: wrong secret, 404"] > 0
    assert any(key.startswith("c2b-validation: C2B") for key in tally)


async def test_telegram_webhook_refuses_bad_secrets_and_bodies_without_a_trace(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Updates with wrong, missing and odd secret headers, bodies of every kind: 403 without
    the secret, 400 for what is not an update, never a 500, and a refusal changes nothing."""
    tally: Tally = Counter()
    async with open_fuzz_duka(sqlite_url, tmp_path) as fz:
        shapes = telegram_shape_strategy(telegram_shapes(fz.telegram, CUSTOMER_CHAT))
        examples = telegram_examples(TELEGRAM_PATH, shapes)
        await fuzz(examples, functools.partial(run_example, fz, tally), examples=100)
    show(tally)
    assert tally["telegram: wrong credential, 403"] > 0
    assert tally["telegram: 200"] > 0


async def test_whatsapp_webhook_acknowledges_signed_json_and_refuses_the_rest(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Signed, unsigned and wrongly signed webhooks of every kind: 401/403 without the right
    signature, any signed JSON acknowledged, never a 500, and a refusal changes nothing."""
    tally: Tally = Counter()
    async with open_fuzz_duka(sqlite_url, tmp_path) as fz:
        shapes = whatsapp_shape_strategy(whatsapp_shapes(fz.graph))
        examples = whatsapp_examples(WHATSAPP_PATH, shapes)
        await fuzz(examples, functools.partial(run_example, fz, tally), examples=100)
    show(tally)
    assert tally["whatsapp: wrong credential, 401"] > 0
    assert tally["whatsapp: wrong credential, 403"] > 0
    assert tally["whatsapp: 200"] > 0


TOKEN = DEFAULT_VERIFY_TOKEN.encode()
QUERY_VALUES = st.one_of(
    st.sampled_from((b"subscribe", b"unsubscribe", TOKEN, b"", b"SUBSCRIBE")),
    st.binary(max_size=20),
    st.text(max_size=20).map(str.encode),
)
QUERY_NAMES = st.sampled_from((b"hub.mode", b"hub.verify_token", b"hub.challenge", b"hub"))


@st.composite
def verify_queries(draw: st.DrawFn) -> list[tuple[bytes, bytes]]:
    params = [
        (b"hub.mode", b"subscribe" if draw(st.integers(0, 3)) else draw(QUERY_VALUES)),
        (b"hub.verify_token", TOKEN if draw(st.integers(0, 3)) else draw(QUERY_VALUES)),
        (b"hub.challenge", draw(st.from_regex(rb"[0-9]{1,12}", fullmatch=True) | QUERY_VALUES)),
    ]
    if draw(st.integers(0, 3)) == 0:
        del params[draw(st.integers(0, 2))]
    extra = draw(st.lists(st.tuples(QUERY_NAMES, QUERY_VALUES), max_size=2))  # some twice
    return draw(st.permutations(params + extra))


async def test_whatsapp_verification_echoes_only_for_the_right_token(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Meta's GET handshake with odd, missing, repeated and undecodable parameters: the
    challenge comes back only for mode "subscribe" and the right token; never a 500."""
    tally: Tally = Counter()
    async with open_fuzz_duka(sqlite_url, tmp_path) as fz:

        async def check(params: list[tuple[bytes, bytes]]) -> None:
            query = "&".join(f"{quote_from_bytes(k)}={quote_from_bytes(v)}" for k, v in params)
            mark = len(fz.errors.records)
            answer = await fz.send(http_request("GET", f"{WHATSAPP_PATH}?{query}", [], b""))
            fz.errors.check_since(mark, params, answer)
            first = {name: value for name, value in reversed(params)}
            right = first.get(b"hub.mode") == b"subscribe"
            right = right and first.get(b"hub.verify_token") == TOKEN
            assert answer.status == (200 if right else 403), f"{answer} for {query}"
            challenge = first.get(b"hub.challenge", b"")
            if right and challenge.decode("utf-8", "replace").encode() == challenge:
                assert answer.body == challenge, f"{answer} for {query}"
            tally[f"verification: {answer.status}"] += 1

        await fuzz(verify_queries(), check, examples=50)
    show(tally)
    assert tally["verification: 200"] > 0
    assert tally["verification: 403"] > 0


async def test_broken_http_framing_never_answers_500_on_any_webhook(
    sqlite_url: str, tmp_path: Path
) -> None:
    """Every webhook, its credential right, its body chunked in small pieces, declared
    shorter than sent, or declared longer and cut off by the client: never a 500, the server
    keeps answering, and what no handler read changes nothing."""
    tally: Tally = Counter()
    async with open_fuzz_duka(sqlite_url, tmp_path) as fz:
        targets = await pending_attempt(fz)
        order = await make_order(fz.engine, chat_id="43")
        telegram = telegram_shape_strategy(telegram_shapes(fz.telegram, CUSTOMER_CHAT))
        whatsapp = whatsapp_shape_strategy(whatsapp_shapes(fz.graph))
        c2b = c2b_shapes(order.reference, order.total)
        examples = st.one_of(
            stk_examples(targets, BROKEN_FRAMINGS),
            c2b_examples(fz.c2b_path, fz.c2b_validation_path, c2b, BROKEN_FRAMINGS),
            telegram_examples(TELEGRAM_PATH, telegram, BROKEN_FRAMINGS),
            whatsapp_examples(WHATSAPP_PATH, whatsapp, BROKEN_FRAMINGS),
        )
        await fuzz(examples, functools.partial(run_example, fz, tally), examples=60)
    show(tally)


@pytest.mark.parametrize("route", ["stk", "c2b", "telegram", "whatsapp"])
async def test_each_hostile_value_in_each_field_of_the_real_shapes(
    route: Route, sqlite_url: str, tmp_path: Path
) -> None:
    """Every field of each real shape, in turn, set to 1e400, 2**64, a 5000-digit integer,
    NaN, a text with NUL, a lone surrogate or a plain text, or removed; and deep nesting:
    the same properties as the random search, on every field every run."""
    tally: Tally = Counter()
    async with open_fuzz_duka(sqlite_url, tmp_path) as fz:
        await sweep(fz, tally, cases_for(fz, route))
    show(tally)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_callback_texts_postgresql_cannot_store_are_still_answered(
    database_url: str, tmp_path: Path
) -> None:
    """PostgreSQL refuses NUL in text and checks column widths: every field of the STK
    callback and of a C2B body set to a text with NUL, a lone surrogate or 200 characters."""
    tally: Tally = Counter()
    async with open_fuzz_duka(database_url, tmp_path) as fz:
        texts = [*cases_for(fz, "stk", TEXT_HOSTILE), *cases_for(fz, "c2b", TEXT_HOSTILE)]
        await sweep(fz, tally, texts)
    show(tally)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_random_callbacks_on_postgresql(database_url: str, tmp_path: Path) -> None:
    """A short random search of both callbacks on PostgreSQL, same properties."""
    tally: Tally = Counter()
    async with open_fuzz_duka(database_url, tmp_path) as fz:
        targets = await pending_attempt(fz)
        order = await make_order(fz.engine, chat_id="43")
        check = functools.partial(run_example, fz, tally)
        # Not shrunk: a PostgreSQL example costs more; the SQLite tests shrink the rest.
        await fuzz(stk_examples(targets), check, examples=30, shrink=False)
        c2b = c2b_shapes(order.reference, order.total)
        await fuzz(
            c2b_examples(fz.c2b_path, fz.c2b_validation_path, c2b), check, examples=30, shrink=False
        )
    show(tally)
