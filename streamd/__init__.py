"""streamd: one durable, replayable change feed of everything that happens at your finance platforms."""

__version__ = "0.1.0"
