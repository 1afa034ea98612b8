"""Loading mmft's evaluate metrics in tests with every socket blocked, so a Hub lookup would fail loudly."""

from __future__ import annotations

import socket

import pytest

from mmft.metrics import load_metric


def load_offline(name: str, **kwargs):
    """`load_metric(name, keep_in_memory=True, **kwargs)` while any network connection raises."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(socket, "create_connection", refuse)
        return load_metric(name, keep_in_memory=True, **kwargs)
