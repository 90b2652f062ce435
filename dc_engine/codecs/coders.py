"""Stream coders of a layer payload: the interface and the registry.

A layer payload (:mod:`dc_engine.codecs.payload`) holds two symbol streams, the weight codes
and the relative-index gaps, each written by a stream coder whose id the payload records.
Huffman coding (Deep Compression Sec. 4) is the default; the fixed-width coder is the
uncoded baseline.

Adding a coder: write a class with the attributes and methods of :class:`StreamCoder` in its
own module (next to its Numba kernels, if any, in ``kernels/``), give it an unused ``id`` and
``name``, and add it to :data:`CODERS` below. The payload, the encode stage, the configs
(``[encode] coder = "name"``) and the runtime then take it as they are. Ids are part of the
file format (docs/FORMAT.md): never reuse one.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from .._validate import is_int
from .bitpack import FixedCoder
from .huffman import HuffmanCoder


class StreamCoder(Protocol):
    """What a payload needs of a coder. ``alphabet`` is the number of possible symbols,
    ``2**bits`` (codes: ``2**weight_bits``, gaps: ``2**index_bits``)."""

    id: int
    """The byte the payload stores for this coder (0..255)."""
    name: str
    """The name configs use (``[encode] coder = "huffman"``)."""

    def options(self) -> dict:
        """The constructor arguments that rebuild this coder."""

    def encode(self, symbols: np.ndarray, alphabet: int) -> tuple[bytes, bytes, int, np.ndarray]:
        """Code ``symbols`` (uint16, shape (n,), each < ``alphabet``): ``(table, data, n_bits,
        present)``, where ``table`` is what the decoder needs besides the data (may be empty),
        ``data`` holds ``ceil(n_bits / 8)`` bytes, and ``present`` (bool, shape (alphabet,))
        says which symbols may occur (the payload stores codebook entries only for those)."""

    def read_table(self, buf: memoryview, alphabet: int) -> tuple[object, int]:
        """Parse the table at the start of ``buf`` (untrusted): ``(table, bytes it takes)``;
        :class:`~dc_engine.errors.DCFormatError` when it is truncated or invalid."""

    def present(self, table: object, alphabet: int) -> np.ndarray:
        """Which symbols may occur, from a parsed table (bool, shape (alphabet,))."""

    def decode(self, table: object, data: memoryview, n_bits: int, n: int,
               alphabet: int) -> np.ndarray:
        """Decode ``n`` symbols (uint16) from ``data`` (untrusted, ``ceil(n_bits / 8)`` bytes);
        :class:`~dc_engine.errors.DCFormatError` when it is corrupt."""


CODERS: dict[int, type] = {cls.id: cls for cls in (FixedCoder, HuffmanCoder)}
"""Every known coder by id (the registry)."""

DEFAULT_CODER = HuffmanCoder.name
"""The coder of Deep Compression's stage 3."""


def coder_names() -> list[str]:
    """Names of the known coders, in id order."""
    return [CODERS[i].name for i in sorted(CODERS)]


def coder_by_name(name: str, **options) -> StreamCoder:
    """A coder instance by its config name, with ``options`` (its constructor arguments).

    Raises
    ------
    ValueError
        Unknown name, or an option the coder does not take or rejects.
    TypeError
        An option of the wrong type.
    """
    for cls in CODERS.values():
        if cls.name == name:
            try:
                return cls(**options)
            except TypeError as exc:
                if "argument" in str(exc):  # an option this coder does not take
                    raise ValueError(f"coder {name!r} does not take the option(s) "
                                     f"{sorted(options)}: {exc}") from None
                raise
    raise ValueError(f"unknown coder {name!r}; known: {coder_names()}")


def coder_by_id(coder_id: int) -> StreamCoder | None:
    """The coder (default options) a payload names by id; None for an unknown id."""
    cls = CODERS.get(int(coder_id)) if is_int(coder_id) else None
    return None if cls is None else cls()


__all__ = ["StreamCoder", "CODERS", "DEFAULT_CODER", "coder_names", "coder_by_name",
           "coder_by_id"]
