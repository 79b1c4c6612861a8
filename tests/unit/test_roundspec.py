"""The task's round spec survives JSON exactly, and malformed specs are refused."""

import json

import numpy as np
import pytest

from genofed.errors import LocalInputError, MessageError
from genofed.protocol.envelope import open_envelope, seal
from genofed.protocol.fields import Fields
from genofed.protocol.ring import Ring
from genofed.protocol.roundspec import CodecSpec, TrainingSpec, config_from_json, config_to_json
from genofed.protocol.schema import SecureTask
from genofed.protocol.secagg import (
    GraphSeed,
    Participant,
    RoundConfig,
    SecAggParams,
    SigningIdentity,
)


def _config() -> RoundConfig:
    ids = [SigningIdentity.generate() for _ in range(4)]
    return RoundConfig("fed", 7, tuple(Participant(f"dev{i}", k.public) for i, k in
                                       enumerate(ids)),
                       SigningIdentity.generate().public, SecAggParams(4, 3, 2), Ring(20), 11,
                       GraphSeed(bytes(range(32))))


def test_config_round_trips_with_the_same_digest() -> None:
    cfg = _config()
    back = config_from_json(Fields(json.loads(json.dumps(config_to_json(cfg))), "secagg"))
    assert back == cfg and back.digest == cfg.digest


@pytest.mark.parametrize("change", [{"k": 1}, {"bits": 0}, {"server": "zz"},
                                    {"roster": [["a", "00"]]}, {"n": "x"}, {"round": 1e400},
                                    {"round": True}, {"length": 2.5}, {"roster": "x"},
                                    {"roster": [["a" * 65, "00" * 32]]},
                                    {"roster": [["a", "zz" * 32]]}, {"roster": [["a", 5]]},
                                    {"roster": [["a", "00" * 31 + " 0"]]}, {"roster": [[1, 2]]}])
def test_bad_config_refused(change: dict[str, object]) -> None:
    d = {**config_to_json(_config()), **change}
    with pytest.raises(MessageError, match="bad round configuration"):
        config_from_json(Fields(d, "secagg"))


def test_codec_spec_builds_the_mean_pipeline() -> None:
    spec = CodecSpec(clip=2.0, scale=1000.0, bits=24, rotation_seed=b"s" * 32)
    assert CodecSpec.from_json(Fields(json.loads(json.dumps(spec.to_json())), "codec")) == spec
    assert "weight_max" not in spec.to_json()  # no weight travels
    mp = spec.pipeline(10)
    rng = np.random.default_rng(0)
    total = sum(mp.encode(np.full(10, 0.1 * k), rng).astype(np.int64) for k in (1, 2, 3))
    mean = mp.decode_mean(np.asarray(total % (1 << 24), dtype=np.uint64), 3)
    assert mp.dim == 10 and np.allclose(mean, 0.2, atol=0.01)
    with pytest.raises(MessageError):
        CodecSpec.from_json(Fields({"clip": 1}, "codec"))


def test_envelope_signed_by_the_aggregator_only() -> None:
    agg, other = SigningIdentity.generate(), SigningIdentity.generate()
    raw = seal(agg, {"type": "task", "federation": "fed", "round": 1}, b"body")
    header, body = open_envelope(raw, agg.public, expect="task", federation="fed")
    assert header["round"] == 1 and body == b"body"
    with pytest.raises(MessageError, match="bad signature"):
        open_envelope(raw, other.public, expect="task", federation="fed")
    forged = raw.replace(b'"round":1', b'"round":2')
    with pytest.raises(MessageError, match="bad signature"):
        open_envelope(forged, agg.public, expect="task", federation="fed")
    with pytest.raises(MessageError, match="expected a 'model'"):
        open_envelope(raw, agg.public, expect="model", federation="fed")
    with pytest.raises(MessageError, match="federation"):
        open_envelope(raw, agg.public, expect="task", federation="other")
    with pytest.raises(MessageError, match="exceeds"):
        open_envelope(raw, agg.public, expect="task", federation="fed", max_bytes=10)
    for junk in (b"", b"GFS1", b"\x00" * 100):
        with pytest.raises(MessageError):
            open_envelope(junk, agg.public, expect="task", federation="fed")


def _task(training: TrainingSpec) -> SecureTask:
    return SecureTask("fed", 7, "open", 3, training=training, secagg=_config(),
                      codec=CodecSpec(clip=2.0, scale=1000.0, bits=20, rotation_seed=b"r" * 32))


def test_local_optimizer_travels_in_the_signed_task() -> None:
    agg = SigningIdentity.generate()
    spec = TrainingSpec(local_epochs=2, batch_size=16, lr=0.01, optimizer="adam")
    back = SecureTask.open(_task(spec).seal(agg), agg.public, "fed")
    assert back.training == spec and back.training.optimizer == "adam"
    assert TrainingSpec().optimizer == "sgd"
    with pytest.raises(LocalInputError, match="optimizer must be one of sgd, sgd_momentum, adam"):
        TrainingSpec(optimizer="adagrad")


@pytest.mark.parametrize("bad", ["adagrad", "", 3, None, ["adam"]])
def test_unknown_local_optimizer_in_a_task_is_refused(bad: object) -> None:
    """Even signed by the aggregator, a task naming no optimizer a bundle can export is a
    malformed message (MessageError), not a crash."""
    agg = SigningIdentity.generate()
    spec = TrainingSpec()
    object.__setattr__(spec, "optimizer", bad)  # as a buggy or newer aggregator would send
    raw = _task(spec).seal(agg)
    with pytest.raises(MessageError, match=r"bad task: bad training spec: .*optimizer"):
        SecureTask.open(raw, agg.public, "fed")


def test_task_without_an_optimizer_means_sgd() -> None:
    """A task from an aggregator that predates the key trains with plain SGD."""
    agg = SigningIdentity.generate()
    header, _ = open_envelope(_task(TrainingSpec(lr=0.3)).seal(agg), agg.public,
                              expect="task", federation="fed")
    del header["training"]["optimizer"]
    back = SecureTask.open(seal(agg, header), agg.public, "fed")
    assert back.training == TrainingSpec(lr=0.3, optimizer="sgd")
