"""Broker faults for tests: restart a running Mosquitto, gracefully or as a power cut would."""

from __future__ import annotations

from genofed.broker.mosquitto import LocalMosquitto


def restart(broker: LocalMosquitto, *, crash: bool = False) -> None:
    """Stop `broker` and start it again on the same port. `crash` kills it outright (SIGKILL)
    first, so it cannot save anything on the way down."""
    if crash and broker.proc is not None and broker.proc.poll() is None:
        broker.proc.kill()
        broker.proc.wait()
    broker.stop()
    broker.start()
