"""Stage settings for the tiny LeNet-300-100 runs of the CLI tests (96 training images)."""

from __future__ import annotations

#: Kept-fraction per layer in the tiny pruning runs.
TINY_KEPT = {"ip1": 0.1, "ip2": 0.2, "ip3": 0.5}


def prune_toml(rounds: int = 1) -> str:
    """A [prune] table: ``rounds`` rounds of one retraining epoch each, 16 validation images,
    seed 0, the :data:`TINY_KEPT` fractions."""
    layers = "".join(f"\n[prune.layers.{name}]\nkept = {kept}\n"
                     for name, kept in TINY_KEPT.items())
    return (f"[prune]\nrounds = {rounds}\nval_size = 16\nseed = 0\n\n"
            f"[prune.retrain]\nepochs = 1\n{layers}")
