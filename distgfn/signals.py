"""SIGTERM (what `ray job stop` and Kubernetes send) takes the same clean path as Ctrl-C.

Outside a training loop both raise KeyboardInterrupt at once (`stop_on_sigterm`). A training
loop defers them (`deferred_stops`): the first Ctrl-C or SIGTERM only asks the loop to stop, and
the loop stops between two steps (`stop_requested`), so a metrics row and the checkpoint that
follows it are never cut apart; a second one raises KeyboardInterrupt at once.
"""

from __future__ import annotations

import contextlib
import signal
import threading

_requested = threading.Event()


def stop_on_sigterm() -> None:
    """Turns SIGTERM into KeyboardInterrupt in the main thread. Call it again after ray.init,
    which installs a handler of its own."""
    signal.signal(signal.SIGTERM, _interrupt)


@contextlib.contextmanager
def deferred_stops():
    """Within it, Ctrl-C and SIGTERM ask the loop to stop (see stop_requested) and a second one
    interrupts; the previous handlers come back at its end. Enter it after ray.init, which
    installs a SIGTERM handler of its own. Outside the main thread (where no handler can be
    set) it changes nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _requested.clear()
    previous = {signum: signal.signal(signum, _request_stop) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_requested() -> bool:
    return _requested.is_set()


def _request_stop(signum, frame):
    if _requested.is_set():
        raise KeyboardInterrupt(f"signal {signum} (second)")
    _requested.set()


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")
