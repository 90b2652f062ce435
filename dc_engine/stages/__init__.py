"""The three stages of Deep Compression on a model in memory, and the studies that tune them.

- :mod:`.prune`: stage 1, magnitude pruning with masked retraining (:func:`prune_model`);
- :mod:`.quantize`: stage 2, k-means weight sharing and centroid fine-tuning
  (:func:`quantize_model`);
- :mod:`.encode`: stage 3, the compressed model (:func:`encode_model`), and :mod:`.sizes`,
  its paper-style size table;
- :mod:`.pipeline`: all three (:func:`compress`, :class:`CompressConfig`);
- :mod:`.studies`: the pruning sensitivity scan and the bits sweep.

Stages take a model and arrays (a :class:`~dc_engine.io.data.Dataset`), never a path; the
files are :mod:`dc_engine.app.jobs`' business.
"""

from .encode import EncodeConfig, encode_model
from .pipeline import CompressConfig, compress
from .prune import PruneConfig, prune_model
from .quantize import QuantizeConfig, quantize_model

__all__ = ["compress", "CompressConfig", "prune_model", "PruneConfig", "quantize_model",
           "QuantizeConfig", "encode_model", "EncodeConfig"]
