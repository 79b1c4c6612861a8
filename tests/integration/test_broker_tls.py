"""`genofed broker init` on a real Mosquitto: TLS only, certificates required, ACL per identity."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from support.mosquitto import restart

from genofed.broker.deploy import enroll, init_broker
from genofed.broker.mosquitto import LocalMosquitto
from genofed.broker.pki import PkiLayout
from genofed.errors import GenofedError, LocalInputError
from genofed.protocol.topics import Topics
from genofed.transport.mqtt import BrokerAddress, MqttLink

pytestmark = pytest.mark.integration
T = Topics("fed")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("broker") / "fed"
    init_broker(root, "fed", ["dev00", "dev01"])
    enroll(root, "dev02")
    with LocalMosquitto(root.parent / "run", secured=root) as mosq:
        yield root, mosq.port


def _addr(root: Path, port: int, who: str) -> BrokerAddress:
    ident = PkiLayout(root).client(who)
    return BrokerAddress("127.0.0.1", port, ca=root / "ca.crt", cert=ident.cert, key=ident.key)


class RawClient:
    """A paho client that records acknowledgement reason codes, as an adversary would use."""

    def __init__(self, root: Path, port: int, who: str | None) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{who}",
                             protocol=mqtt.MQTTv5)
        ident = PkiLayout(root).client(who) if who else None
        self.c.tls_set(ca_certs=str(root / "ca.crt"),
                       certfile=str(ident.cert) if ident else None,
                       keyfile=str(ident.key) if ident else None)
        self.acks: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.connected = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.put(("pub", rc))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.acks.put(("sub", rcs))
        self.c.connect_async("127.0.0.1", port)
        self.c.loop_start()

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def test_device_writes_only_its_own_outbox(broker: Any) -> None:
    root, port = broker
    agg = MqttLink("agg", _addr(root, port, "aggregator"), subscriptions=[T.all_outboxes])
    agg.start(20)
    raw = RawClient(root, port, "dev00")
    try:
        assert raw.connected.wait(20)
        raw.c.publish(T.outbox("dev01"), b"forged by dev00", qos=1)
        kind, rc = raw.acks.get(timeout=20)
        assert kind == "pub" and rc.is_failure and "authorized" in str(rc).lower()
        raw.c.publish(T.outbox("dev00"), b"honest", qos=1)
        kind, rc = raw.acks.get(timeout=20)
        assert kind == "pub" and not rc.is_failure
        # Same-client order is kept, so a delivered forgery would have arrived first.
        got = agg.inbox.get(timeout=20)
        assert (got.topic, got.payload) == (T.outbox("dev00"), b"honest")
        assert agg.inbox.empty()
    finally:
        raw.close()
        agg.stop()


def test_device_reads_only_what_is_its_own(broker: Any) -> None:
    root, port = broker
    # dev02 was enrolled after init: the ACL's patterns cover it with no edit.
    spy = MqttLink("dev02", _addr(root, port, "dev02"),
                   subscriptions=[f"{T.base}/device/+/inbox", f"{T.base}/device/+/outbox"])
    agg = MqttLink("agg", _addr(root, port, "aggregator"), subscriptions=[])
    dev = MqttLink("dev01", _addr(root, port, "dev01"), subscriptions=[])
    spy.start(20)
    agg.start(20)
    dev.start(20)
    try:
        # Mosquitto 2.0 grants the subscriptions and enforces read access per delivery.
        dev.publish(T.outbox("dev01"), b"dev01's update")
        agg.publish(f"{T.base}/device/dev01/inbox", b"for dev01 only")
        agg.publish(f"{T.base}/device/dev02/inbox", b"for dev02")
        got = spy.inbox.get(timeout=20)
        assert got.payload == b"for dev02", f"dev02 read {got.topic}"
    finally:
        for link in (spy, agg, dev):
            link.stop()


def _never_connects(client: mqtt.Client, port: int) -> bool:
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.connect_async("127.0.0.1", port)
    client.loop_start()
    try:
        return not connected.wait(3)
    finally:
        client.disconnect()
        client.loop_stop()


def test_no_certificate_no_connection(broker: Any) -> None:
    root, port = broker
    no_cert = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="nocert",
                          protocol=mqtt.MQTTv5)
    no_cert.tls_set(ca_certs=str(root / "ca.crt"))
    assert _never_connects(no_cert, port), "a client without a certificate was let in"
    plain = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="plain",
                        protocol=mqtt.MQTTv5)
    assert _never_connects(plain, port), "a plaintext client was let in"
    with_cert = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="control",
                            protocol=mqtt.MQTTv5)
    ident = PkiLayout(root).client("dev01")
    with_cert.tls_set(ca_certs=str(root / "ca.crt"), certfile=str(ident.cert),
                      keyfile=str(ident.key))
    assert not _never_connects(with_cert, port), "the control client could not connect"


def test_foreign_ca_is_refused(broker: Any, tmp_path: Path) -> None:
    root, port = broker
    other = tmp_path / "other"
    init_broker(other, "fed", ["dev00"])  # same names, another CA
    link = MqttLink("imposter", BrokerAddress("127.0.0.1", port, ca=root / "ca.crt",
                                              cert=other / "clients" / "dev00.crt",
                                              key=other / "clients" / "dev00.key"),
                    subscriptions=[])
    with pytest.raises(GenofedError, match="no connection"):
        link.start(timeout_s=3)


def test_missing_tls_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(GenofedError, match="TLS file not found"):
        MqttLink("x", BrokerAddress(ca=tmp_path / "ca.crt", cert=tmp_path / "c",
                                    key=tmp_path / "k"), subscriptions=[])
    with pytest.raises(LocalInputError, match="all of ca, cert and key"):
        BrokerAddress(ca=tmp_path / "ca.crt")


def test_broker_crash_keeps_retained_and_queued_messages(tmp_path: Path) -> None:
    """What the broker acknowledged survives a SIGKILL: the retained model and an update
    queued for the aggregator while it was away."""
    root = tmp_path / "fed"
    init_broker(root, "fed", ["dev00"])
    db = root / "data" / "mosquitto.db"
    with LocalMosquitto(tmp_path / "run", secured=root) as mosq:
        agg = MqttLink("agg", _addr(root, mosq.port, "aggregator"),
                       subscriptions=[T.all_outboxes], manual_ack=True)
        agg.start(20)
        agg.publish(T.model, b"model v0", retain=True)
        agg.stop()  # away; its session (and subscription) stays
        dev = MqttLink("dev00", _addr(root, mosq.port, "dev00"), subscriptions=[])
        dev.start(20)
        dev.publish(T.outbox("dev00"), b"dev00's update")  # acknowledged by the broker
        # Any save that replaces the file from here on holds the update: one more change
        # (`marker`) makes sure there is such a save; then pull the plug.
        before = db.stat().st_ino if db.exists() else None
        dev.publish(T.outbox("dev00"), b"marker")
        deadline = time.monotonic() + 30
        while not (db.exists() and db.stat().st_ino != before):
            assert time.monotonic() < deadline, "the broker never saved its state"
            time.sleep(0.02)
        dev.stop()
        restart(mosq, crash=True)
        agg = MqttLink("agg", _addr(root, mosq.port, "aggregator"),
                       subscriptions=[T.all_outboxes], manual_ack=True)
        admin = MqttLink("admin", _addr(root, mosq.port, "admin"), subscriptions=[T.model])
        agg.start(20)
        admin.start(20)
        try:
            r = agg.inbox.get(timeout=20)  # an Empty here: the update was lost
            assert (r.topic, r.payload) == (T.outbox("dev00"), b"dev00's update")
            r.ack()
            r = admin.inbox.get(timeout=20)
            assert (r.topic, r.payload) == (T.model, b"model v0")
        finally:
            agg.stop()
            admin.stop()
