"""Channel adapters: how a ``Reply`` reaches a chat, and how a chat's actions come in."""
