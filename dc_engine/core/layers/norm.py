"""Normalisation layers: local response normalisation across channels (AlexNet, GoogLeNet)
and batch normalisation at inference (a per-channel affine map), with the folding helpers the
ONNX importer uses."""

from __future__ import annotations

import numpy as np

from ..._validate import check_number
from .base import FLOAT_DTYPES, Layer, positive_int


def _float_input(layer: Layer, x, ndim: int, what: str) -> np.ndarray:
    """``x`` as a C-contiguous float array (float32 and float64 kept, others to float32)."""
    x = np.asarray(x)
    if x.ndim != ndim:
        raise ValueError(f"{layer.name or layer.type_name}: expected a {ndim}-D input {what}, "
                         f"got shape {x.shape}")
    if x.dtype.type not in FLOAT_DTYPES:
        x = x.astype(np.float32)
    return np.ascontiguousarray(x)


def _window_sum(a: np.ndarray, before: int, after: int) -> np.ndarray:
    """``out[:, c] = a[:, max(0, c - before) : min(C - 1, c + after) + 1].sum(axis=1)`` for a
    (N, C, ...) array: a sum over a clipped window of channels, added shift by shift (exact,
    no cumulative-sum cancellation)."""
    c = a.shape[1]
    out = np.zeros_like(a)
    for d in range(-min(before, c - 1), min(after, c - 1) + 1):  # out[:, j] += a[:, j + d]
        if d >= 0:
            out[:, :c - d] += a[:, d:]
        else:
            out[:, -d:] += a[:, :c + d]
    return out


class LocalResponseNorm(Layer):
    """Local response normalisation across channels of NCHW input, as ONNX's ``LRN``.

    ``y[n, c, h, w] = x[n, c, h, w] / (k + alpha / size * s[n, c, h, w]) ** beta`` with
    ``s[n, c, h, w]`` the sum of ``x[n, i, h, w] ** 2`` over the channels
    ``i = max(0, c - floor((size - 1) / 2)) .. min(C - 1, c + ceil((size - 1) / 2))``.
    Parameter-free: a float32 or float64 input keeps its dtype (other dtypes become float32).

    Parameters
    ----------
    size : int >= 1. Channels in the window (ONNX ``size``).
    alpha : float >= 0, default 1e-4. Scale of the window's mean square (ONNX ``alpha``).
    beta : float >= 0, default 0.75. Exponent (ONNX ``beta``).
    k : float > 0, default 1.0. Additive constant (ONNX ``bias``); positive, so a window of
        zeros (after a ReLU, say) gives 0, not 0 / 0.
    name : str, optional. inputs : list of str, optional (the model's wiring).

    Notes
    -----
    AlexNet (Krizhevsky et al., 2012, Section 3.3) with ``size=5, alpha=1e-4, beta=0.75,
    k=2`` in the Caffe / ONNX convention (``alpha`` divided by ``size``). For an odd ``size``
    the window is centred, and ONNX, Caffe and PyTorch agree. For an even ``size`` ONNX puts
    the extra channel *after* ``c`` (``size=2``: channels ``c, c + 1``) while
    ``torch.nn.functional.local_response_norm`` puts it *before* (``c - 1, c``); this layer
    follows ONNX. (onnxruntime's CPU kernel rejects an even ``size`` altogether.)

    The backward pass is exact: with ``d = k + alpha / size * s``, ``dx[j] = dy[j] *
    d[j] ** -beta - 2 * alpha * beta / size * x[j] * sum_c dy[c] * y[c] / d[c]``, the sum over
    the channels ``c`` whose window holds ``j``.
    """

    type_name = "LocalResponseNorm"

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0,
                 name: str | None = None, inputs: list[str] | None = None):
        super().__init__(name, inputs)
        self.size = positive_int(size, "size")
        self.alpha = check_number(alpha, "alpha", 0.0)
        self.beta = check_number(beta, "beta", 0.0)
        self.k = check_number(k, "k", 0.0, strict=True)

    @property
    def hyperparameters(self) -> dict:
        return {"size": self.size, "alpha": self.alpha, "beta": self.beta, "k": self.k}

    @property
    def _reach(self) -> tuple[int, int]:
        """Channels the window reaches before and after ``c``."""
        before = (self.size - 1) // 2
        return before, self.size - 1 - before

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 3:
            raise ValueError(f"{self.name or self.type_name}: expects (C, H, W) per sample, "
                             f"got {tuple(input_shape)}")
        return tuple(input_shape)

    def forward(self, x, train=False):
        x = _float_input(self, x, 4, "(N, C, H, W)")
        before, after = self._reach
        d = _window_sum(x * x, before, after)
        d *= x.dtype.type(self.alpha / self.size)
        d += x.dtype.type(self.k)
        y = x * d ** x.dtype.type(-self.beta)
        self._cache = (x, d) if train else None
        return y

    def backward(self, dy, need_dx=True):
        x, d = self._cached()
        if not need_dx:
            return None
        dy = np.asarray(dy, dtype=x.dtype)
        f = d ** x.dtype.type(-self.beta)  # d ** -beta
        t = dy * x * f / d  # dy[c] * y[c] / d[c]
        before, after = self._reach
        # Channel j lies in the window of c = j - after .. j + before (the window mirrored).
        back = _window_sum(t, after, before)
        back *= x
        back *= x.dtype.type(2.0 * self.alpha * self.beta / self.size)
        return dy * f - back


class BatchNorm2D(Layer):
    """Batch normalisation at inference on NCHW input: ``y = x * scale[c] + shift[c]``.

    The running statistics are folded in (:func:`fold_batchnorm`); ``scale`` and ``shift``
    are trained like any parameter (this is not training-mode batch normalisation: no batch
    statistics are computed). ``weight_name`` is None: neither parameter is pruned, shared or
    encoded.

    Parameters
    ----------
    channels : int >= 1.
    rng : ignored (the initialisation is deterministic); taken like every layer's.
    dtype : float32 (default) or float64.
    name : str, optional. inputs : list of str, optional (the model's wiring).
    params : dict, optional. ``{"scale": s, "shift": t}``, float arrays of shape (channels,),
        to use instead of initialising (``scale`` 1, ``shift`` 0). Nothing is allocated then,
        and the arrays' dtype is the layer's.
    """

    type_name = "BatchNorm2D"

    def __init__(self, channels: int, rng=None, dtype=np.float32, name: str | None = None,
                 params: dict | None = None, inputs: list[str] | None = None):
        super().__init__(name, inputs)
        self.channels = positive_int(channels, "channels")

        def init(shapes):
            return {"scale": np.ones(shapes["scale"], dtype=dtype),
                    "shift": np.zeros(shapes["shift"], dtype=dtype)}

        self._set_params(params, dtype, init)

    @classmethod
    def param_shapes(cls, channels: int) -> dict[str, tuple[int, ...]]:
        c = positive_int(channels, "channels")
        return {"scale": (c,), "shift": (c,)}

    @property
    def hyperparameters(self) -> dict:
        return {"channels": self.channels}

    def output_shape(self, input_shape: tuple) -> tuple:
        if len(input_shape) != 3 or input_shape[0] != self.channels:
            raise ValueError(f"{self.name or self.type_name}: expects ({self.channels}, H, W) "
                             f"per sample, got {tuple(input_shape)}")
        return tuple(input_shape)

    def forward(self, x, train=False):
        x = self._input(x, 4, "(N, C, H, W)")
        if x.shape[1] != self.channels:
            raise ValueError(f"{self.name or self.type_name}: expected {self.channels} input "
                             f"channels, got {x.shape[1]}")
        shape = (1, self.channels, 1, 1)
        y = x * self.params["scale"].reshape(shape)
        y += self.params["shift"].reshape(shape)
        self._cache = x if train else None
        return y

    def backward(self, dy, need_dx=True):
        x = self._cached()
        dy = np.asarray(dy, dtype=self.dtype)
        self.grads["scale"] += np.einsum("nchw,nchw->c", dy, x)
        self.grads["shift"] += dy.sum(axis=(0, 2, 3))
        if not need_dx:
            return None
        return dy * self.params["scale"].reshape(1, self.channels, 1, 1)


class Normalize(Layer):
    """Fixed input normalisation per channel: ``y[:, c] = (x[:, c] - mean[c]) / std[c]``.

    The preprocessing a network was trained with (torchvision's ``Normalize``, Keras's
    ``Rescaling`` / ``Normalization``), carried inside the model so that every command, the
    runtime and the files apply it: nothing is trained, pruned or stored but the two lists.
    Channel ``c`` is axis 1 of the input ((N, C, H, W) images or (N, C) vectors); one value
    each applies to every channel. Parameter-free: a float32 or float64 input keeps its dtype
    (other dtypes become float32).

    Parameters
    ----------
    mean, std : sequences of finite floats, the same length (1 or the channel count); every
        ``std`` > 0. In the units of the model's input: [0, 1] for images loaded from uint8
        (as torchvision's ``ToTensor``), the stored values for float images.
    name : str, optional. inputs : list of str, optional (the model's wiring).
    """

    type_name = "Normalize"

    def __init__(self, mean, std, name: str | None = None, inputs: list[str] | None = None):
        super().__init__(name, inputs)
        self.mean = _floats(mean, "mean")
        self.std = _floats(std, "std")
        if len(self.mean) != len(self.std):
            raise ValueError(f"Normalize: mean has {len(self.mean)} values, std "
                             f"{len(self.std)}; give one per channel (or one for all)")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"Normalize: every std must be > 0, got {self.std}")

    @property
    def hyperparameters(self) -> dict:
        return {"mean": list(self.mean), "std": list(self.std)}

    def output_shape(self, input_shape: tuple) -> tuple:
        c = len(self.mean)
        if len(input_shape) < 1 or (c > 1 and input_shape[0] != c):
            raise ValueError(f"{self.name or self.type_name}: {c} channel values for inputs "
                             f"of shape {tuple(input_shape)} per sample (channels first)")
        return tuple(input_shape)

    def _stats(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        shape = (1, len(self.mean)) + (1,) * (x.ndim - 2)
        return (np.asarray(self.mean, dtype=x.dtype).reshape(shape),
                np.asarray(self.std, dtype=x.dtype).reshape(shape))

    def forward(self, x, train=False):
        x = np.asarray(x)
        if x.ndim < 2:
            raise ValueError(f"{self.name or self.type_name}: expected a batch (N, C, ...), "
                             f"got shape {x.shape}")
        x = _float_input(self, x, x.ndim, "(N, C, ...)")
        if len(self.mean) > 1 and x.shape[1] != len(self.mean):
            raise ValueError(f"{self.name or self.type_name}: expected {len(self.mean)} input "
                             f"channels, got {x.shape[1]}")
        mean, std = self._stats(x)
        self._cache = (x.ndim, x.dtype) if train else None
        return (x - mean) / std

    def backward(self, dy, need_dx=True):
        ndim, dtype = self._cached()
        if not need_dx:
            return None
        dy = np.asarray(dy, dtype=dtype)
        return dy / self._stats(dy)[1]


def _floats(values, what: str) -> tuple[float, ...]:
    """A non-empty sequence of finite numbers (or one number) as a tuple of floats;
    ValueError naming ``what`` otherwise."""
    if np.ndim(values) == 0 and not isinstance(values, (str, bytes)):
        values = [values]
    try:
        out = tuple(check_number(v, what) for v in values)
    except TypeError:
        raise ValueError(f"Normalize: {what} must be a list of numbers, got {values!r}") \
            from None
    if not out:
        raise ValueError(f"Normalize: {what} is empty; give one value per channel")
    return out


def _vector(a, what: str, n: int | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise TypeError(f"{what} must be a float array, got dtype {a.dtype}")
    if a.ndim != 1 or (n is not None and a.shape[0] != n):
        want = "a 1-D array" if n is None else f"shape ({n},)"
        raise ValueError(f"{what} must have {want}, got shape {a.shape}")
    return a


def _float_dtype(*arrays) -> np.dtype:
    """float32 when every array is float32 (or narrower), else float64."""
    dt = np.result_type(*arrays, np.float32)
    return dt if dt.type in FLOAT_DTYPES else np.dtype(np.float64)


def fold_batchnorm(gamma, beta, mean, var, eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray]:
    """The per-channel affine map of an inference-mode batch normalisation.

    ``gamma * (x - mean) / sqrt(var + eps) + beta == x * scale + shift``.

    Parameters
    ----------
    gamma, beta, mean, var : float arrays of shape (C,). The learned scale and offset and the
        running statistics (ONNX ``BatchNormalization``'s ``scale``, ``B``, ``input_mean``,
        ``input_var``).
    eps : float >= 0, default 1e-5 (ONNX's and PyTorch's default).

    Returns
    -------
    scale, shift : arrays of shape (C,): ``scale = gamma / sqrt(var + eps)``,
        ``shift = beta - mean * scale``; float32 when every input is float32, else float64
        (computed in float64 either way).

    Raises
    ------
    TypeError
        A non-numeric array or ``eps``.
    ValueError
        Arrays not 1-D of one length, a negative ``eps``, or ``var + eps`` not positive
        everywhere.
    """
    gamma = _vector(gamma, "gamma")
    c = gamma.shape[0]
    beta, mean, var = (_vector(a, w, c) for a, w in ((beta, "beta"), (mean, "mean"),
                                                     (var, "var")))
    eps = check_number(eps, "eps", 0.0)
    dtype = _float_dtype(gamma, beta, mean, var)
    denom = var.astype(np.float64) + eps
    bad = np.flatnonzero(~(denom > 0))  # NaN included
    if bad.size:
        raise ValueError(f"var + eps must be positive for every channel, got "
                         f"{float(denom[bad[0]])!r} at channel {int(bad[0])}")
    scale = gamma.astype(np.float64) / np.sqrt(denom)
    shift = beta.astype(np.float64) - mean.astype(np.float64) * scale
    return scale.astype(dtype), shift.astype(dtype)


def fold_into_conv(w, b, scale, shift) -> tuple[np.ndarray, np.ndarray]:
    """Fold a per-channel affine map that follows a convolution into it.

    ``conv(x, w, b) * scale[o] + shift[o] == conv(x, w', b')`` with
    ``w'[o] = w[o] * scale[o]`` and ``b' = b * scale + shift``.

    Parameters
    ----------
    w : float array of shape (out, in, kh, kw) (grouped: (out, in / groups, kh, kw); a Dense
        weight (out, in) works as well).
    b : float array of shape (out,), or None for a convolution without a bias.
    scale, shift : float arrays of shape (out,), e.g. from :func:`fold_batchnorm`.

    Returns
    -------
    w', b' : new arrays of the shapes of ``w`` and (out,); float32 when every input is
        float32, else float64 (computed in float64 either way). The inputs are not modified.

    Raises
    ------
    TypeError
        A non-numeric array.
    ValueError
        Shapes that do not match.
    """
    w = np.asarray(w)
    if w.dtype.kind not in "fiu":
        raise TypeError(f"w must be a float array, got dtype {w.dtype}")
    if w.ndim < 2:
        raise ValueError(f"w must have shape (out, in, kh, kw), got {w.shape}")
    out = w.shape[0]
    b = np.zeros(out, dtype=w.dtype) if b is None else _vector(b, "b", out)
    scale, shift = _vector(scale, "scale", out), _vector(shift, "shift", out)
    dtype = _float_dtype(w, b, scale, shift)
    s = scale.astype(np.float64)
    w2 = w.astype(np.float64) * s.reshape((out,) + (1,) * (w.ndim - 1))
    b2 = b.astype(np.float64) * s + shift.astype(np.float64)
    return w2.astype(dtype), b2.astype(dtype)


__all__ = ["LocalResponseNorm", "BatchNorm2D", "fold_batchnorm", "fold_into_conv"]
