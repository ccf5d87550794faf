"""What must hold after each fuzzed request, route by route.

Every route: no 500 (the error middleware logged nothing), no other 5xx, an answer within
10 s, /healthz still answering. A request refused (4xx, or by aiohttp itself before any
handler) changes no table; a refused STK or C2B confirmation body is kept raw, exactly once,
as a ``rejected`` payment event. Accepted requests may change state (an orphan callback, an
unmatched Paybill payment, a conversation step); they are counted, not judged.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable

from tests.fuzz.example import Example, Route
from tests.fuzz.harness import Change, FuzzDuka, compare
from tests.fuzz.wire import KEPT_BYTES, Answer, stored_text

Tally = Counter[str]
STK_ACCEPTED = {"orphan", "applied", "duplicate", "ignored", "unmatched"}
C2B_ACCEPTED = {"applied", "unmatched", "duplicate"}
VALIDATION_CODES = {"0", *(f"C2B000{n}" for n in range(11, 17))}


async def run_example(fz: FuzzDuka, tally: Tally, example: Example) -> None:
    before = await fz.snapshots.take()
    mark = len(fz.errors.records)
    answer = await fz.send(example.wire)
    fz.errors.check_since(mark, example, answer)
    if answer.status == 200 and example.route in ("telegram", "whatsapp"):
        await fz.quiet()  # what it started runs in the background
    change = compare(before, await fz.snapshots.take())
    if any(event["status"] == "received" for event in change.new_events):
        # Stored but not applied: the inbox applies it after the answer (and will fail the
        # check below); let that finish before the next example's snapshot.
        await fz.settle()
    await fz.assert_still_answering()
    why = f"\n  answer: {answer}\n  {change}\n  request: {example!r}"
    assert answer.status < 500, f"a 5xx for a request the server could have judged{why}"
    if not answer.from_app and answer.status != 404:
        _refused_by_http(example, answer, change, tally, why)
    else:
        CHECKS[example.route](example, answer, change, tally, why)


def _refused_by_http(
    example: Example, answer: Answer, change: Change, tally: Tally, why: str
) -> None:
    """aiohttp answered itself (framing, header bytes, Content-Encoding), or, for a client
    that closed its side mid-body, nobody could be answered: no handler decided anything."""
    assert answer.status != 0 or example.wire.half_close, f"connection dropped unanswered{why}"
    assert change.state_kept, f"state changed{why}"
    if example.route in ("stk", "c2b") and example.wire.half_close:
        # What did arrive may be kept for audit, as a refused body.
        assert len(change.new_events) <= 1, f"one body kept twice{why}"
        for event in change.new_events:
            assert event["status"] == "rejected", f"a partial body was not refused{why}"
            assert event["raw"] == stored_text(example.wire.delivered), f"partial not raw{why}"
    else:
        assert not change.new_events, f"an event from a request no handler read{why}"
    tally[f"{example.route}: refused by HTTP ({answer.status})"] += 1


def _check_kept(source: str, accepted: set[str]) -> Check:
    def check(example: Example, answer: Answer, change: Change, tally: Tally, why: str) -> None:
        expected_raw = stored_text(example.wire.delivered)
        if example.credential == "stranger":
            assert answer.status == 404, f"a wrong URL secret must be a plain 404{why}"
            assert change.none, f"a wrong URL secret kept something{why}"
            tally[f"{source}: wrong secret, 404"] += 1
            return
        if answer.status == 404:
            # At a URL not the callback's own (another attempt's, a wrong attempt token):
            # refused like a stranger, but it may be kept for audit.
            assert change.state_kept, f"state changed{why}"
            for event in change.new_events:
                assert (event["source"], event["status"]) == (source, "forged"), why
                assert example.lying_encoding or event["raw"] == expected_raw, f"not raw{why}"
            tally[f"{source}: 404, {len(change.new_events)} kept as forged"] += 1
            return
        assert len(change.new_events) == 1, f"the body must be kept exactly once{why}"
        [event] = change.new_events
        assert event["source"] == source, why
        if not example.lying_encoding:
            assert event["raw"] == expected_raw, (
                f"not kept raw: expected {expected_raw[:200]!r}, kept {event['raw'][:200]!r}{why}"
            )
        if answer.status == 200:
            assert event["status"] in accepted, f"accepted, but stored as {event['status']}{why}"
            assert example.must != "refuse", f"accepted a body the contract refuses{why}"
            tally[f"{source}: 200, {event['status']}"] += 1
            return
        assert 400 <= answer.status < 500, f"unexpected status{why}"
        assert event["status"] == "rejected", f"refused but stored as {event['status']}{why}"
        assert change.state_kept, f"a refused body changed state{why}"
        assert example.must != "accept", f"refused a valid body{why}"
        if len(example.wire.delivered) > KEPT_BYTES:
            assert answer.status == 413, f"an oversized body needs 413{why}"
        tally[f"{source}: {answer.status}, kept as rejected"] += 1

    return check


def _check_validation(
    example: Example, answer: Answer, change: Change, tally: Tally, why: str
) -> None:
    """C2B validation stores nothing, and answers every body Daraja's way (200)."""
    assert change.none, f"validation changed state{why}"
    if example.credential == "stranger":
        assert answer.status == 404, f"a wrong URL secret must be a plain 404{why}"
        tally["c2b-validation: wrong secret, 404"] += 1
        return
    assert answer.status == 200, f"validation must answer 200 with a ResultCode{why}"
    code = json.loads(answer.body).get("ResultCode")
    assert code in VALIDATION_CODES, f"not one of Daraja's validation answers{why}"
    assert example.must != "refuse" or code != "0", f"validation accepted a bad body{why}"
    tally[f"c2b-validation: {code}"] += 1


def _check_channel(refused_credential: tuple[int, ...]) -> Check:
    def check(example: Example, answer: Answer, change: Change, tally: Tally, why: str) -> None:
        route = example.route
        if example.credential == "wrong":
            # (A body aiohttp cannot decode may be refused for that first.)
            refusals = (*refused_credential, 400) if example.lying_encoding else refused_credential
            assert answer.status in refusals, f"a wrong credential got in{why}"
            assert change.none, f"a request with a wrong credential changed state{why}"
            tally[f"{route}: wrong credential, {answer.status}"] += 1
            return
        assert answer.status in (200, 400, *refused_credential), f"unexpected status{why}"
        assert answer.status == 200 or change.none, f"a refused request changed state{why}"
        if example.lying_encoding or example.credential == "unclear":
            # A body aiohttp decoded before anyone saw it (its signature may not survive), or
            # a credential in a form a server may take either way: any answer but a 5xx.
            why_unsure = (
                "false Content-Encoding" if example.lying_encoding else "unclear credential"
            )
            tally[f"{route}: {why_unsure}, {answer.status}"] += 1
            return
        assert answer.status in (200, 400), f"the right credential was refused{why}"
        if answer.status == 400:
            assert example.must != "accept", f"refused a valid body{why}"
        else:
            assert example.must != "refuse", f"accepted a body that is not an update{why}"
        tally[f"{route}: {answer.status}"] += 1

    return check


Check = Callable[[Example, Answer, Change, Tally, str], None]
CHECKS: dict[Route, Check] = {
    "stk": _check_kept("callback", STK_ACCEPTED),
    "c2b": _check_kept("c2b", C2B_ACCEPTED),
    "c2b-validation": _check_validation,
    "telegram": _check_channel((403,)),
    "whatsapp": _check_channel((401, 403)),
}
