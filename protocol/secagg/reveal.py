"""Wrong shares revealed in Unmasking: found, set aside, and blamed where one client must be
the cause.

Before, a share off by one (signed by its holder) made the secret it belonged to rebuild as
garbage: the round aborted, and with the same device in it the next one did too. Shamir shares
are a Reed-Solomon code, so with more shares than the threshold t the server can tell which
ones do not fit, without any new message:

- Detection costs about one more reconstruction per secret: every share beyond the first t
  must lie on the polynomial through the first t (`shamir.consistent`: the t^2 products of
  the base are shared by all its points, and the points are checked in one random
  combination). A wrong share beyond the base does not fit; a wrong
  one in the base moves the polynomial by its error times a non-zero Lagrange weight at every
  other x, so none of the others fits.
- Location, only for a secret that failed: with m >= t + 2 shares and one of them wrong, the
  polynomial through t shares without it fits every other share, and one through t shares with
  it fits none. That single wrong share is set aside and the secret rebuilt from the rest.
  More than one wrong share in a secret, or exactly t + 1 shares, cannot be located: the round
  aborts, as before, but saying so.

Who to blame. A share that does not fit was either revealed wrongly by its holder or dealt
wrongly by the secret's owner (a well-formed bundle with a wrong value). Under the one-bad-
device threat of `params.py` the pattern tells them apart: a lying holder makes at most one
share of each secret wrong, a lying dealer makes wrong shares only of its own secrets. So a
holder is blamed when its shares fail for two or more owners, and an owner when its secret
has two or more wrong shares (or cannot be located with enough shares). One wrong share of
one secret blames no one: it is set aside, and the log names both parties. The evidence is
the holder's signed UnmaskShares and the fit of the others' signed shares; two colluding
dealers could frame an honest holder this way, which is beyond the threat the parameters are
chosen for.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from genofed.protocol.secagg import shamir
from genofed.protocol.secagg.blame import INCONSISTENT as INCONSISTENT
from genofed.protocol.secagg.keys import ShareValue

Held = dict[int, list[tuple[int, ShareValue]]]  # owner: [(holder, share)], holders ascending


@dataclass
class Verdict:
    """What the server does with the revealed shares: `held` without the ones set aside,
    who to blame (client: reason), and the secrets that could not be corrected."""

    held: Held
    blame: dict[int, str] = field(default_factory=dict)
    set_aside: list[tuple[int, int]] = field(default_factory=list)  # (owner, holder)
    unresolved: dict[int, str] = field(default_factory=dict)  # owner: why


def examine(held: Held, t: int) -> Verdict:
    """Check every secret's shares and set aside the ones that do not fit (module docstring)."""
    suspect = _failing(held, t)
    verdict = Verdict(held={v: list(g) for v, g in held.items()})
    wrong: dict[int, list[int]] = {}  # holder: owners whose secret it got wrong
    for v in suspect:
        group = verdict.held[v]
        if len(group) < t + 2:
            verdict.unresolved[v] = (f"the {len(group)} shares of client {v} do not fit one "
                                     f"polynomial, and t + 2 = {t + 2} are needed to tell "
                                     "which is wrong")
            continue
        i = _locate(group, t)
        if i is not None and _failing({v: group[:i] + group[i + 1:]}, t):
            i = None  # two wrong shares can mislead the search; what remains must fit
        if i is None:
            verdict.unresolved[v] = f"more than one of the {len(group)} shares of client {v} " \
                                    "does not fit"
            verdict.blame.setdefault(v, f"client {v} dealt shares of its secret that do not "
                                        "fit one polynomial")
            continue
        holder = group.pop(i)[0]
        verdict.set_aside.append((v, holder))
        wrong.setdefault(holder, []).append(v)
    for holder, owners in sorted(wrong.items()):
        if len(owners) >= 2:
            verdict.blame.setdefault(holder, f"client {holder} revealed shares of clients "
                                             f"{sorted(owners)} that the other holders' "
                                             "shares contradict")
    return verdict


def _failing(held: Held, t: int) -> list[int]:
    """The owners with a share off the polynomial through their first t shares."""
    owners = [v for v, g in sorted(held.items()) if len(g) > t]
    if not owners:
        return []
    probes = max(len(held[v]) for v in owners) - t
    xs = np.zeros((len(owners), t + probes), dtype=np.uint64)
    ys = np.zeros((len(owners), t + probes, shamir.LIMBS), dtype=np.uint64)
    for r, v in enumerate(owners):
        g = held[v] + held[v][-1:] * (t + probes - len(held[v]))  # pad with a repeat
        xs[r] = [j + 1 for j, _ in g]
        ys[r] = shamir.shares_from_bytes([s.raw for _, s in g])
    fit = shamir.consistent(xs[:, :t], ys[:, :t], xs[:, t:], ys[:, t:])
    return [v for v, ok in zip(owners, fit, strict=True) if not ok]


def _locate(group: list[tuple[int, ShareValue]], t: int) -> int | None:
    """The index of the one share of `group` (m >= t + 2) that does not fit, or None if no
    single share explains the misfit."""
    x = np.array([j + 1 for j, _ in group], dtype=np.uint64)
    y = shamir.shares_from_bytes([s.raw for _, s in group])
    m = len(group)
    rest = np.arange(t, m)
    off = rest[~_fits(x, y, np.arange(t)[None, :], rest)]
    if off.size == 1:  # the first t fit all other shares but one: that one
        return int(off[0])
    if off.size != rest.size:
        return None  # a base that fits some but not all others: two or more are wrong
    # None of the others fit the first t: the wrong one is among them. Replace each in turn
    # by share t and test against share t + 1, which (one wrong share) is right.
    bases = np.array([[*(i for i in range(t) if i != b), t] for b in range(t)])
    ok = np.flatnonzero(_fits(x, y, bases, np.full(t, t + 1)))
    return int(ok[0]) if ok.size == 1 else None


def _fits(x: np.ndarray, y: np.ndarray, bases: np.ndarray, probes: np.ndarray) -> np.ndarray:
    """For each row: whether share `probes[r]` lies on the polynomial through the shares
    `bases[r]` (a base row is broadcast over every probe when there is one)."""
    bases = np.broadcast_to(bases, (probes.size, bases.shape[1]))
    at = shamir.interpolate(x[bases], y[bases], x[probes])
    return np.all(at == y[probes], axis=1)
