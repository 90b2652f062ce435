"""Numba kernels over plain arrays.

This package imports only ``numpy``, ``numba`` and ``math`` (and ``llvmlite``, Numba's own code
generator, for the IR of :mod:`kernels.sqmm_avx512`); it knows nothing of layers, models or
files. Every kernel has a plain NumPy twin in :mod:`kernels.reference` that the tests compare it
against.
"""

from . import sqmm_avx512
from .augment import shift_images
from .bitpack import pack_bits, unpack_bits
from .chain import chain_forward, chain_forward_parallel
from .conv import col2im, col2im_valid, conv_output_size, im2col, im2col_valid
from .huffman import huffman_decode, huffman_encode
from .kmeans import assign_sorted, segment_sum
from .pool import (
    avgpool2d_backward,
    avgpool2d_forward,
    maxpool2d_backward,
    maxpool2d_forward,
    maxpool2d_padded_forward,
)
from .sgd import sgd_momentum, sgd_momentum_masked
from .sparse_index import count_entries, decode_relative, encode_relative
from .sqmm import (
    add_bias_relu,
    sq_col_split,
    sq_count,
    sq_decode,
    sq_encode,
    sq_matmul_t,
    sq_matvec,
    sq_row_blocks,
)
from .sqmm_avx512 import AVAILABLE as SQMM_AVX512
from .sqmm_avx512 import sq_matmul_t_avx512, sq_matvec_avx512

__all__ = [
    "im2col", "col2im", "im2col_valid", "col2im_valid", "conv_output_size",
    "maxpool2d_forward", "maxpool2d_backward", "maxpool2d_padded_forward",
    "avgpool2d_forward", "avgpool2d_backward", "shift_images", "sgd_momentum",
    "sgd_momentum_masked", "assign_sorted", "segment_sum", "pack_bits", "unpack_bits",
    "count_entries", "encode_relative", "decode_relative",
    "huffman_encode", "huffman_decode",
    "sq_count", "sq_encode", "sq_decode", "sq_row_blocks", "sq_col_split", "sq_matvec",
    "sq_matmul_t", "sq_matvec_avx512", "sq_matmul_t_avx512", "SQMM_AVX512", "sqmm_avx512",
    "add_bias_relu", "chain_forward", "chain_forward_parallel",
]
