"""A Daraja (M-Pesa STK push) simulator that speaks the real wire protocol on loopback.

Duka's real HTTP client is tested against it over real HTTP, and the demo runs on it.
Outcomes are chosen by the payer's phone number (see ``rules``); tests can also force an
outcome, fail a push, expire tokens and resolve transactions by hand.
"""

from payments.simulator.config import SimulatorConfig
from payments.simulator.errors import DarajaError, RequestRejectedError
from payments.simulator.rules import RULES, CallbackMode, Outcome, choose_outcome, rules_summary
from payments.simulator.server import RunningSimulator, run_simulator_forever, start_simulator
from payments.simulator.simulator import DarajaSimulator, SentCallback, WireReply
from payments.simulator.state import SimTransaction
from payments.simulator.validation import StkPushRequest, StkQueryRequest

__all__ = [
    "RULES",
    "CallbackMode",
    "DarajaError",
    "DarajaSimulator",
    "Outcome",
    "RequestRejectedError",
    "RunningSimulator",
    "SentCallback",
    "SimTransaction",
    "SimulatorConfig",
    "StkPushRequest",
    "StkQueryRequest",
    "WireReply",
    "choose_outcome",
    "rules_summary",
    "run_simulator_forever",
    "start_simulator",
]
