"""`genofed broker init` on a real Mosquitto: TLS only, certificates required, ACL per identity."""

from __future__ import annotations

import queue
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from support.fedtools import wait_until
from support.intruder import Flooder, tls_accepts
from support.mosquitto import restart

from genofed.agent.tlskey import ensure_request
from genofed.aggregator.flight import message_limit
from genofed.broker.deploy import Sizing, enroll, init_broker, revoke_device, sign_device
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

    def __init__(self, root: Path, port: int, who: str | None, *, cert: Path | None = None,
                 key: Path | None = None) -> None:
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"raw-{who}",
                             protocol=mqtt.MQTTv5)
        ident = PkiLayout(root).client(who) if who else None
        self.c.tls_set(ca_certs=str(root / "ca.crt"),
                       certfile=str(ident.cert if ident else cert) if ident or cert else None,
                       keyfile=str(ident.key if ident else key) if ident or key else None)
        self.acks: queue.Queue[tuple[str, Any]] = queue.Queue()
        self.connected = threading.Event()
        self.c.on_connect = lambda c, u, f, rc, p: self.connected.set()
        self.c.on_publish = lambda c, u, mid, rc, p: self.acks.put(("pub", rc))
        self.c.on_subscribe = lambda c, u, mid, rcs, p: self.acks.put(("sub", rcs))
        self.messages: queue.Queue[tuple[str, bytes]] = queue.Queue()
        self.c.on_message = lambda c, u, m: self.messages.put((m.topic, bytes(m.payload)))
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
    """What the broker acknowledged before its last save survives a SIGKILL: the retained
    model and an update queued for the aggregator while it was away. It saves every
    AUTOSAVE_S seconds (in practice every other second), not after every change; what it
    acknowledged since is the window a crash loses (docs/ARCHITECTURE.md, "MQTT")."""
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
        before = _version(db)
        dev.publish(T.outbox("dev00"), b"marker")
        deadline = time.monotonic() + 30
        while _version(db) == before:
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


def _version(db: Path) -> tuple[int, int] | None:
    """Which save of the persistence file this is (a save replaces the file; inode numbers
    alone repeat, as the replaced file's is free for the next one)."""
    try:
        st = db.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


@pytest.fixture
def fresh(tmp_path: Path) -> Any:
    """A broker of its own for one test (sessions left by another test would interfere)."""
    root = tmp_path / "fed"
    init_broker(root, "fed", ["dev00", "dev01", "dev02"], sizing=Sizing(1000, 3))
    with LocalMosquitto(tmp_path / "run", secured=root) as mosq:
        yield root, mosq


def _connect_as(root: Path, port: int, who: str, client_id: str) -> tuple[mqtt.Client, bool]:
    """A clean-start connection with `who`'s certificate asking for `client_id`; whether the
    broker let it in."""
    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=mqtt.MQTTv5)
    ident = PkiLayout(root).client(who)
    c.tls_set(ca_certs=str(root / "ca.crt"), certfile=str(ident.cert), keyfile=str(ident.key))
    up = threading.Event()
    c.on_connect = lambda cl, u, f, rc, p: up.set() if not rc.is_failure else None
    c.connect_async("127.0.0.1", port, clean_start=True)
    c.loop_start()
    return c, up.wait(5)


def test_a_certificate_cannot_take_another_clients_session(fresh: Any) -> None:
    """Clean-start connections with dev01's certificate asking for the aggregator's and
    dev00's client ids: each victim's session and queued messages are untouched. (Without
    `use_username_as_clientid` the aggregator's queued update is gone.)"""
    root, mosq = fresh
    agg_id, dev_id = "genofed-fed-aggregator", "genofed-fed-dev00"  # what the daemons ask for
    agg = MqttLink(agg_id, _addr(root, mosq.port, "aggregator"), subscriptions=[T.all_outboxes],
                   manual_ack=True)
    dev = MqttLink(dev_id, _addr(root, mosq.port, "dev00"), subscriptions=[T.inbox("dev00")])
    for link in (agg, dev):
        link.start(20)
        link.stop()  # away; their sessions (and subscriptions) stay
    sender = MqttLink("s", _addr(root, mosq.port, "dev01"), subscriptions=[])
    sender.start(20)
    sender.publish(T.outbox("dev01"), b"dev01's update")  # queued for the aggregator
    sender.stop()
    for victim in (agg_id, dev_id):
        thief, connected = _connect_as(root, mosq.port, "dev01", victim)
        assert connected  # let in, as itself
        thief.disconnect()
        thief.loop_stop()
    agg = MqttLink(agg_id, _addr(root, mosq.port, "aggregator"), subscriptions=[T.all_outboxes],
                   manual_ack=True)
    agg.start(20)
    try:
        got = agg.inbox.get(timeout=20)  # an Empty here: the session was taken over
        assert (got.topic, got.payload) == (T.outbox("dev01"), b"dev01's update")
        got.ack()
        agg.publish(T.inbox("dev00"), b"for dev00")
    finally:
        agg.stop()
    dev = MqttLink(dev_id, _addr(root, mosq.port, "dev00"), subscriptions=[])  # no subscribe:
    dev.start(20)  # only the stored session can deliver this
    try:
        assert dev.inbox.get(timeout=20).payload == b"for dev00"
    finally:
        dev.stop()
    log = (root / "mosquitto.log").read_text()
    assert f"as {agg_id}" not in log and "as aggregator " in log  # ids are the CNs


def test_revoked_device_is_refused_once_the_broker_reloads(fresh: Any) -> None:
    """`revoke_device` + SIGHUP: dev01 cannot connect, its session still connected can
    neither publish nor read, and dev00 is unaffected. What dev01 had queued before is
    still delivered by the broker: dropping it is the aggregator's job (`aggregator
    unenroll`)."""
    root, mosq = fresh

    def lets_in(who: str) -> bool:
        return tls_accepts(root, mosq.port, who)

    agg = MqttLink("aggregator", _addr(root, mosq.port, "aggregator"),
                   subscriptions=[T.all_outboxes], manual_ack=True)
    agg.start(20)
    agg.stop()  # away: the outboxes queue for it
    revoke_device(root, "dev01")
    revoke_device(root, "dev02")  # a canary: probing dev01 itself would take over its session
    # The files alone change nothing: Mosquitto reads the CRL and ACL when it (re)loads.
    assert lets_in("dev02"), "revoked before the reload: Mosquitto read the CRL on its own?"
    live = RawClient(root, mosq.port, "dev01")
    try:
        assert live.connected.wait(20)
        live.c.publish(T.outbox("dev01"), b"queued before", qos=1)
        assert not live.acks.get(timeout=20)[1].is_failure
        mosq.reload()
        wait_until("the revoked certificate to be refused", lambda: not lets_in("dev02"),
                   timeout_s=30)
        assert not lets_in("dev01") and lets_in("dev00")
        # dev01's connection from before the reload is still up, but denied everything.
        assert live.c.is_connected()
        live.c.publish(T.outbox("dev01"), b"sent after", qos=1)
        kind, rc = live.acks.get(timeout=20)
        assert kind == "pub" and rc.is_failure and "authorized" in str(rc).lower()
        live.c.subscribe(T.task, qos=1)
        assert live.acks.get(timeout=20)[0] == "sub"  # granted; reads are checked per message
        agg = MqttLink("aggregator", _addr(root, mosq.port, "aggregator"),
                       subscriptions=[T.all_outboxes], manual_ack=True)
        agg.start(20)
        got = agg.inbox.get(timeout=20)
        assert got.payload == b"queued before"
        got.ack()
        agg.publish(T.task, b"a task dev01 may not read", retain=True)
        with pytest.raises(queue.Empty):
            agg.inbox.get(timeout=2)  # "sent after" never came
        assert live.messages.empty()
        agg.stop()
    finally:
        live.close()


def test_packets_beyond_the_largest_message_are_refused(fresh: Any) -> None:
    """The broker takes a round message of the largest size its sizing allows, and
    disconnects a client that sends one byte more of payload than the bound."""
    root, mosq = fresh
    sizing = Sizing(1000, 3)
    agg = MqttLink("aggregator", _addr(root, mosq.port, "aggregator"),
                   subscriptions=[T.all_outboxes], manual_ack=True)
    agg.start(20)
    dev = MqttLink("dev00", _addr(root, mosq.port, "dev00"), subscriptions=[])
    dev.start(20)
    try:
        largest = message_limit(1000 + 1, 3)  # what the aggregator takes in such a round
        dev.publish(T.outbox("dev00"), bytes(largest))
        assert len(agg.inbox.get(timeout=20).payload) == largest
        flood = Flooder(root, mosq.port, "dev01", T.outbox("dev01"),
                        size=sizing.largest_message + 1, rate=20).start()
        wait_until("refusals", lambda: flood.stats.refused + flood.stats.connects > 4)
        stats = flood.stop()
        assert stats.acked == 0
        with pytest.raises(queue.Empty):
            agg.inbox.get(timeout=1)
        assert "disconnected due to oversize packet" in (root / "mosquitto.log").read_text()
    finally:
        dev.stop()
        agg.stop()


def test_a_key_made_on_the_device_signed_by_the_ca_connects(fresh: Any, tmp_path: Path) -> None:
    """The default path: the device makes its key and a request (`openssl`), the broker's CA
    signs it, and that certificate connects as the device and only as it."""
    root, mosq = fresh
    key, cert, csr = tmp_path / "pi.key", tmp_path / "pi.crt", tmp_path / "pi.csr"
    assert ensure_request(key, cert, csr, "pi", "fed") is not None
    device, issued = sign_device(root, csr.read_bytes(), "pi")
    cert.write_bytes(issued.read_bytes())
    assert device == "pi" and not PkiLayout(root).client("pi").key.exists()
    agg = MqttLink("aggregator", _addr(root, mosq.port, "aggregator"),
                   subscriptions=[T.all_outboxes], manual_ack=True)
    agg.start(20)
    pi = RawClient(root, mosq.port, None, cert=cert, key=key)
    try:
        assert pi.connected.wait(20)
        pi.c.publish(T.outbox("dev00"), b"forged by pi", qos=1)
        assert pi.acks.get(timeout=20)[1].is_failure
        pi.c.publish(T.outbox("pi"), b"pi's own", qos=1)
        assert not pi.acks.get(timeout=20)[1].is_failure
        got = agg.inbox.get(timeout=20)
        assert (got.topic, got.payload) == (T.outbox("pi"), b"pi's own")
    finally:
        pi.close()
        agg.stop()
