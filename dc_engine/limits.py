"""Limits shared by the stages, the codecs, the files and the runtime (one home for each).

Changing one of these changes what files dc-engine writes or accepts: see docs/FORMAT.md.
"""

MAX_BITS = 16
"""Widest weight code, relative-index gap field and index array: codes and gaps are held in
uint16, and a codebook has at most ``2**MAX_BITS`` entries."""

MAX_CODE_LENGTH = 15
"""Longest Huffman code a layer payload can record (its code-length tables hold 4 bits per
symbol)."""

__all__ = ["MAX_BITS", "MAX_CODE_LENGTH"]
