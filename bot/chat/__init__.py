"""The customer's conversation, independent of the channel that carries it."""
