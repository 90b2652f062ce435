"""AVX-512 sparse-quantized products straight from the packed (gap, code) entries.

Same operations, layout and arguments as :func:`kernels.sqmm.sq_matvec` and
:func:`kernels.sqmm.sq_matmul_t` (module docstring there).

:func:`sq_matvec_avx512` (batch 1) walks each row 16 entries at a time in vector registers, the
way EIE's processing elements work on a stream of (gap, code) pairs:

1. load 16 words, widen to int32 lanes;
2. ``gap + 1`` per lane, then an in-register prefix sum (4 shift-and-add steps) gives the 16
   columns, offset by the row's running column;
3. codes ``word >> ib`` look the weights up **inside registers**: a codebook of up to 32 floats
   sits in two zmm registers and one ``vpermi2ps`` picks the 16 weights (no memory load per
   weight); up to 64 floats (6-bit codes), four registers, two ``vpermi2ps`` and a blend;
   longer codebooks (7-8 bit codes) use a gather;
4. one gather reads the 16 ``x[col]``, one FMA accumulates; a masked load and masked gather do
   the last, partial group of a row (no reads past the row, no padding needed).

uint8 words (``index_bits <= 5``) first go through 64-entry blocks (:class:`_ByteBlocks`): one
64-bit multiply per eight entries replaces the prefix sum's shuffles, and the columns and codes
of 16 entries come out of the loaded words by shifts and masks (about 12 vector uops per 16
entries instead of 20); the rest of the row goes by groups of 16 as above.

:func:`sq_matmul_t_avx512` (batch N, convolutions) decodes entries one by one as the scalar
kernel does, but keeps 64 columns of a ``Yt`` row in four zmm accumulators for all the entries
of a row segment (masked loads for fewer columns).

Numba has no vector types, so the loops are written as LLVM IR in a Numba ``@intrinsic``
(llvmlite's IR builder -- llvmlite is Numba's own code generator, not a further dependency --;
the x86 intrinsics ``vpermi2var.ps.512`` and ``mask.gather.dps.512``).
It needs AVX-512F in the CPU that Numba compiles for: :data:`AVAILABLE` says whether that is
the case here, and callers (:class:`dc_engine.runtime.CompressedMatrix`) fall back to the scalar
:func:`kernels.sqmm.sq_matvec` otherwise. The NumPy twin is :func:`kernels.reference.sq_matvec`.

Measurements: docs/KERNELS.md, bench/results/kernels.json.
"""

import llvmlite.binding as llvm
import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._config import FASTMATH, jit

#: Codebooks up to this many entries are looked up in registers (two zmm and one vpermi2ps up
#: to 32 entries, four zmm, two vpermi2ps and a blend up to 64); longer ones by a gather.
REGISTER_CODEBOOK = 64

_I1 = ir.IntType(1)
_I8P = ir.IntType(8).as_pointer()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)
_F32 = ir.FloatType()
_VI = ir.VectorType(_I32, 16)
_VF = ir.VectorType(_F32, 16)
_VB = ir.VectorType(_I1, 16)


def _target_has_avx512() -> bool:
    """True when Numba compiles for a CPU with AVX-512F.

    Numba targets the host CPU unless ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` say otherwise
    (e.g. ``generic`` for a portable cache): then those decide. False under
    ``NUMBA_DISABLE_JIT=1``: an intrinsic has no pure-Python form."""
    if numba.config.DISABLE_JIT:
        return False
    features = numba.config.CPU_FEATURES
    if features is None and numba.config.CPU_NAME is None:
        try:
            return bool(llvm.get_host_cpu_features().get("avx512f", False))
        except RuntimeError:  # llvmlite cannot tell on this platform
            return False
    return "+avx512f" in (features or "").split(",")


#: Whether :func:`sq_matvec_avx512` can run here (see :func:`_target_has_avx512`).
AVAILABLE = _target_has_avx512()


def _declare(module, name, ret, args):
    return cgutils.get_or_insert_function(module, ir.FunctionType(ret, args), name)


def _splat(builder, value, vtype):
    """``value`` in every lane of a vector of type ``vtype``."""
    v = builder.insert_element(ir.Constant(vtype, ir.Undefined), value, ir.Constant(_I32, 0))
    return builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(_I32, vtype.count),
                                                    [0] * vtype.count))


def _floats(*arrays) -> bool:
    """Every argument a C-contiguous float32 Numba array type (the IR indexes memory directly,
    four bytes per element)."""
    return all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.float32
               for a in arrays)


def _words(a) -> bool:
    """A C-contiguous uint8/uint16/uint32 array type (the packed entries)."""
    return (isinstance(a, types.Array) and a.layout == "C"
            and a.dtype in (types.uint8, types.uint16, types.uint32))


def _integers(*values) -> bool:
    return all(isinstance(v, types.Integer) for v in values)


def _arrays(context, builder, signature, args, *positions):
    """The array structs (data pointer, shape, strides) of the intrinsic's array arguments."""
    return [context.make_array(signature.args[i])(context, builder, args[i]) for i in positions]


def _lanes(values):
    return ir.Constant(_VI, list(values))


def _hsum(builder, v):
    """The sum of the 16 float lanes of ``v`` (a tree of shuffles and adds)."""
    for half in (8, 4, 2, 1):
        v = builder.fadd(v, builder.shuffle_vector(
            v, v, _lanes(j + half if j < half else j for j in range(16))))
    return builder.extract_element(v, ir.Constant(_I32, 0))


def _loop(builder, name, start, stop, step, inits, body):
    """Emit ``for i in range(start, stop, step)`` (i64, ``step > 0``) carrying the values
    ``inits`` round the loop: ``body(i, values)`` emits one iteration and returns the next
    values. Returns the values after the loop (the loop head's phis), the builder positioned
    after it."""
    entry = builder.block
    head = builder.append_basic_block(f"{name}.head")
    loop = builder.append_basic_block(f"{name}.body")
    done = builder.append_basic_block(f"{name}.done")
    builder.branch(head)
    builder.position_at_end(head)
    i = builder.phi(_I64)
    i.add_incoming(start, entry)
    values = []
    for v in inits:
        values.append(builder.phi(v.type))
        values[-1].add_incoming(v, entry)
    builder.cbranch(builder.icmp_signed("<", i, stop), loop, done)
    builder.position_at_end(loop)
    new = body(i, values)
    i.add_incoming(builder.add(i, ir.Constant(_I64, step)), builder.block)
    for phi, v in zip(values, new):
        phi.add_incoming(v, builder.block)
    builder.branch(head)
    builder.position_at_end(done)
    return values


_V8I64 = ir.VectorType(_I64, 8)
_V8I32 = ir.VectorType(_I32, 8)
_V64I8 = ir.VectorType(ir.IntType(8), 64)

#: Widest gap field the 64-entry blocks of uint8 rows take: the column offsets inside a 64-bit
#: lane, ``sum(gaps) + i <= 8 * (2**ib - 1) + 7``, must fit a byte. Wider: groups of 16 only.
BLOCK_INDEX_BITS = 5


class _ByteBlocks:
    """The 64-entry block loop of :func:`_row_dot` for uint8 words (``index_bits <= 5``).

    One 64-byte load holds 64 entries, eight per 64-bit lane. One multiply of each lane's gap
    bytes by ``0x0101010101010101`` leaves in byte ``i`` the sum of the lane's gaps ``0..i``;
    plus ``i``, the column of entry ``i`` counted from the lane's first column. The lanes' first
    columns come from an exclusive prefix sum over the eight lane totals (gaps + 8; three
    shift-and-add steps on qwords) plus the running column. The 64 entries then go through four
    steps of 16 lanes, step ``c`` taking byte ``c`` of every dword (entries ``4 l + c``): dword
    ``l`` lies in 64-bit lane ``l // 2`` whatever ``c``, so the four steps share one vector of
    first columns, and widening a byte is a shift and a mask, not a cross-lane shuffle. Per 16
    entries that is about 12 vector uops besides the gather, against about 20 for a group of 16
    with its own prefix sum (four shuffles and four adds)."""

    def __init__(self, builder, ib_v, n):
        self.builder = builder
        i8 = ir.IntType(8)
        ib8 = builder.trunc(ib_v, i8)
        ib32 = builder.trunc(ib_v, _I32)
        one8 = ir.Constant(i8, 1)
        self.gap_mask = _splat(builder, builder.sub(builder.shl(one8, ib8), one8), _V64I8)
        self.code_shift = _splat(builder, ib32, _VI)
        self.code_mask = _splat(builder, builder.sub(builder.shl(ir.Constant(_I32, 1), builder.sub(
            ir.Constant(_I32, 8), ib32)), ir.Constant(_I32, 1)), _VI)
        fits = builder.icmp_signed("<=", ib_v, ir.Constant(_I64, BLOCK_INDEX_BITS))
        #: full 64-entry blocks of the row (0 when the gap field is too wide)
        self.count = builder.select(fits, builder.ashr(n, ir.Constant(_I64, 6)),
                                    ir.Constant(_I64, 0))

    def step(self, wv, acc, base, product):
        """64 entries ``wv`` (<64 x i8>) from running column ``base`` (<8 x i64>, all lanes
        equal): (acc, base) after them."""
        b = self.builder
        q = [ir.Constant(_V8I64, [v] * 8) for v in (0, 8, 32, 56, 0x0101010101010101)]
        zero_q, eight_q, q32, q56, ones_q = q
        sums = b.mul(b.bitcast(b.and_(wv, self.gap_mask), _V8I64), ones_q)
        totals = b.add(b.lshr(sums, q56), eight_q)  # columns each 64-bit lane spans
        ends = totals
        for sh in (1, 2, 4):  # inclusive prefix sum over the 8 lanes
            moved = b.shuffle_vector(zero_q, ends, ir.Constant(
                _V8I32, [0 if i < sh else 8 + i - sh for i in range(8)]))
            ends = b.add(ends, moved)
        firsts = b.add(b.sub(ends, totals), base)  # each 64-bit lane's first column
        firsts = b.bitcast(b.or_(firsts, b.shl(firsts, q32)), _VI)  # into both its dwords
        offsets = b.bitcast(b.add(b.bitcast(sums, _V64I8), ir.Constant(
            _V64I8, [i % 8 for i in range(64)])), _VI)
        words = b.bitcast(wv, _VI)
        byte = ir.Constant(_VI, [255] * 16)
        for c in range(4):
            by = ir.Constant(_VI, [8 * c] * 16)
            within = b.lshr(offsets, by) if c else offsets
            if c < 3:
                within = b.and_(within, byte)
            codes = b.lshr(words, b.add(self.code_shift, by))
            if c < 3:  # the next byte's bits above the code (byte 3: shifted out)
                codes = b.and_(codes, self.code_mask)
            acc = product(codes, b.add(within, firsts), acc, ir.Constant(_VB, [1] * 16))
        return acc, b.add(base, b.shuffle_vector(ends, ends, ir.Constant(_V8I32, [7] * 8)))

    def loop(self, row, product):
        """The block loop over ``row`` (pointer to the row's first word): (acc, base as
        <16 x i32>) after the last full block, for the groups of 16 that follow."""
        b = self.builder

        def body(j, values):
            at = b.bitcast(b.gep(row, [b.shl(j, ir.Constant(_I64, 6))]), _V64I8.as_pointer())
            return self.step(b.load(at, align=1), *values, product)

        acc, base = _loop(b, "sqb", ir.Constant(_I64, 0), self.count, 1,
                          [ir.Constant(_VF, [0.0] * 16), ir.Constant(_V8I64, [0] * 8)], body)
        column = b.trunc(b.extract_element(base, ir.Constant(_I32, 0)), _I32)
        return acc, _splat(b, column, _VI)


@intrinsic
def _row_dot(typingctx, words, k0, k1, index_bits, cbv, x):
    """``sum(cbv[code] * x[col])`` over the entries ``words[k0:k1]`` of one row (float32).

    ``words`` uint8/16/32 array, ``k0 <= k1`` and ``index_bits`` integers (passed as int64),
    ``cbv`` float32 array (exactly 32 or 64 entries: looked up in registers; any other length,
    at least one entry per code: by a gather), ``x`` float32 array with every column
    < len(x) < 2**31. Other types do not compile (the IR indexes memory directly)."""
    if not (_words(words) and _floats(cbv, x) and _integers(k0, k1, index_bits)):
        return None  # e.g. a strided or float64 x
    width = words.dtype.bitwidth
    sig = types.float32(words, types.int64, types.int64, types.int64, cbv, x)

    def codegen(context, builder, signature, args):
        _, k0_v, k1_v, ib_v, _, _ = args
        module = builder.module
        words_a, cb_a, x_a = _arrays(context, builder, signature, args, 0, 4, 5)
        wptr = words_a.data
        cbptr = cb_a.data
        cb_len = builder.extract_value(cb_a.shape, 0)
        xptr = builder.bitcast(x_a.data, _I8P)
        wvec = ir.VectorType(ir.IntType(width), 16)

        permute = _declare(module, "llvm.x86.avx512.vpermi2var.ps.512", _VF, [_VF, _VI, _VF])
        gather = _declare(module, "llvm.x86.avx512.mask.gather.dps.512", _VF,
                          [_VF, _I8P, _VI, _VB, _I32])
        fma = _declare(module, "llvm.fma.v16f32", _VF, [_VF, _VF, _VF])
        masked_load = _declare(module, f"llvm.masked.load.v16i{width}.p0", wvec,
                               [wvec.as_pointer(), _I32, _VB, wvec])

        zero_i = ir.Constant(_VI, [0] * 16)
        zero_f = ir.Constant(_VF, [0.0] * 16)
        one_i = ir.Constant(_VI, [1] * 16)
        all_on = ir.Constant(_VB, [1] * 16)
        four = ir.Constant(_I32, 4)
        ib32 = builder.trunc(ib_v, _I32)
        gap_mask = _splat(builder, builder.sub(builder.shl(ir.Constant(_I32, 1), ib32),
                                               ir.Constant(_I32, 1)), _VI)
        shift = _splat(builder, ib32, _VI)
        cb8 = builder.bitcast(cbptr, _I8P)
        bit5 = ir.Constant(_VI, [32] * 16)
        n = builder.sub(k1_v, k0_v)
        row = builder.gep(wptr, [k0_v])
        if width == 8:  # 64-entry blocks first (see _ByteBlocks), then groups of 16
            blocks = _ByteBlocks(builder, ib_v, n)
            n_blocked = builder.shl(blocks.count, ir.Constant(_I64, 6))
        else:
            blocks = None
            n_blocked = ir.Constant(_I64, 0)
        n_rest = builder.sub(n, n_blocked)
        n_full = builder.ashr(n_rest, ir.Constant(_I64, 4))
        rest = builder.trunc(builder.and_(n_rest, ir.Constant(_I64, 15)), _I32)
        tail_on = builder.icmp_unsigned("<", _lanes(range(16)), _splat(builder, rest, _VI))
        groups = builder.gep(row, [n_blocked])

        def row_sum(tables):
            """The row's sum, looking weights up in ``tables`` (two or four zmm quarters of
            the codebook) or, when empty, by a gather from the codebook."""

            def product(codes, cols, acc, lanes_on):
                """acc + codebook[codes] * x[cols] (lanes off: unchanged)."""
                if not tables:
                    weights = builder.call(gather, [zero_f, cb8, codes, lanes_on, four])
                else:  # a 32-entry lookup reads bits 0-4 of the codes only
                    weights = builder.call(permute, [tables[0], codes, tables[1]])
                    if len(tables) == 4:
                        high = builder.call(permute, [tables[2], codes, tables[3]])
                        upper = builder.icmp_unsigned("!=", builder.and_(codes, bit5), zero_i)
                        weights = builder.select(upper, high, weights)
                xs = builder.call(gather, [zero_f, xptr, cols, lanes_on, four])
                return builder.call(fma, [weights, xs, acc])

            def group(wv, acc, base, lanes_on):
                """One group of 16 entries: (acc, base) after it."""
                w32 = wv if width == 32 else builder.zext(wv, _VI)
                steps = builder.add(builder.and_(w32, gap_mask), one_i)  # gap + 1 per lane
                for sh in (1, 2, 4, 8):  # inclusive prefix sum across the 16 lanes
                    moved = builder.shuffle_vector(
                        zero_i, steps, _lanes(0 if i < sh else 16 + i - sh for i in range(16)))
                    steps = builder.add(steps, moved)
                cols = builder.sub(builder.add(base, steps), one_i)
                acc = product(builder.lshr(w32, shift), cols, acc, lanes_on)
                base = builder.add(base, builder.shuffle_vector(steps, steps, _lanes([15] * 16)))
                return acc, base

            acc0, base0 = zero_f, zero_i
            if blocks is not None:
                acc0, base0 = blocks.loop(row, product)

            def body(i, values):
                at = builder.bitcast(builder.gep(groups, [builder.shl(i, ir.Constant(_I64, 4))]),
                                     wvec.as_pointer())
                return group(builder.load(at, align=1), *values, all_on)

            acc, base = _loop(builder, "sqv", ir.Constant(_I64, 0), n_full, 1, [acc0, base0],
                              body)
            # the last 0..15 entries, masked
            at = builder.bitcast(
                builder.gep(groups, [builder.shl(n_full, ir.Constant(_I64, 4))]), wvec.as_pointer())
            last = builder.call(masked_load, [at, ir.Constant(_I32, 1), tail_on,
                                              ir.Constant(wvec, [0] * 16)])
            total, _ = group(last, acc, base, tail_on)
            return _hsum(builder, total)

        # one copy of the row loop per lookup: 32 or 64 entries in registers, else a gather
        cbvec = builder.bitcast(cbptr, _VF.as_pointer())
        finish = builder.append_basic_block("sqv.finish")
        modes = builder.append_basic_block("sqv.gather")
        switch = builder.switch(cb_len, modes)
        results = []
        for quarters in (2, 4):
            block = builder.append_basic_block(f"sqv.cb{16 * quarters}")
            switch.add_case(ir.Constant(_I64, 16 * quarters), block)
            builder.position_at_end(block)
            tables = [builder.load(builder.gep(cbvec, [ir.Constant(_I64, q)]), align=4)
                      for q in range(quarters)]
            results.append((row_sum(tables), builder.block))
            builder.branch(finish)
        builder.position_at_end(modes)
        results.append((row_sum([]), builder.block))
        builder.branch(finish)
        builder.position_at_end(finish)
        result = builder.phi(_F32)
        for value, block in results:
            result.add_incoming(value, block)
        return result

    return sig, codegen


# parallel=True: blocks of rows go to threads; each block writes only its own rows of y.
@jit(parallel=True, fastmath=FASTMATH)
def sq_matvec_avx512(words, rowptr, blocks, index_bits, cbv, x, y):
    """``y = W @ x`` for a sparse-quantized ``W``, batch 1, 16 entries per step (AVX-512).

    Parameters
    ----------
    words, rowptr, blocks, index_bits, x, y :
        As in :func:`kernels.sqmm.sq_matvec`; in addition ``x.size < 2**31`` (columns are
        int32 lanes). Not checked: run only when :data:`AVAILABLE`.
    cbv : ndarray, float32. IN: the codebook (``cbv[0] == 0``) zero-padded to 32 or 64
        entries when it has at most that many (looked up in registers); a longer codebook as
        it is (looked up by a gather). :func:`padded_codebook` makes it.

    Notes
    -----
    Sums in float32, 16 lanes per row then a tree over the lanes, so results differ from a
    float64 product by float32 rounding (and from :func:`kernels.sqmm.sq_matvec` by order).
    """
    n_blocks = blocks.shape[0] - 1
    if n_blocks == 1:
        for r in range(blocks[0], blocks[1]):
            y[r] = _row_dot(words, rowptr[r], rowptr[r + 1], index_bits, cbv, x)
        return
    for b in prange(n_blocks):
        for r in range(blocks[b], blocks[b + 1]):
            y[r] = _row_dot(words, rowptr[r], rowptr[r + 1], index_bits, cbv, x)


def padded_codebook(codebook):
    """The ``cbv`` argument of :func:`sq_matvec_avx512` for a float32 codebook."""
    codebook = np.asarray(codebook, dtype=np.float32)
    if codebook.size > REGISTER_CODEBOOK:
        return np.ascontiguousarray(codebook)
    cbv = np.zeros(32 if codebook.size <= 32 else REGISTER_CODEBOOK, dtype=np.float32)
    cbv[:codebook.size] = codebook
    return cbv


#: Columns of ``Xt`` one call of the batch intrinsic keeps in registers (four zmm accumulators).
REGISTER_COLS = 64


@intrinsic
def _segment_update(typingctx, words, k0, k1, col0, index_bits, codebook, xt, n0, nn, yt, r,
                    first):
    """``yt[r, n0:n0+nn] (+)= sum(codebook[code] * xt[col, n0:n0+nn])`` over the entries
    ``words[k0:k1]`` (a row's entries in one column tile), starting from decoder state
    ``col0``; ``=`` when ``first`` else ``+=``. ``0 < nn <= 64``: the 64 sums live in four zmm
    accumulators for the whole segment (one load and store of the ``yt`` row per segment),
    ``xt`` rows are read by masked loads (no reads past column ``n0 + nn``). Integers are
    passed as int64; arrays other than C-contiguous float32 (and uint8/16/32 ``words``) do not
    compile: 16 columns are read as 16 consecutive floats."""
    if not (_words(words) and _floats(codebook, xt, yt)
            and _integers(k0, k1, col0, index_bits, n0, nn, r)
            and isinstance(first, types.Boolean)):
        return None  # e.g. an F-order or float64 Xt
    i64 = types.int64
    sig = types.void(words, i64, i64, i64, i64, codebook, xt, i64, i64, yt, i64, first)

    def codegen(context, builder, signature, args):
        _, k0_v, k1_v, col0_v, ib_v, _, _, n0_v, nn_v, _, r_v, first_v = args
        module = builder.module
        words_a, cb_a, xt_a, yt_a = _arrays(context, builder, signature, args, 0, 5, 6, 9)
        wptr = words_a.data
        cbptr = cb_a.data
        two = ir.Constant(_I64, 2)
        x_stride = builder.ashr(builder.extract_value(xt_a.strides, 0), two)  # in floats
        y_stride = builder.ashr(builder.extract_value(yt_a.strides, 0), two)
        vfp = _VF.as_pointer()
        masked_load = _declare(module, "llvm.masked.load.v16f32.p0", _VF, [vfp, _I32, _VB, _VF])
        masked_store = _declare(module, "llvm.masked.store.v16f32.p0", ir.VoidType(),
                                [_VF, vfp, _I32, _VB])
        fma = _declare(module, "llvm.fma.v16f32", _VF, [_VF, _VF, _VF])
        zero_f = ir.Constant(_VF, [0.0] * 16)
        align = ir.Constant(_I32, 4)
        nn32 = builder.trunc(nn_v, _I32)
        masks = [builder.icmp_signed("<", _lanes(range(16)), _splat(
            builder, builder.sub(nn32, ir.Constant(_I32, 16 * q)), _VI)) for q in range(4)]
        gap_mask = builder.sub(builder.shl(ir.Constant(_I64, 1), ib_v), ir.Constant(_I64, 1))

        def quarters(base):
            return [builder.bitcast(builder.gep(base, [ir.Constant(_I64, 16 * q)]), vfp)
                    for q in range(4)]

        def body(k, values):
            col, *accs = values
            word = builder.zext(builder.load(builder.gep(wptr, [k])), _I64)
            c = builder.add(col, builder.and_(word, gap_mask))
            weight = _splat(builder, builder.load(builder.gep(cbptr, [builder.lshr(word, ib_v)])),
                            _VF)
            x_row = builder.gep(xt_a.data, [builder.add(builder.mul(c, x_stride), n0_v)])
            return [builder.add(c, ir.Constant(_I64, 1))] + [
                builder.call(fma, [weight, builder.call(masked_load, [p, align, m, zero_f]), a])
                for p, m, a in zip(quarters(x_row), masks, accs)]

        _, *accs = _loop(builder, "sqt", k0_v, k1_v, 1, [col0_v] + [zero_f] * 4, body)
        y_row = builder.gep(yt_a.data, [builder.add(builder.mul(r_v, y_stride), n0_v)])
        is_first = builder.icmp_signed("!=", first_v, ir.Constant(first_v.type, 0))
        for p, m, acc in zip(quarters(y_row), masks, accs):
            old = builder.select(is_first, zero_f,
                                 builder.call(masked_load, [p, align, m, zero_f]))
            builder.call(masked_store, [builder.fadd(old, acc), p, align, m])
        return context.get_dummy_value()

    return sig, codegen


@jit(fastmath=FASTMATH)
def _matmul_t_task(words, split_k, split_col, r0, r1, c0, c1, index_bits, codebook, xt, yt):
    """yt[r0:r1, c0:c1] (see sq_matmul_t_avx512): column tile by column tile, each row's
    segment in 64-column register blocks."""
    n_tiles = split_k.shape[1] - 1
    if n_tiles == 0 or c1 <= c0:
        return
    for t in range(n_tiles):
        for r in range(r0, r1):
            for n0 in range(c0, c1, REGISTER_COLS):
                _segment_update(words, split_k[r, t], split_k[r, t + 1], split_col[r, t],
                                index_bits, codebook, xt, n0, min(REGISTER_COLS, c1 - n0), yt,
                                r, t == 0)


# parallel=True: row blocks (or column chunks) go to threads; each writes its own part of Yt.
@jit(parallel=True, fastmath=FASTMATH)
def sq_matmul_t_avx512(words, split_k, split_col, blocks, index_bits, codebook, xt, block_n,
                       yt):
    """``Yt = W @ Xt`` for a sparse-quantized ``W`` (AVX-512): the work split of
    :func:`kernels.sqmm.sq_matmul_t` (same arguments), but each row's entries in a column tile
    update 64 columns of ``Yt`` held in four zmm registers, loaded and stored once per row
    and tile instead of once per four entries.

    Parameters
    ----------
    words, split_k, split_col, blocks, index_bits, codebook, xt, block_n, yt :
        As in :func:`kernels.sqmm.sq_matmul_t` (``split_k`` with at least one tile). Not
        checked: run only when :data:`AVAILABLE`.

    Notes
    -----
    Float32 sums in entry order per column (fastmath allowed), so results differ from a float64
    product by float32 rounding.
    """
    n = xt.shape[1]
    n_blocks = blocks.shape[0] - 1
    if n_blocks == 1:
        for n0 in range(0, n, block_n):
            _matmul_t_task(words, split_k, split_col, blocks[0], blocks[1], n0,
                           min(n, n0 + block_n), index_bits, codebook, xt, yt)
        return
    n_chunks = (n + block_n - 1) // block_n
    if n_chunks >= n_blocks:  # wide Xt: chunks of columns, all rows (see sq_matmul_t)
        for j in prange(n_chunks):
            _matmul_t_task(words, split_k, split_col, blocks[0], blocks[n_blocks], j * block_n,
                           min(n, (j + 1) * block_n), index_bits, codebook, xt, yt)
        return
    for b in prange(n_blocks):
        for n0 in range(0, n, block_n):
            _matmul_t_task(words, split_k, split_col, blocks[b], blocks[b + 1], n0,
                           min(n, n0 + block_n), index_bits, codebook, xt, yt)
