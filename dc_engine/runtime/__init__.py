"""The runtime: run compressed models straight from their codes (what an edge app embeds).

- :class:`CompressedMatrix` (:mod:`.sqmatrix`): a pruned, weight-shared matrix in the packed
  kernel layout, the compressed weight back end of ``Dense`` and ``Conv2D``;
- :func:`load` / :func:`save` (:mod:`.files`): model files of either kind, as the one
  :class:`~dc_engine.core.model.Model` type.

Needs NumPy, Numba and h5py only, and imports no training code (a test checks it).
"""

from ..buffers import aligned_empty
from .files import load, save
from .sqmatrix import CompressedMatrix

__all__ = ["CompressedMatrix", "aligned_empty", "load", "save"]
