"""Delivery settings (``PROFILEHUB_WEBHOOK_*``, ``PROFILEHUB_DELIVERY_*``): part of the one
settings model (``config.Settings.delivery``), read and checked with the rest at start-up."""

from __future__ import annotations

from profilehub.config import DEFAULT_RETRY_SCHEDULE, DeliverySettings, parse_schedule

__all__ = ["DEFAULT_RETRY_SCHEDULE", "DeliverySettings", "parse_schedule"]
