"""Order references: short, unambiguous, fit for Daraja's 12-character AccountReference."""

from __future__ import annotations

import secrets

# No 0/O, 1/I/L, 5/S or 2/Z pairs: customers read these aloud and type them.
ALPHABET = "346789ABCDEFGHJKMNPQRTUVWXY"
PREFIX = "DK"
RANDOM_LENGTH = 6  # 27^6 ≈ 387 million: collisions are rare and retried anyway


def new_order_reference() -> str:
    """E.g. ``DK-7KX3M9``: 9 characters."""
    return f"{PREFIX}-" + "".join(secrets.choice(ALPHABET) for _ in range(RANDOM_LENGTH))


def normalize_reference(text: str) -> str:
    """What a person typed (``dk 7kx3m9``) to the stored form (``DK-7KX3M9``)."""
    compact = "".join(ch for ch in text.upper() if ch.isalnum())
    if compact.startswith(PREFIX):
        compact = compact[len(PREFIX) :]
    return f"{PREFIX}-{compact}"
