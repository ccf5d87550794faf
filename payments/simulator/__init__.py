"""A Daraja (M-Pesa STK push and C2B) simulator that speaks the real wire protocol on loopback.

Duka's real HTTP client is tested against it over real HTTP, and the demo runs on it.
Outcomes are chosen by the payer's phone number (see ``rules``); tests can also force an
outcome, fail a push, expire tokens and resolve transactions by hand. C2B payments (a customer
paying the paybill from the menu) go through the registered ValidationURL and ConfirmationURL
(see ``c2b``); ``DarajaSimulator.pay_bill`` makes one without HTTP.
"""

from payments.simulator.c2b import C2BPayment, C2BStatus, DecidedBy
from payments.simulator.c2b_service import SentC2BConfirmation, SentC2BValidation
from payments.simulator.c2b_validation import C2BPayRequest, C2BRegistration
from payments.simulator.config import SimulatorConfig
from payments.simulator.errors import DarajaError, RequestRejectedError
from payments.simulator.rules import RULES, CallbackMode, Outcome, choose_outcome, rules_summary
from payments.simulator.server import RunningSimulator, run_simulator_forever, start_simulator
from payments.simulator.simulator import DarajaSimulator, SentCallback, WireReply
from payments.simulator.state import SimTransaction
from payments.simulator.validation import StkPushRequest, StkQueryRequest

__all__ = [
    "RULES",
    "C2BPayRequest",
    "C2BPayment",
    "C2BRegistration",
    "C2BStatus",
    "CallbackMode",
    "DarajaError",
    "DarajaSimulator",
    "DecidedBy",
    "Outcome",
    "RequestRejectedError",
    "RunningSimulator",
    "SentC2BConfirmation",
    "SentC2BValidation",
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
