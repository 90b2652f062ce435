"""SGD with momentum and L2 weight decay, per-parameter constraints, learning-rate schedules.

Constraints (docs/ARCHITECTURE.md, "The layer contract"):

- **mask** (``layer.masks[name]``, bool, shaped like the parameter): the gradient and the momentum
  are masked and the masked entries are written as exactly 0.0 after every step, so pruned
  connections stay pruned (LWC Sec. 3; Deep Compression Sec. 2).
- **tie** (``layer.ties[name]``, a :class:`~dc_engine.core.ties.Tie`): the parameter is a
  function of other trainable arrays (for weight sharing, a codebook). The optimizer asks the
  tie to map the parameter's gradient onto its trainable arrays, updates those, then lets the
  tie rewrite the parameter (Deep Compression Sec. 3.3, Eq. 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import kernels


def _check_lr(value: float, what: str) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value}")
    return value


class SGD:
    """Stochastic gradient descent with momentum and L2 weight decay (Caffe's update rule).

    v <- momentum * v - lr * (g + weight_decay * w);  w <- w + v

    Parameters
    ----------
    momentum : float in [0, 1).
    weight_decay : float >= 0. Applied to parameters named in ``decay_params`` (default: "W",
        the weights; biases are not decayed).
    """

    def __init__(self, momentum: float = 0.9, weight_decay: float = 5e-4,
                 decay_params: tuple[str, ...] = ("W",)):
        if not 0.0 <= float(momentum) < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = float(momentum)
        self.weight_decay = _check_lr(weight_decay, "weight_decay")
        self.decay_params = tuple(decay_params)
        self.velocity: dict[tuple, np.ndarray] = {}

    def _update(self, key, w, g, lr, decay, mask=None):
        v = self.velocity.get(key)
        if v is None or v.shape != w.shape:
            v = self.velocity[key] = np.zeros_like(w)
        g = np.ascontiguousarray(g, dtype=w.dtype)
        if mask is None:
            kernels.sgd_momentum(w.reshape(-1), g.reshape(-1), v.reshape(-1), lr,
                                 self.momentum, decay)
        else:
            if mask.shape != w.shape or mask.dtype != np.bool_:
                raise ValueError(f"mask for {key} must be a bool array of shape {w.shape}, got "
                                 f"{mask.dtype} {mask.shape}")
            kernels.sgd_momentum_masked(w.reshape(-1), g.reshape(-1), v.reshape(-1),
                                        mask.reshape(-1), lr, self.momentum, decay)

    def step(self, model, lr: float) -> None:
        """Apply one update to every parameter of ``model`` from its accumulated ``grads``."""
        for layer, name, w in model.parameters():
            g = layer.grads[name]
            tie = layer.ties.get(name)
            if tie is not None:
                grads = tie.backward(g)
                for tname, t in tie.trainables().items():
                    decay = self.weight_decay if tie.weight_decay else 0.0
                    self._update((layer.name, name, tname), t, grads[tname], lr, decay)
                tie.apply(w)
                continue
            decay = self.weight_decay if name in self.decay_params else 0.0
            self._update((layer.name, name), w, g, lr, decay, layer.masks.get(name))

    def reset(self) -> None:
        """Forget the momentum: the next step starts from zero velocity."""
        self.velocity.clear()


@dataclass(frozen=True)
class LRSchedule:
    """Learning rate as a function of the iteration (Caffe's policies).

    - ``fixed``: base_lr.
    - ``step``: base_lr * gamma ** (iteration // step_size).
    - ``inv``: base_lr * (1 + gamma * iteration) ** (-power)  (Caffe's LeNet solver:
      base_lr 0.01, gamma 1e-4, power 0.75).
    """

    policy: str = "inv"
    base_lr: float = 0.01
    gamma: float = 1e-4
    power: float = 0.75
    step_size: int = 1

    def __post_init__(self):
        if self.policy not in ("fixed", "step", "inv"):
            raise ValueError(f"lr policy must be 'fixed', 'step' or 'inv', got {self.policy!r}")
        _check_lr(self.base_lr, "learning rate")
        _check_lr(self.gamma, "gamma")
        _check_lr(self.power, "power")
        if int(self.step_size) < 1:
            raise ValueError(f"step_size must be >= 1 iteration, got {self.step_size}")

    def __call__(self, iteration: int) -> float:
        if self.policy == "fixed":
            return self.base_lr
        if self.policy == "step":
            return self.base_lr * self.gamma ** (iteration // int(self.step_size))
        return self.base_lr * (1.0 + self.gamma * iteration) ** (-self.power)


__all__ = ["SGD", "LRSchedule"]
