"""visio-permanence: remote digital-inclusion help desks (AGPL-3.0-or-later)."""

__version__ = "0.1.0"
