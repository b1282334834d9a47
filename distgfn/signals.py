"""SIGTERM (what `ray job stop` and Kubernetes send) takes the same clean path as Ctrl-C."""

from __future__ import annotations

import signal


def stop_on_sigterm() -> None:
    """Turns SIGTERM into KeyboardInterrupt in the main thread. Call it again after ray.init,
    which installs a handler of its own."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
