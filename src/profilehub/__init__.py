"""profilehub: a self-hosted customer profile hub."""

__version__ = "0.1.0"
