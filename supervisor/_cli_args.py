"""The types of supctl's arguments: each turns text into a value or says in one line what was expected."""

from __future__ import annotations

import argparse

from supervisor.signals import parse_signal

__all__ = ["count_arg", "env_arg", "seconds_arg", "signal_arg"]


def signal_arg(text: str) -> int:
    """A signal by number (``15``) or name (``TERM``, ``SIGTERM``, ``sigterm``)."""
    try:
        return parse_signal(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r}") from None


def env_arg(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected K=V, got {text!r}")
    return key, value


def seconds_arg(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def count_arg(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value
