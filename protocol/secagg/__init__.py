"""Secure aggregation: SecAgg+ (Bell et al. 2020) over the stages of Bonawitz et al. 2017.

The aggregator learns the sum of the surviving clients' vectors in Z_(2^b) and nothing about
any one of them, while clients drop out at any stage and the aggregator may lie about who did.
Client and server are state machines with no I/O (`client`, `server`); `driver` runs a whole
round in memory. Modules: `params` (k and t from n, corrupt and dropout fractions), `graph`
(permuted Harary graph), `prg` (seeds, ChaCha20 masks), `shamir` (t-of-k over
GF(2^61 - 1)), `keys` (typed keys), `sealing` (the share bundles), `messages` (byte
encodings), `errors`; `blame` (who is excluded from a round for provable disruption, on what
evidence) and `proof` (that a revealed pairwise key is the right one). The ring and its
vectors are the codec's too: `genofed.protocol.ring`.
"""

from genofed.protocol.secagg.client import SecAggClient
from genofed.protocol.secagg.config import Participant, RoundConfig
from genofed.protocol.secagg.driver import RoundResult, make_clients, run_round
from genofed.protocol.secagg.errors import (
    ForgedMessage,
    InconsistentRequest,
    MalformedMessage,
    ParameterError,
    ProtocolViolation,
    ReplayedMessage,
    RoundAborted,
    SecAggError,
    WrongRound,
)
from genofed.protocol.secagg.keys import GraphSeed, IdentityKey, SigningIdentity
from genofed.protocol.secagg.messages import Stage
from genofed.protocol.secagg.params import SecAggParams, choose_parameters
from genofed.protocol.secagg.server import SecAggServer

__all__ = [
    "ForgedMessage", "GraphSeed", "IdentityKey", "InconsistentRequest", "MalformedMessage",
    "ParameterError", "Participant", "ProtocolViolation", "ReplayedMessage",
    "RoundAborted", "RoundConfig", "RoundResult", "SecAggClient", "SecAggError",
    "SecAggParams", "SecAggServer", "SigningIdentity", "Stage", "WrongRound",
    "choose_parameters", "make_clients", "run_round",
]
