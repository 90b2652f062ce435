"""The validation guard: a config's accuracy budget, kept on the data the config runs on.

A hand-made config is tuned on one dataset's validation split; run on other data it can cost
more accuracy than it did there (the max preset on inverted MNIST: README "Beyond the paper").
A ``[guard]`` table makes :func:`dc_engine.compress` check the compressed model's validation
error against the dense model's on the data it runs on, and back off while it is over
``budget``:

1. Stages 1 and 2 run as configured. The pruning stage keeps a copy of the model after each of
   its last ``back_rounds`` rounds before the final one (no extra training).
2. If the quantized model's validation error is within ``budget`` of the dense model's, that
   is the result: the guard changed nothing.
3. Otherwise stage 2 runs again with every configured width (weights and biases) one bit wider,
   up to ``extra_bits`` bits wider (at most 8); then from the model of one round earlier with
   the configured widths and wider ones again, and so on back ``back_rounds`` rounds. The first
   attempt within the budget is the result; if none is, the one with the lowest validation
   error (the report says so, and a warning is logged).

Bits come before rounds because they cost fewer bytes: one bit more on every kept weight
against about twice as many kept weights for a round earlier of a geometric schedule.

The settings of the attempt taken are an ordinary config (the report's ``config``): the rounds
applied listed per layer, the widths used. Each attempt's report also counts the validation
images it gets wrong that the dense model got right and the reverse, with the standard error of
the difference (:func:`paired_difference`): how far the split can tell the attempt's error
from the limit. Only the validation split is read, never the test images. Not in Deep
Compression.
"""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import numpy as np

from .._validate import check_int, check_number
from ..config import build_settings
from .prune import MAX_ROUNDS, LayerPrune, PruneConfig
from .quantize import QuantizeConfig

WIDEST = 8
"""Widest code the guard widens a layer to (a layer configured wider is left as it is)."""


@dataclass(frozen=True)
class GuardConfig:
    """Settings of the validation guard (a config's ``[guard]`` table; module docstring).

    Parameters
    ----------
    budget : float in [0, 1). Allowed increase of the validation error over the dense
        model's, as a fraction (0.002 = 0.2 percentage points).
    extra_bits : int in 0..8. Most bits an attempt adds to every configured width.
    back_rounds : int >= 0. Most pruning rounds the guard steps back (each one held as a
        copy of the model while stage 1 runs).
    """

    budget: float = 0.002
    extra_bits: int = 2
    back_rounds: int = 2

    def __post_init__(self):
        if check_number(self.budget, "budget", 0.0) >= 1:
            raise ValueError(f"budget must be below 1 (a fraction: 0.002 = 0.2 points), got "
                             f"{self.budget!r}")
        check_int(self.extra_bits, "extra_bits", 0, WIDEST)
        check_int(self.back_rounds, "back_rounds", 0, MAX_ROUNDS)

    @classmethod
    def from_dict(cls, d: dict) -> GuardConfig:
        return build_settings(cls, dict(d), "guard")

    def to_dict(self) -> dict:
        return asdict(self)

    def attempts(self, rounds: int) -> list[tuple[int, int]]:
        """The (rounds stepped back, bits added) of every attempt, in the order tried; the
        first is the configured run (0, 0). A config with ``rounds`` rounds can step back at
        most ``rounds - 1`` of them."""
        back = min(self.back_rounds, rounds - 1)
        return [(k, e) for k in range(back + 1) for e in range(self.extra_bits + 1)]


def back_off(config: PruneConfig, back: int) -> PruneConfig:
    """``config`` stopped ``back`` rounds early: the same targets in each round applied,
    listed per layer (reproduces those rounds exactly)."""
    if back == 0:
        return config
    rounds = config.rounds - back
    if rounds < 1:
        raise ValueError(f"cannot step back {back} of {config.rounds} rounds")
    layers = {}
    for name, spec in config.layers.items():
        applied = spec.per_round(config.rounds)[:rounds]
        layers[name] = LayerPrune(**{applied[0][0]: tuple(v for _, v in applied)})
    return dataclasses.replace(config, layers=layers, rounds=rounds)


def widen(config: QuantizeConfig, extra: int) -> QuantizeConfig:
    """``config`` with every width (weights' and biases') ``extra`` bits wider, at most
    :data:`WIDEST` (a width already wider is kept)."""
    if extra == 0:
        return config

    def more(table: dict) -> dict:
        return {n: b if b >= WIDEST else min(WIDEST, b + extra) for n, b in table.items()}

    return dataclasses.replace(config, bits=more(config.bits), bias_bits=more(config.bias_bits))


def paired_difference(right_ref, right_new) -> dict:
    """How the error of a new model differs from a reference's on the same images, from
    which images each gets right (boolean arrays of one length ``n``).

    Returns ``{"lost": images the reference gets right and the new model wrong, "won": the
    reverse, "difference": (lost - won) / n, the new error minus the reference's, "se": its
    standard error}``, with the paired (McNemar-style) standard error
    ``sqrt(lost + won - (lost - won)**2 / n) / n``: images both get right or both wrong add no
    noise to a difference measured on the same split. The guard reports it beside each
    attempt: a difference within about one ``se`` of the budget is not told apart from it by
    this split.
    """
    a = np.asarray(right_ref, bool)
    b = np.asarray(right_new, bool)
    if a.shape != b.shape or a.ndim != 1 or not len(a):
        raise ValueError(f"expected two boolean arrays of one non-zero length, got shapes "
                         f"{a.shape} and {b.shape}")
    n = len(a)
    lost, won = int(np.sum(a & ~b)), int(np.sum(~a & b))
    var = max(lost + won - (lost - won) ** 2 / n, 0.0)
    return {"lost": lost, "won": won, "difference": (lost - won) / n, "se": var ** 0.5 / n}


__all__ = ["GuardConfig", "WIDEST", "back_off", "paired_difference", "widen"]
