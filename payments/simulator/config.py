"""The simulator's frozen configuration: credentials it accepts, the merchant it plays, timings.

The defaults are Safaricom's public sandbox values (short code 174379 and its published
passkey), so a Duka configured for the sandbox talks to the simulator unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SANDBOX_SHORT_CODE = "174379"
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"


@dataclass(frozen=True)
class SimulatorConfig:
    """What the simulated Daraja accepts and how quickly it answers."""

    consumer_key: str = "duka-sim-key"
    # repr=False keeps the secret and the passkey out of logs and tracebacks.
    consumer_secret: str = field(default="duka-sim-secret", repr=False)
    short_code: str = SANDBOX_SHORT_CODE
    passkey: str = field(default=SANDBOX_PASSKEY, repr=False)
    # Buy Goods pushes must name this till as PartyB; None means no till is configured,
    # so every Buy Goods push ends in "SFC_IC0003" like a misconfigured real merchant.
    till_number: str | None = None
    callback_delay_seconds: float = 2.0
    token_lifetime_seconds: int = 3599
    # Safaricom does not publish its tolerance; an hour catches a UTC-instead-of-EAT clock.
    timestamp_skew_seconds: int = 3600
    # How long one callback POST may take before it counts as failed (never retried).
    callback_timeout_seconds: float = 10.0
    # C2B (daraja.md §8). Production refuses a second URL registration ("Urls are already
    # registered"); the sandbox lets the new URLs replace the old, which this flag imitates.
    c2b_allow_reregistration: bool = False
    # On Daraja external validation must be switched on by Safaricom; it is on here by
    # default because a merchant server that validates is the case worth testing.
    c2b_validation_active: bool = True
    # Daraja waits about 8 s for the ValidationURL, then applies the registered ResponseType.
    c2b_validation_timeout_seconds: float = 8.0
