"""How a simulated STK push ends, chosen by the last three digits of ``PartyA``.

Pure rules, no I/O, so demos and tests can pick any ending just by choosing a phone number:

====== ================================================================================
PartyA  outcome
====== ================================================================================
…001    cancelled by the customer: callback ResultCode 1032
…002    the phone never answered: 1037 "DS timeout user cannot be reached."
…003    wrong M-Pesa PIN: 2001 "The initiator information is invalid."
…004    insufficient funds: 1 "The balance is insufficient for the transaction."
…005    success, and the same callback is delivered twice (a duplicate)
…006    success, but the callback is dropped; only the STK query reports ResultCode "0"
…007    never resolves: no callback, and the query says "being processed" forever
…008    the push itself is refused: HTTP 500 500.001.1001 "Unable to lock subscriber, …"
…009    success, but the callback's Amount is the requested amount minus 1 (2 when 1 was asked)
…011    the first push for this phone is cancelled (1032), later ones succeed
other   success
====== ================================================================================

A Buy Goods push (``CustomerBuyGoodsOnline``) whose ``PartyB`` is not the configured till
ends with the string ResultCode ``"SFC_IC0003"`` "The operator does not exist." whatever the
phone, because on Daraja a till misconfiguration beats anything the customer does.

``DarajaSimulator.force_next_outcome`` bypasses these rules for the next push.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from types import MappingProxyType

from payments.simulator import errors
from payments.simulator.errors import DarajaError
from payments.simulator.validation import BUY_GOODS, StkPushRequest

SUCCESS_DESC = "The service request is processed successfully."


class CallbackMode(enum.Enum):
    """How many times the callback for a resolved push is POSTed."""

    ONCE = "once"
    TWICE = "twice"
    DROPPED = "dropped"


@dataclass(frozen=True)
class Outcome:
    """How one push ends.

    ``result_code`` is a string because Daraja's are not all numbers (``"SFC_IC0003"``); the
    callback writes numeric ones as JSON numbers. ``paid_amount`` overrides the callback's
    Amount for a success (None: the requested amount). ``sync_error`` refuses the push at once
    instead of accepting it. A ``never_resolves`` push stays pending until someone calls
    ``DarajaSimulator.resolve``, which then ends it with this code and callback mode.
    """

    result_code: str
    result_desc: str
    callback: CallbackMode = CallbackMode.ONCE
    never_resolves: bool = False
    paid_amount: int | None = None
    sync_error: DarajaError | None = None

    @property
    def succeeded(self) -> bool:
        return self.result_code == "0"


SUCCESS = Outcome("0", SUCCESS_DESC)
CANCELLED_BY_USER = Outcome("1032", "Request cancelled by user.")
NO_ANSWER = Outcome("1037", "DS timeout user cannot be reached.")
WRONG_PIN = Outcome("2001", "The initiator information is invalid.")
INSUFFICIENT_FUNDS = Outcome("1", "The balance is insufficient for the transaction.")
DUPLICATE_CALLBACK = Outcome("0", SUCCESS_DESC, callback=CallbackMode.TWICE)
DROPPED_CALLBACK = Outcome("0", SUCCESS_DESC, callback=CallbackMode.DROPPED)
NEVER_RESOLVES = replace(NO_ANSWER, never_resolves=True)
SUBSCRIBER_LOCKED = Outcome(
    "1001", errors.SUBSCRIBER_LOCKED.error_message, sync_error=errors.SUBSCRIBER_LOCKED
)
OPERATOR_DOES_NOT_EXIST = Outcome("SFC_IC0003", "The operator does not exist.")


def amount_mismatch(requested: int) -> Outcome:
    """A success whose callback reports a different amount than was pushed."""
    paid = requested - 1 if requested > 1 else 2
    return Outcome("0", SUCCESS_DESC, paid_amount=paid)


@dataclass(frozen=True)
class Rule:
    suffix: str
    summary: str


RULES: tuple[Rule, ...] = (
    Rule("001", "cancelled by user (ResultCode 1032)"),
    Rule("002", "no answer on the phone (1037 DS timeout)"),
    Rule("003", "wrong PIN (2001)"),
    Rule("004", "insufficient funds (1)"),
    Rule("005", "success, callback delivered twice"),
    Rule("006", 'success, callback dropped (query answers "0")'),
    Rule("007", "never resolves (no callback, query says being processed)"),
    Rule("008", "push refused: HTTP 500 Unable to lock subscriber"),
    Rule("009", "success, callback Amount = requested - 1 (2 if 1 was requested)"),
    Rule("011", "first push for the phone cancelled (1032), later ones succeed"),
)

_FIXED_BY_SUFFIX: MappingProxyType[str, Outcome] = MappingProxyType(
    {
        "001": CANCELLED_BY_USER,
        "002": NO_ANSWER,
        "003": WRONG_PIN,
        "004": INSUFFICIENT_FUNDS,
        "005": DUPLICATE_CALLBACK,
        "006": DROPPED_CALLBACK,
        "007": NEVER_RESOLVES,
        "008": SUBSCRIBER_LOCKED,
    }
)


def choose_outcome(
    push: StkPushRequest, *, till_number: str | None, prior_pushes_from_phone: int
) -> Outcome:
    """The outcome the rules give ``push``.

    ``prior_pushes_from_phone`` counts the accepted pushes this ``PartyA`` made before, which
    only the "fails first, then succeeds" rule needs.
    """
    if push.transaction_type == BUY_GOODS and push.party_b != till_number:
        return OPERATOR_DOES_NOT_EXIST
    suffix = push.party_a[-3:]
    if suffix == "009":
        return amount_mismatch(push.amount)
    if suffix == "011":
        return CANCELLED_BY_USER if prior_pushes_from_phone == 0 else SUCCESS
    return _FIXED_BY_SUFFIX.get(suffix, SUCCESS)


def rules_summary() -> str:
    """The rules as printable lines, for the ``duka simulator`` banner."""
    lines = ["Outcome by the last three digits of PartyA:"]
    lines += [f"  ...{rule.suffix}  {rule.summary}" for rule in RULES]
    lines.append("  other   success")
    lines.append('  Buy Goods push whose PartyB is not the till: ResultCode "SFC_IC0003"')
    return "\n".join(lines)
