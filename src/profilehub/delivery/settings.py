"""Delivery settings (``PROFILEHUB_WEBHOOK_*``, ``PROFILEHUB_DELIVERY_*``): part of the one
settings model (``config.Settings.delivery``), read and checked with the rest at start-up."""

from __future__ import annotations

from profilehub.config import DEFAULT_RETRY_SCHEDULE, DeliverySettings, parse_schedule

__all__ = ["DEFAULT_RETRY_SCHEDULE", "DEFAULT_STREAM", "DeliverySettings", "parse_schedule"]

# The JetStream stream events go to unless ``profilehub deliver --stream`` names another; here, not
# in ``delivery.stream``, so that the command's options are made without loading the NATS client.
DEFAULT_STREAM = "PROFILEHUB"
