/* XNOR-popcount binary convolution for bsr (CPython extension `bsr_cli.bitpack._kernel`).
 *
 * One call = sign-pack the FP input, binary conv (k x k, stride 1, zero padding k/2), FP epilogue.
 * Tensors are float32 channels-last (NHWC); pointers come from torch's data_ptr() and the Python side
 * (backend.py) checks shapes, dtypes and contiguity before calling.
 *
 * Encoding. A +-1 value v is stored as the bit b = (v == -1); the binarizers of the zoo map 0 to +1, so the
 * activation bit is (x + shift_c < 0). Channels are packed 64 per uint64 word, channel c -> word c/64, bit c%64.
 *
 * Popcount identity. For +-1 vectors a, w of length n, a_i*w_i = +1 when the bits agree and -1 when they
 * differ, so with d = popcount(bits(a) XOR bits(w)) (the number of disagreements):
 *     dot(a, w) = (n - d) - d = n - 2*d.
 * Channel padding: the unused high bits of the last word are 0 in BOTH activations and weights, so they XOR
 * to 0 and add nothing to d; n counts real channels only. This is the "mask" for C_in not a multiple of 64.
 *
 * Zero padding. The reference convolves the sign map padded with ZEROS: a tap that falls outside the image
 * contributes 0, not +-1. We simply skip such taps. At output (h, w) the sum runs over the valid taps only:
 *     dot(h, w) = n_valid - 2*d_valid,    n_valid = (#taps inside the image at (h, w)) * C_in,
 * with d_valid the popcount over those taps. (Padding with +1 bits instead would add sum over the outside taps
 * of sum_c sign(w), which one would have to subtract again; skipping is simpler and exact.)
 *
 * Epilogue, per output channel o (each stage optional except the first; the order is that of bsr's BinaryUnit):
 *     y = scale[o] * dot + bias[o]                         per-channel alpha (x activation alpha), conv bias
 *     y *= cmap[n, o];  y *= smap[n, h, w]                 channel / spatial re-scaling maps
 *     y = y * scale2[o] + bias2[o]                         BatchNorm (eval) and RPReLU's -gamma, folded
 *     y = y >= 0 ? y : slope[o] * y;  y += post_bias[o]    (R)PReLU / LeakyReLU, RPReLU's zeta
 *     y += res[n, h, w, o]                                 FP shortcut
 *     y = y >= 0 ? y : post_slope[o] * y                   activation after the shortcut (LeakyReLU)
 *
 * AMX (Intel AMX-INT8, level 3, above AVX-512 VPOPCNTDQ): the same +-1 dot products as int8 tile matmuls
 * (TDPBSSD, int32 accumulation: exact). Activations are sign(x + shift) as int8 +-1 in rows padded with zero
 * columns, weights int8 +-1 in the tiles' VNNI layout (0 for padded channels); a tap outside the image is skipped
 * or reads a zero column, as the reference's zero padding. The dot is turned back into d = (n_valid - dot) / 2 so
 * that the shared epilogue runs unchanged. One TDPBSSD is 16 pixels x 16 output channels x 64 input channels.
 * Dispatch at run time: AMX -> AVX-512 VPOPCNTDQ -> AVX2 (nibble-table popcount) -> portable C, chosen with
 * __builtin_cpu_supports; each path is a function compiled for its ISA with __attribute__((target)). Every call
 * takes an ISA level (-1 = the best; kernel.py passes BSR_BITPACK_ISA's choice), so each path can be run and
 * tested on a CPU that has a better one.
 * Threads: OpenMP over bands of image rows (num_threads = the caller's thread count); see run_conv.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#define HAVE_AMX 1
#endif

enum { ISA_AUTO = -1, ISA_GENERIC = 0, ISA_AVX2 = 1, ISA_AVX512 = 2, ISA_AMX = 3 };

typedef struct {
    const float *x;          /* [N, H, W, C]  FP input */
    const float *shift;      /* [C] or [N, C] or NULL: binarizer threshold, bit = (x + shift < 0) */
    int64_t shift_stride;    /* 0: one shift per channel; C: one per sample and channel */
    const uint64_t *wbits;   /* [K, K, CW, OP] packed weight signs, output channels innermost */
    int64_t N, H, W, C, CW, O, OP, K;
    const float *scale, *bias, *smap, *cmap, *scale2, *bias2, *slope, *post_bias, *res, *post_slope;
    float *out;              /* [N, H, W, O] */
    uint64_t *abits;         /* [rows, W, CW] scratch: packed input rows prow0, prow0 + 1, ... (row = n * H + h) */
    uint64_t *aplanes;       /* AVX2 only, instead of abits: [rows, W, CW, 2] their nibble planes */
    int64_t prow0;           /* the first packed row held in abits / aplanes */
    uint64_t *wplanes;       /* AVX2 only: [K * K * CW, OP / 4, 2, 4] nibble planes of wbits, 32-byte aligned */
    float *rowsum;           /* [N, H, O] zeroed, or NULL: per output row, the sum over w of out (for global means) */
    const int8_t *wtiles;    /* AMX only: [K * K][CW][OT][16][64] int8 weight tiles (VNNI), 64-byte aligned */
    int64_t OT;              /* AMX only: output tiles of 16 channels, ceil(O / 16) */
    const float *sk;         /* or NULL: the NEXT unit's spatial map, computed on out while its rows are in cache: */
    int64_t sK;              /*   kernel [sK, sK, O], bias sb, into smap_next [N, H, W] (see run_conv) */
    float sb;
    float *smap_next;
    const uint64_t *bits_in; /* or NULL: x already packed, rows 0 .. N*H-1 in this path's packed-row format (skip packing) */
    uint64_t *bits_out;      /* or NULL: the NEXT unit's packed input, sign(out + shift_out), written row by row */
    const float *shift_out;  /*   right after the epilogue (the next call's bits_in; see run_conv) */
} conv_args;

typedef void (*spatial_row_fn)(const float *, const float *, float, int64_t, int64_t, int64_t, int64_t, int64_t,
                               int64_t, float *);
static void spatial_row_generic(const float *, const float *, float, int64_t, int64_t, int64_t, int64_t, int64_t,
                                int64_t, float *);
static void spatial_row_avx2(const float *, const float *, float, int64_t, int64_t, int64_t, int64_t, int64_t,
                             int64_t, float *);
static void spatial_row_avx512(const float *, const float *, float, int64_t, int64_t, int64_t, int64_t, int64_t,
                               int64_t, float *);

/* ---------------------------------------------------------------- packing (one row of W pixels) */

static void pack_row_generic(const conv_args *a, int64_t row)
{
    const float *x = a->x + row * a->W * a->C;
    const float *shift = a->shift ? a->shift + (row / a->H) * a->shift_stride : NULL;
    uint64_t *dst = a->abits + (row - a->prow0) * a->W * a->CW;
    for (int64_t w = 0; w < a->W; w++) {
        for (int64_t cw = 0; cw < a->CW; cw++) {
            uint64_t word = 0;
            int64_t c1 = (cw + 1) * 64 < a->C ? (cw + 1) * 64 : a->C;
            for (int64_t c = cw * 64; c < c1; c++) {
                float v = x[w * a->C + c] + (shift ? shift[c] : 0.0f);
                word |= (uint64_t)(v < 0.0f) << (c - cw * 64);
            }
            dst[w * a->CW + cw] = word;
        }
    }
}

/* planes = 0: the packed words into abits; planes = 1: only their nibble planes {word & M, (word >> 4) & M} into
 * aplanes (all the AVX2 popcount reads; see popc_chunk32_avx2). */
__attribute__((target("avx2"), always_inline))
static inline void pack_row_avx2_to(const conv_args *a, int64_t row, const int planes)
{
    const float *x = a->x + row * a->W * a->C;
    const float *shift = a->shift ? a->shift + (row / a->H) * a->shift_stride : NULL;
    uint64_t *dst = planes ? a->aplanes + (row - a->prow0) * a->W * a->CW * 2 : a->abits + (row - a->prow0) * a->W * a->CW;
    const __m256 zero = _mm256_setzero_ps();
    const uint64_t m = 0x0f0f0f0f0f0f0f0fULL;
    const int64_t full = a->C / 64;
    for (int64_t w = 0; w < a->W; w++) {
        const float *xp = x + w * a->C;
        for (int64_t cw = 0; cw < a->CW; cw++) {
            uint64_t word = 0;
            if (cw < full) {                          /* all 64 channels: eight unmasked compares */
                const float *xq = xp + cw * 64, *sq = shift ? shift + cw * 64 : NULL;
                for (int q = 0; q < 8; q++) {
                    __m256 v = _mm256_loadu_ps(xq + 8 * q);
                    if (sq)
                        v = _mm256_add_ps(v, _mm256_loadu_ps(sq + 8 * q));
                    word |= (uint64_t)(uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ)) << (8 * q);
                }
                if (planes)
                    dst[2 * (w * a->CW + cw)] = word & m, dst[2 * (w * a->CW + cw) + 1] = (word >> 4) & m;
                else
                    dst[w * a->CW + cw] = word;
                continue;
            }
            for (int64_t q = 0; q < 64; q += 8) {
                int64_t c0 = cw * 64 + q;
                if (c0 >= a->C)
                    break;
                if (c0 + 8 <= a->C) {
                    __m256 v = _mm256_loadu_ps(xp + c0);
                    if (shift)
                        v = _mm256_add_ps(v, _mm256_loadu_ps(shift + c0));
                    word |= (uint64_t)_mm256_movemask_ps(_mm256_cmp_ps(v, zero, _CMP_LT_OQ)) << q;
                } else {
                    for (int64_t c = c0; c < a->C; c++) {
                        float v = xp[c] + (shift ? shift[c] : 0.0f);
                        word |= (uint64_t)(v < 0.0f) << (c - cw * 64);
                    }
                }
            }
            if (planes)
                dst[2 * (w * a->CW + cw)] = word & m, dst[2 * (w * a->CW + cw) + 1] = (word >> 4) & m;
            else
                dst[w * a->CW + cw] = word;
        }
    }
}

__attribute__((target("avx2")))
static void pack_row_avx2(const conv_args *a, int64_t row)
{
    pack_row_avx2_to(a, row, 0);
}

__attribute__((target("avx2")))
static void pack_planes_row_avx2(const conv_args *a, int64_t row)
{
    pack_row_avx2_to(a, row, 1);
}

__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2")))
static void pack_row_avx512(const conv_args *a, int64_t row)
{
    const float *x = a->x + row * a->W * a->C;
    const float *shift = a->shift ? a->shift + (row / a->H) * a->shift_stride : NULL;
    uint64_t *dst = a->abits + (row - a->prow0) * a->W * a->CW;
    const __m512 zero = _mm512_setzero_ps();
    const int64_t full = a->C / 64;                   /* words with all 64 channels: four unmasked compares */
    for (int64_t w = 0; w < a->W; w++) {
        const float *xp = x + w * a->C;
        for (int64_t cw = 0; cw < full; cw++) {
            const float *xq = xp + cw * 64;
            __m512 v0 = _mm512_loadu_ps(xq), v1 = _mm512_loadu_ps(xq + 16);
            __m512 v2 = _mm512_loadu_ps(xq + 32), v3 = _mm512_loadu_ps(xq + 48);
            if (shift) {
                const float *sq = shift + cw * 64;
                v0 = _mm512_add_ps(v0, _mm512_loadu_ps(sq)), v1 = _mm512_add_ps(v1, _mm512_loadu_ps(sq + 16));
                v2 = _mm512_add_ps(v2, _mm512_loadu_ps(sq + 32)), v3 = _mm512_add_ps(v3, _mm512_loadu_ps(sq + 48));
            }
            dst[w * a->CW + cw] = (uint64_t)_mm512_cmp_ps_mask(v0, zero, _CMP_LT_OQ)
                                | (uint64_t)_mm512_cmp_ps_mask(v1, zero, _CMP_LT_OQ) << 16
                                | (uint64_t)_mm512_cmp_ps_mask(v2, zero, _CMP_LT_OQ) << 32
                                | (uint64_t)_mm512_cmp_ps_mask(v3, zero, _CMP_LT_OQ) << 48;
        }
        for (int64_t cw = full; cw < a->CW; cw++) {   /* the last, partial word: masked loads */
            uint64_t word = 0;
            for (int64_t q = 0; q < 64; q += 16) {
                int64_t c0 = cw * 64 + q;
                if (c0 >= a->C)
                    break;
                int64_t n = a->C - c0 < 16 ? a->C - c0 : 16;
                __mmask16 m = (__mmask16)((1u << n) - 1u);
                __m512 v = _mm512_maskz_loadu_ps(m, xp + c0);
                if (shift)
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, shift + c0));
                word |= (uint64_t)_mm512_mask_cmp_ps_mask(m, v, zero, _CMP_LT_OQ) << q;
            }
            dst[w * a->CW + cw] = word;
        }
    }
}

/* ---------------------------------------------------------------- popcounts (one output row) */
/* For the pixels w0 <= w < w1 of row h: pc[(w - w0) * OP + o] = d_valid(h, w, o), the popcount of XOR over the
 * valid taps, and nv[w - w0] = n_valid. OP % 8 == 0. A row is done in chunks of pixels (out_chunk) so that pc
 * stays in L1 beside the weights between the popcounts and the epilogue (AVX-512 64->64 at 96x96, 1 thread: 0.91 ms
 * with whole rows, 0.62 with chunks of 16 pixels, 0.87 with 32). */

static inline void tap_range(int64_t i, int64_t n, int64_t k, int64_t *k0, int64_t *k1)
{
    int64_t p = k / 2;
    *k0 = p - i > 0 ? p - i : 0;                 /* first tap with i + t - p >= 0 */
    *k1 = n - i + p < k ? n - i + p : k;         /* one past the last tap with i + t - p <= n - 1 */
}

static void popc_row_generic(const conv_args *a, int64_t n, int64_t h, int64_t w0, int64_t w1, int32_t *pc,
                             int32_t *nv)
{
    /* fields in locals: the popcount may be a libgcc call, after which a->... would be re-read */
    const int64_t K = a->K, p = K / 2, CW = a->CW, OP = a->OP, O = a->O, W = a->W, C = a->C;
    const uint64_t *abits = a->abits + (n * a->H + h - p - a->prow0) * W * CW, *wbits = a->wbits;
    int64_t kh0, kh1;
    tap_range(h, a->H, K, &kh0, &kh1);
    for (int64_t w = w0; w < w1; w++) {
        int64_t kw0, kw1;
        tap_range(w, W, K, &kw0, &kw1);
        nv[w - w0] = (int32_t)((kh1 - kh0) * (kw1 - kw0) * C);
        for (int64_t o = 0; o < O; o++) {
            int64_t d = 0;
            for (int64_t kh = kh0; kh < kh1; kh++)
                for (int64_t kw = kw0; kw < kw1; kw++) {
                    const uint64_t *ip = abits + (kh * W + (w + kw - p)) * CW;   /* input row h + kh - p */
                    const uint64_t *wp = wbits + (kh * K + kw) * CW * OP + o;
                    for (int64_t cw = 0; cw < CW; cw++)
                        d += __builtin_popcountll(ip[cw] ^ wp[cw * OP]);
                }
            pc[(w - w0) * OP + o] = (int32_t)d;
        }
    }
}

/* AVX2 has no vector popcount: count the bits of each nibble with a 16-entry table (vpshufb). Two identities
 * take most of the work out of the inner loop. (1) AND and shifts distribute over XOR: with M = 0x0f0f..0f,
 *     (a ^ w) & M = (a & M) ^ (w & M),   ((a ^ w) >> 4) & M = ((a >> 4) & M) ^ ((w >> 4) & M),
 * so the nibble planes of the weights are made once per call (avx2_weight_planes) and those of the activations
 * once per packed word, by the packing (pack_planes_row_avx2); per 4 output channels and tap-word the loop is then
 * 2 vpxor, 2 vpshufb, 2 vpaddb (6 uops; it was 9 with the shift, 2 masks, vpsadbw and vpaddq per tap).
 * (2) The horizontal byte sum (vpsadbw) is deferred: each byte of the counter gains at most 4 + 4 per tap-word,
 * so it holds AVX2_MAX_WORDS = 31 tap-words (248 <= 255) before it must be summed. 3x3 convs with 40 or 64
 * input channels have 9 tap-words (<= 72 per byte: one sum per output); with 256 channels they have 36
 * (up to 288), so the taps are summed in chunks of 31. Register blocking: 8 counters (32 output channels) share
 * each broadcast activation plane. */
#define AVX2_MAX_WORDS 31

/* [K*K*CW tap-words][OP/4 groups][lo, hi][4 channels]: the weight words' low and high nibble planes. */
static void avx2_weight_planes(const conv_args *a, uint64_t *wpl)
{
    const uint64_t m = 0x0f0f0f0f0f0f0f0fULL;
    int64_t taps = a->K * a->K * a->CW, OP = a->OP;
    for (int64_t t = 0; t < taps; t++)
        for (int64_t o = 0; o < OP; o++) {
            uint64_t w = a->wbits[t * OP + o];
            uint64_t *dst = wpl + t * 2 * OP + (o / 4) * 8 + o % 4;
            dst[0] = w & m, dst[4] = (w >> 4) & m;
        }
}

/* 8 output channels (2 groups of 4) of one tap-word into byte counters A, B; lo, hi: the activation planes,
 * w: the tap-word's weight planes at the first group. */
#define AVX2_TWO_GROUPS(A, B, w)                                                                              \
    do {                                                                                                      \
        A = _mm256_add_epi8(A, _mm256_add_epi8(                                                               \
                _mm256_shuffle_epi8(lut, _mm256_xor_si256(lo, _mm256_load_si256((w)))),                       \
                _mm256_shuffle_epi8(lut, _mm256_xor_si256(hi, _mm256_load_si256((w) + 1)))));                 \
        B = _mm256_add_epi8(B, _mm256_add_epi8(                                                               \
                _mm256_shuffle_epi8(lut, _mm256_xor_si256(lo, _mm256_load_si256((w) + 2))),                   \
                _mm256_shuffle_epi8(lut, _mm256_xor_si256(hi, _mm256_load_si256((w) + 3)))));                 \
    } while (0)

/* Byte counters A, B (4 channels each) -> 8 int32 popcounts in channel order, stored (first) or added at d. */
__attribute__((target("avx2"), always_inline))
static inline void avx2_flush2(__m256i A, __m256i B, int32_t *d, int add)
{
    const __m256i order = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7), z = _mm256_setzero_si256();
    __m256i v = _mm256_or_si256(_mm256_sad_epu8(A, z), _mm256_slli_epi64(_mm256_sad_epu8(B, z), 32));
    v = _mm256_permutevar8x32_epi32(v, order);   /* each qword sum < 2^32 */
    _mm256_storeu_si256((__m256i *)d, add ? _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)d), v) : v);
}

#define AVX2_LUT _mm256_setr_epi8(0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4)

/* Output channels [4 q, 4 q + 32) of one pixel over its tap-words t0 <= t < t1 (at most AVX2_MAX_WORDS):
 * px + off[t] -> the activation planes (lo, hi) of tap-word t (px: the pixel's own planes), wp[t] -> its weight
 * planes. 8 byte counters in registers; dst[0..32) = (add ? dst + : ) the popcounts. One chunk per call, and no
 * tree-PRE: otherwise GCC 12 keeps the flush's constants in registers across the loop and spills 1-3 counters and
 * copies the others (checked with objdump: the loop is then 16 vpxor, 16 vpshufb, 16 vpaddb, 2 vpbroadcastq). */
__attribute__((target("avx2"), noinline, optimize("no-tree-pre")))
static void popc_chunk32_avx2(const uint64_t *px, const int64_t *off, const __m256i *const *wp, int64_t t0,
                              int64_t t1, int64_t q, int32_t *dst, int add)
{
    const __m256i lut = AVX2_LUT;
    __m256i c0 = _mm256_setzero_si256(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    for (int64_t t = t0; t < t1; t++) {
        const uint64_t *ap = px + off[t];
        const __m256i lo = _mm256_set1_epi64x((long long)ap[0]), hi = _mm256_set1_epi64x((long long)ap[1]);
        const __m256i *w = wp[t] + 2 * q;
        AVX2_TWO_GROUPS(c0, c1, w);
        AVX2_TWO_GROUPS(c2, c3, w + 4);
        AVX2_TWO_GROUPS(c4, c5, w + 8);
        AVX2_TWO_GROUPS(c6, c7, w + 12);
    }
    avx2_flush2(c0, c1, dst, add), avx2_flush2(c2, c3, dst + 8, add);
    avx2_flush2(c4, c5, dst + 16, add), avx2_flush2(c6, c7, dst + 24, add);
}

/* The same for 8 output channels [4 q, 4 q + 8). */
__attribute__((target("avx2"), noinline))
static void popc_chunk8_avx2(const uint64_t *px, const int64_t *off, const __m256i *const *wp, int64_t t0,
                             int64_t t1, int64_t q, int32_t *dst, int add)
{
    const __m256i lut = AVX2_LUT;
    __m256i c0 = _mm256_setzero_si256(), c1 = c0;
    for (int64_t t = t0; t < t1; t++) {
        const uint64_t *ap = px + off[t];
        const __m256i lo = _mm256_set1_epi64x((long long)ap[0]), hi = _mm256_set1_epi64x((long long)ap[1]);
        AVX2_TWO_GROUPS(c0, c1, wp[t] + 2 * q);
    }
    avx2_flush2(c0, c1, dst, add);
}

__attribute__((target("avx2")))
static void popc_row_avx2(const conv_args *a, int64_t n, int64_t h, int64_t w0, int64_t w1, int32_t *pc, int32_t *nv)
{
    int64_t K = a->K, p = K / 2, CW = a->CW, OP = a->OP, Q = OP / 4, kh0, kh1, kw0 = -1, kw1 = -1, nw = 0;
    tap_range(h, a->H, K, &kh0, &kh1);
    int64_t off[K * K * CW];                      /* tap-word -> offset of its activation planes from the pixel's */
    const __m256i *wp[K * K * CW];
    for (int64_t w = w0; w < w1; w++) {
        int64_t k0, k1;
        tap_range(w, a->W, K, &k0, &k1);
        if (k0 != kw0 || k1 != kw1) {             /* the same list serves every interior pixel of the row */
            kw0 = k0, kw1 = k1, nw = 0;
            for (int64_t kh = kh0; kh < kh1; kh++)
                for (int64_t kw = kw0; kw < kw1; kw++)
                    for (int64_t cw = 0; cw < CW; cw++, nw++) {
                        off[nw] = (((kh - p) * a->W + (kw - p)) * CW + cw) * 2;
                        wp[nw] = (const __m256i *)(a->wplanes + ((kh * K + kw) * CW + cw) * 2 * OP);
                    }
        }
        nv[w - w0] = (int32_t)((kh1 - kh0) * (kw1 - kw0) * a->C);
        const uint64_t *px = a->aplanes + ((n * a->H + h - a->prow0) * a->W + w) * CW * 2;
        for (int64_t t0 = 0; t0 < nw; t0 += AVX2_MAX_WORDS) {
            const int64_t t1 = nw - t0 < AVX2_MAX_WORDS ? nw : t0 + AVX2_MAX_WORDS;
            int64_t q = 0;
            for (; q + 8 <= Q; q += 8)
                popc_chunk32_avx2(px, off, wp, t0, t1, q, pc + (w - w0) * OP + 4 * q, t0 > 0);
            for (; q < Q; q += 2)
                popc_chunk8_avx2(px, off, wp, t0, t1, q, pc + (w - w0) * OP + 4 * q, t0 > 0);
        }
    }
}

#define AVX512_TARGET "avx512f,avx512dq,avx512bw,avx512vl,avx512vpopcntdq,avx2"

/* Two horizontally adjacent interior pixels (all taps valid for both): each weight vector loaded once serves
 * both pixels, 8 accumulators (2 pixels x 32 channels) stay in registers. */
__attribute__((target(AVX512_TARGET)))
static inline void popc_pair32_avx512(const conv_args *a, const uint64_t *in0, int64_t kh0, int64_t kh1, int64_t g,
                                      int32_t *dst0, int32_t *dst1)
{
    int64_t K = a->K, CW = a->CW, OP = a->OP;
    __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (int64_t kh = kh0; kh < kh1; kh++)
        for (int64_t kw = 0; kw < K; kw++) {
            const uint64_t *ip = in0 + ((kh - kh0) * a->W + kw) * CW;  /* pixel 0's tap; pixel 1's is CW further */
            const uint64_t *wp = a->wbits + (kh * K + kw) * CW * OP + g;
            for (int64_t cw = 0; cw < CW; cw++, wp += OP) {
                __m512i x0 = _mm512_set1_epi64((long long)ip[cw]), x1 = _mm512_set1_epi64((long long)ip[CW + cw]);
                __m512i w0 = _mm512_loadu_si512(wp), w1 = _mm512_loadu_si512(wp + 8);
                __m512i w2 = _mm512_loadu_si512(wp + 16), w3 = _mm512_loadu_si512(wp + 24);
                a0 = _mm512_add_epi64(a0, _mm512_popcnt_epi64(_mm512_xor_si512(x0, w0)));
                a1 = _mm512_add_epi64(a1, _mm512_popcnt_epi64(_mm512_xor_si512(x0, w1)));
                a2 = _mm512_add_epi64(a2, _mm512_popcnt_epi64(_mm512_xor_si512(x0, w2)));
                a3 = _mm512_add_epi64(a3, _mm512_popcnt_epi64(_mm512_xor_si512(x0, w3)));
                b0 = _mm512_add_epi64(b0, _mm512_popcnt_epi64(_mm512_xor_si512(x1, w0)));
                b1 = _mm512_add_epi64(b1, _mm512_popcnt_epi64(_mm512_xor_si512(x1, w1)));
                b2 = _mm512_add_epi64(b2, _mm512_popcnt_epi64(_mm512_xor_si512(x1, w2)));
                b3 = _mm512_add_epi64(b3, _mm512_popcnt_epi64(_mm512_xor_si512(x1, w3)));
            }
        }
    _mm256_storeu_si256((__m256i *)dst0, _mm512_cvtepi64_epi32(a0));
    _mm256_storeu_si256((__m256i *)(dst0 + 8), _mm512_cvtepi64_epi32(a1));
    _mm256_storeu_si256((__m256i *)(dst0 + 16), _mm512_cvtepi64_epi32(a2));
    _mm256_storeu_si256((__m256i *)(dst0 + 24), _mm512_cvtepi64_epi32(a3));
    _mm256_storeu_si256((__m256i *)dst1, _mm512_cvtepi64_epi32(b0));
    _mm256_storeu_si256((__m256i *)(dst1 + 8), _mm512_cvtepi64_epi32(b1));
    _mm256_storeu_si256((__m256i *)(dst1 + 16), _mm512_cvtepi64_epi32(b2));
    _mm256_storeu_si256((__m256i *)(dst1 + 24), _mm512_cvtepi64_epi32(b3));
}

/* One pixel, output-channel groups [g0, OP): 4 groups (32 channels) share each activation broadcast, then
 * single groups of 8. */
__attribute__((target(AVX512_TARGET)))
static inline void popc_pixel_avx512(const conv_args *a, int64_t n, int64_t h, int64_t w, int64_t kh0, int64_t kh1,
                                     int64_t kw0, int64_t kw1, int64_t g, int32_t *dst)
{
    int64_t K = a->K, p = K / 2, CW = a->CW, OP = a->OP;
    for (; g + 32 <= OP; g += 32) {
        __m512i acc0 = _mm512_setzero_si512(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
        for (int64_t kh = kh0; kh < kh1; kh++)
            for (int64_t kw = kw0; kw < kw1; kw++) {
                const uint64_t *ip = a->abits + ((n * a->H + h + kh - p - a->prow0) * a->W + (w + kw - p)) * CW;
                const uint64_t *wp = a->wbits + (kh * K + kw) * CW * OP + g;
                for (int64_t cw = 0; cw < CW; cw++, wp += OP) {
                    __m512i x = _mm512_set1_epi64((long long)ip[cw]);
                    acc0 = _mm512_add_epi64(acc0, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_loadu_si512(wp))));
                    acc1 = _mm512_add_epi64(acc1, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_loadu_si512(wp + 8))));
                    acc2 = _mm512_add_epi64(acc2, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_loadu_si512(wp + 16))));
                    acc3 = _mm512_add_epi64(acc3, _mm512_popcnt_epi64(_mm512_xor_si512(x, _mm512_loadu_si512(wp + 24))));
                }
            }
        _mm256_storeu_si256((__m256i *)(dst + g), _mm512_cvtepi64_epi32(acc0));
        _mm256_storeu_si256((__m256i *)(dst + g + 8), _mm512_cvtepi64_epi32(acc1));
        _mm256_storeu_si256((__m256i *)(dst + g + 16), _mm512_cvtepi64_epi32(acc2));
        _mm256_storeu_si256((__m256i *)(dst + g + 24), _mm512_cvtepi64_epi32(acc3));
    }
    for (; g < OP; g += 8) {
        __m512i acc = _mm512_setzero_si512();
        for (int64_t kh = kh0; kh < kh1; kh++)
            for (int64_t kw = kw0; kw < kw1; kw++) {
                const uint64_t *ip = a->abits + ((n * a->H + h + kh - p - a->prow0) * a->W + (w + kw - p)) * CW;
                const uint64_t *wp = a->wbits + (kh * K + kw) * CW * OP + g;
                for (int64_t cw = 0; cw < CW; cw++, wp += OP)
                    acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(
                              _mm512_xor_si512(_mm512_set1_epi64((long long)ip[cw]), _mm512_loadu_si512(wp))));
            }
        _mm256_storeu_si256((__m256i *)(dst + g), _mm512_cvtepi64_epi32(acc));
    }
}

/* AVX-512 VPOPCNTDQ: one zmm holds 8 output channels (8 x uint64); the activation word of a tap is broadcast,
 * XORed with 8 weight words and popcounted. Interior pixels go in pairs (popc_pair32_avx512). */
__attribute__((target(AVX512_TARGET)))
static void popc_row_avx512(const conv_args *a, int64_t n, int64_t h, int64_t w0, int64_t w1, int32_t *pc,
                            int32_t *nv)
{
    int64_t K = a->K, p = K / 2, OP = a->OP, kh0, kh1;
    tap_range(h, a->H, K, &kh0, &kh1);
    for (int64_t w = w0; w < w1;) {
        int64_t kw0, kw1;
        int32_t *d = pc + (w - w0) * OP;
        tap_range(w, a->W, K, &kw0, &kw1);
        nv[w - w0] = (int32_t)((kh1 - kh0) * (kw1 - kw0) * a->C);
        if (w >= p && w + 1 + p < a->W && w + 1 < w1 && OP >= 32) {  /* w, w + 1 both have every horizontal tap */
            const uint64_t *in0 = a->abits + ((n * a->H + h + kh0 - p - a->prow0) * a->W + (w - p)) * a->CW;
            int64_t g = 0;
            for (; g + 32 <= OP; g += 32)
                popc_pair32_avx512(a, in0, kh0, kh1, g, d + g, d + OP + g);
            popc_pixel_avx512(a, n, h, w, kh0, kh1, 0, K, g, d);
            popc_pixel_avx512(a, n, h, w + 1, kh0, kh1, 0, K, g, d + OP);
            nv[w + 1 - w0] = nv[w - w0];
            w += 2;
        } else {
            popc_pixel_avx512(a, n, h, w, kh0, kh1, kw0, kw1, 0, d);
            w += 1;
        }
    }
}

/* ---------------------------------------------------------------- FP epilogue (one output row) */
/* One loop over o per pixel, compiled (always_inline) into each ISA-specific caller and vectorized there.
 * Absent stages use neutral values (ones, zeros, slope 1), which leave y unchanged exactly, so one branch-free
 * loop serves every combination. `ones`/`zeros` have O entries. */

__attribute__((always_inline))
static inline void epilogue_row(const conv_args *a, int64_t n, int64_t h, int64_t w0, int64_t w1, const int32_t *pc,
                                const int32_t *nv, const float *ones, const float *zeros, const int dots, const int64_t ld)
{
    const int64_t O = a->O;
    const float *restrict scale = a->scale, *restrict bias = a->bias;
    const float *restrict cmap = a->cmap ? a->cmap + n * O : ones;
    const float *restrict scale2 = a->scale2 ? a->scale2 : ones, *restrict bias2 = a->bias2 ? a->bias2 : zeros;
    const float *restrict slope = a->slope ? a->slope : ones, *restrict post_bias = a->post_bias ? a->post_bias : zeros;
    const float *restrict post_slope = a->post_slope ? a->post_slope : ones;
    if (!a->cmap && !a->smap && !a->scale2 && !a->slope && !a->post_bias && !a->post_slope) {
        for (int64_t w = w0; w < w1; w++) {      /* plain conv (+ shortcut): skip the neutral stages */
            const int64_t pix = (n * a->H + h) * a->W + w;
            float *restrict y = a->out + pix * O;
            const float *restrict r = a->res ? a->res + pix * O : zeros;
            const int32_t *restrict d = pc + (w - w0) * ld;
            const float nvw = (float)nv[w - w0];
            for (int64_t o = 0; o < O; o++)
                y[o] = scale[o] * (dots ? (float)d[o] : nvw - 2.0f * (float)d[o]) + bias[o] + r[o];
        }
    } else {
        for (int64_t w = w0; w < w1; w++) {
            const int64_t pix = (n * a->H + h) * a->W + w;
            float *restrict y = a->out + pix * O;
            const float *restrict r = a->res ? a->res + pix * O : zeros;
            const int32_t *restrict d = pc + (w - w0) * ld;
            const float nvw = (float)nv[w - w0], s = a->smap ? a->smap[pix] : 1.0f;
            for (int64_t o = 0; o < O; o++) {
                /* dot = n_valid - 2 d (exact in float); the AMX path hands the dots themselves (dots = 1) */
                float v = scale[o] * (dots ? (float)d[o] : nvw - 2.0f * (float)d[o]) + bias[o];
                v = v * cmap[o] * s;
                v = v * scale2[o] + bias2[o];
                v = v >= 0.0f ? v : slope[o] * v;   /* vectorized on AVX2 only with -fno-trapping-math (setup.py) */
                v = v + post_bias[o] + r[o];
                y[o] = v >= 0.0f ? v : post_slope[o] * v;
            }
        }
    }
    if (a->rowsum) {  /* the chunk just written is in L1: its channel sums cost no extra pass over memory */
        float *restrict rs = a->rowsum + (n * a->H + h) * O;
        for (int64_t w = w0; w < w1; w++) {
            const float *restrict y = a->out + ((n * a->H + h) * a->W + w) * O;
            for (int64_t o = 0; o < O; o++)
                rs[o] += y[o];
        }
    }
}

/* Pixels per chunk: 16 (4 KB of int32 popcounts at 64 output channels), up to 32 when there are fewer than 64
 * (AVX-512 64->256 at 96x96: 4.27 ms with 4-pixel chunks, 3.99 with 16). Even; the first chunk has K/2 more
 * (the left border), so that the AVX-512 path's pixel pairs never straddle two chunks. */
static inline int64_t out_chunk(const conv_args *a)
{
    int64_t c = 1024 / a->OP;
    return c < 16 ? 16 : c > 32 ? 32 : c & ~(int64_t)1;
}

/* The portable path does the whole row at once (chunks measured 3-10% slower there). */
static void out_row_generic(const conv_args *a, int64_t n, int64_t h, int32_t *pc, int32_t *nv, const float *ones,
                            const float *zeros)
{
    popc_row_generic(a, n, h, 0, a->W, pc, nv);
    epilogue_row(a, n, h, 0, a->W, pc, nv, ones, zeros, 0, a->OP);
}

__attribute__((target("avx2,fma")))
static void out_row_avx2(const conv_args *a, int64_t n, int64_t h, int32_t *pc, int32_t *nv, const float *ones,
                         const float *zeros)
{
    for (int64_t w0 = 0, c = out_chunk(a), w1 = c + a->K / 2; w0 < a->W; w0 = w1, w1 += c) {
        w1 = w1 < a->W ? w1 : a->W;
        popc_row_avx2(a, n, h, w0, w1, pc, nv);
        epilogue_row(a, n, h, w0, w1, pc, nv, ones, zeros, 0, a->OP);
    }
}

__attribute__((target(AVX512_TARGET ",fma")))
static void out_row_avx512(const conv_args *a, int64_t n, int64_t h, int32_t *pc, int32_t *nv, const float *ones,
                           const float *zeros)
{
    for (int64_t w0 = 0, c = out_chunk(a), w1 = c + a->K / 2; w0 < a->W; w0 = w1, w1 += c) {
        w1 = w1 < a->W ? w1 : a->W;
        popc_row_avx512(a, n, h, w0, w1, pc, nv);
        epilogue_row(a, n, h, w0, w1, pc, nv, ones, zeros, 0, a->OP);
    }
}

/* ---------------------------------------------------------------- AMX-INT8 path (level 3) */
#if defined(HAVE_AMX) && ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && __GNUC__ >= 11))
#define AMX_TARGET AVX512_TARGET ",fma,amx-tile,amx-int8"
#define AMX_PX 16  /* pixels per tile: the rows of the A (activation) and C (int32 dot) tiles */

/* The packed rows of this path: W + 2p + AMX_PX pixel slots (p zero columns left, p + AMX_PX right, so that a
 * 16-pixel tile load of the last chunk stays inside), each CW * 64 int8 channels (+-1, 0 above C). */
static inline int64_t amx_row_bytes(const conv_args *a)
{
    return (a->W + 2 * (a->K / 2) + AMX_PX) * a->CW * 64;
}

__attribute__((target(AMX_TARGET)))
static void pack_row_amx(const conv_args *a, int64_t row)
{
    const int64_t p = a->K / 2, CB = a->CW * 64, C = a->C;
    const float *x = a->x + row * a->W * C;
    const float *shift = a->shift ? a->shift + (row / a->H) * a->shift_stride : NULL;
    int8_t *dst = (int8_t *)a->abits + (row - a->prow0) * amx_row_bytes(a);
    const __m512 zero = _mm512_setzero_ps();
    const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1);
    memset(dst, 0, (size_t)(p * CB));
    memset(dst + (p + a->W) * CB, 0, (size_t)((p + AMX_PX) * CB));
    for (int64_t w = 0; w < a->W; w++) {
        const float *xp = x + w * C;
        for (int64_t c0 = 0; c0 < CB; c0 += 64) {
            uint64_t neg = 0, valid = 0;
            for (int64_t q = 0; q < 64 && c0 + q < C; q += 16) {
                const int64_t c = c0 + q, left = C - c < 16 ? C - c : 16;
                const __mmask16 m = (__mmask16)((1u << left) - 1u);
                __m512 v = _mm512_maskz_loadu_ps(m, xp + c);
                if (shift)
                    v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, shift + c));
                neg |= (uint64_t)_mm512_mask_cmp_ps_mask(m, v, zero, _CMP_LT_OQ) << q;
                valid |= (uint64_t)m << q;
            }
            _mm512_storeu_si512(dst + (p + w) * CB + c0, _mm512_maskz_mov_epi8(valid, _mm512_mask_blend_epi8(neg, plus, minus)));
        }
    }
}

/* The same int8 row from packed bit words (bits_in: a previous call packed this map, see run_conv): 8 bytes read
 * per pixel and 64-channel block instead of 256. */
__attribute__((target(AMX_TARGET)))
static void expand_row_amx(const conv_args *a, int64_t row)
{
    const int64_t p = a->K / 2, CW = a->CW, CB = CW * 64;
    const uint64_t *src = a->bits_in + row * a->W * CW;
    int8_t *dst = (int8_t *)a->abits + (row - a->prow0) * amx_row_bytes(a);
    const __m512i plus = _mm512_set1_epi8(1), minus = _mm512_set1_epi8(-1);
    memset(dst, 0, (size_t)(p * CB));
    memset(dst + (p + a->W) * CB, 0, (size_t)((p + AMX_PX) * CB));
    for (int64_t w = 0; w < a->W; w++)
        for (int64_t cb = 0; cb < CW; cb++) {
            const int64_t left = a->C - cb * 64;
            const __mmask64 valid = left >= 64 ? ~(__mmask64)0 : ((__mmask64)1 << left) - 1;
            _mm512_storeu_si512(dst + (p + w) * CB + cb * 64,
                                _mm512_maskz_mov_epi8(valid, _mm512_mask_blend_epi8(src[w * CW + cb], plus, minus)));
        }
}

/* Weight tiles in the VNNI layout TDPBSSD reads as B: wt[((tap * CW + cb) * OT + t) * 1024 + k4 * 64 + 4 j + r] is
 * the weight (+1 / -1) of output channel 16 t + j and input channel 64 cb + 4 k4 + r; 0 for padded channels. */
static void amx_weight_tiles(const conv_args *a, int8_t *wt)
{
    const int64_t KK = a->K * a->K, CW = a->CW, OP = a->OP, OT = a->OT;
    memset(wt, 0, (size_t)(KK * CW * OT * 1024));
    for (int64_t tap = 0; tap < KK; tap++)
        for (int64_t cb = 0; cb < CW; cb++)
            for (int64_t o = 0; o < a->O; o++) {
                const uint64_t word = a->wbits[(tap * CW + cb) * OP + o];
                int8_t *tile = wt + ((tap * CW + cb) * OT + o / 16) * 1024 + 4 * (o % 16);
                for (int64_t i = 0; i < 64 && cb * 64 + i < a->C; i++)
                    tile[(i / 4) * 64 + (i % 4)] = (int8_t)((word >> i) & 1 ? -1 : 1);
            }
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} __attribute__((packed)) amx_tile_config;

/* Tiles 0-7: 16 rows x 64 bytes (C: 16 pixels x 16 int32; A: 16 pixels x 64 int8; B: 16 x (16 channels x 4)).
 * A static object: GCC 12 dropped the stores into a local config as dead (LDTILECFG's read is not seen). */
static const amx_tile_config AMX_CONFIG __attribute__((aligned(64))) = {
    1, 0, {0}, {64, 64, 64, 64, 64, 64, 64, 64}, {16, 16, 16, 16, 16, 16, 16, 16}};

__attribute__((target(AMX_TARGET)))
static void amx_begin(void)
{
    _tile_loadconfig(&AMX_CONFIG);
}

__attribute__((target(AMX_TARGET)))
static void amx_end(void)
{
    _tile_release();
}

/* Output row h in chunks of 16 pixels: per group of 4 output tiles (64 channels) the dots accumulate in tiles 0-3
 * over the valid tap rows, every tap column (zero columns outside the image) and the CW channel blocks; A (tile 4)
 * is 16 pixels x 64 channels of a packed row, B (tiles 5, 6) a weight tile. The tiles are stored into dot (after
 * nv: [16][OT * 16] int32), which the epilogue reads as dot products (nv is unused there; pc is not used). */
__attribute__((target(AMX_TARGET)))
static void out_row_amx(const conv_args *a, int64_t n, int64_t h, int32_t *pc, int32_t *nv, const float *ones,
                        const float *zeros)
{
    const int64_t K = a->K, p = K / 2, CW = a->CW, OT = a->OT, CB = CW * 64, rb = amx_row_bytes(a);
    const int64_t ld = OT * 16;   /* int32 per pixel in dot */
    int32_t *dot = nv + AMX_PX;
    (void)pc;
    int64_t kh0, kh1;
    tap_range(h, a->H, K, &kh0, &kh1);
    for (int64_t w0 = 0; w0 < a->W; w0 += AMX_PX) {
        const int64_t w1 = w0 + AMX_PX < a->W ? w0 + AMX_PX : a->W;
        int64_t t = 0;
        for (; t + 4 <= OT; t += 4) {
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            for (int64_t kh = kh0; kh < kh1; kh++) {
                const int8_t *in = (const int8_t *)a->abits + (n * a->H + h + kh - p - a->prow0) * rb + w0 * CB;
                for (int64_t kw = 0; kw < K; kw++)
                    for (int64_t cb = 0; cb < CW; cb++) {
                        const int8_t *b = a->wtiles + (((kh * K + kw) * CW + cb) * OT + t) * 1024;
                        _tile_loadd(4, in + kw * CB + cb * 64, CB);
                        _tile_loadd(5, b, 64);
                        _tile_dpbssd(0, 4, 5);
                        _tile_loadd(6, b + 1024, 64);
                        _tile_dpbssd(1, 4, 6);
                        _tile_loadd(5, b + 2048, 64);
                        _tile_dpbssd(2, 4, 5);
                        _tile_loadd(6, b + 3072, 64);
                        _tile_dpbssd(3, 4, 6);
                    }
            }
            _tile_stored(0, dot + t * 16, ld * 4);
            _tile_stored(1, dot + t * 16 + 16, ld * 4);
            _tile_stored(2, dot + t * 16 + 32, ld * 4);
            _tile_stored(3, dot + t * 16 + 48, ld * 4);
        }
        for (; t < OT; t++) {   /* the last 1-3 output tiles one at a time */
            _tile_zero(0);
            for (int64_t kh = kh0; kh < kh1; kh++) {
                const int8_t *in = (const int8_t *)a->abits + (n * a->H + h + kh - p - a->prow0) * rb + w0 * CB;
                for (int64_t kw = 0; kw < K; kw++)
                    for (int64_t cb = 0; cb < CW; cb++) {
                        _tile_loadd(4, in + kw * CB + cb * 64, CB);
                        _tile_loadd(5, a->wtiles + (((kh * K + kw) * CW + cb) * OT + t) * 1024, 64);
                        _tile_dpbssd(0, 4, 5);
                    }
            }
            _tile_stored(0, dot + t * 16, ld * 4);
        }
        epilogue_row(a, n, h, w0, w1, dot, nv, ones, zeros, 1, ld);
    }
}

/* AMX needs the CPU (AMX-TILE, AMX-INT8) and the kernel's permission for the tile data state, asked once per
 * process (arch_prctl ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA; Linux >= 5.16). */
static int amx_usable(void)
{
    static int state = -1;
    if (state < 0)
        state = __builtin_cpu_supports("amx-tile") && __builtin_cpu_supports("amx-int8") &&
                syscall(SYS_arch_prctl, 0x1023, 18) == 0;
    return state;
}
#else
#undef HAVE_AMX
#endif

/* ---------------------------------------------------------------- dispatch + threads */

static int best_isa(void)
{
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512vpopcntdq")) {
#ifdef HAVE_AMX
        if (amx_usable())
            return ISA_AMX;
#endif
        return ISA_AVX512;
    }
    if (__builtin_cpu_supports("avx2"))
        return ISA_AVX2;
    return ISA_GENERIC;
}

/* Each thread's packed rows live in a buffer of its own kept between calls (up to SCRATCH_KEEP bytes): a fresh
 * malloc of >= 128 KB is a fresh mmap whose page faults cost more than the packing. */
#define SCRATCH_KEEP ((size_t)64 << 20)
static _Thread_local void *scratch_ptr;
static _Thread_local size_t scratch_size;

static void *scratch_get(size_t n)
{
    if (n > scratch_size) {
        free(scratch_ptr);
        scratch_ptr = malloc(n);
        scratch_size = scratch_ptr ? n : 0;
    }
    return scratch_ptr;
}

static void scratch_release(void)
{
    if (scratch_size > SCRATCH_KEEP)
        free(scratch_ptr), scratch_ptr = NULL, scratch_size = 0;
}

/* Rows in bands of ROW_BAND output rows (one thread: the whole image), one band at a time per thread (dynamic
 * schedule): a band first packs the input rows it reads into the thread's own buffer, then computes its rows, so
 * no thread waits for another's packing. There used to be a barrier between packing and computing: on a loaded
 * 2-core box one descheduled thread then held the other spinning (2 threads, load 7: 16 ms of CPU for a 1 ms
 * conv; 8-11 ms with bands). A band re-packs the 2p rows it shares with its neighbours (2 of 16 for 3x3); packing
 * each row just before its first use instead measured 3-6% slower at 1 thread. Returns -1 when out of memory. */
#define ROW_BAND 16

/* Packed-row hand-off (bits_in / bits_out): a unit whose output goes unchanged into the next binary conv, with that
 * conv's threshold fixed (not computed from its input), packs each output row for the next call right after the
 * row's epilogue, while the row is in cache; the next call then skips its packing pass over the FP map (it reads
 * no FP input but its residual). The hand-off rows are bit words [N * H, W, CW] (their nibble planes on AVX2, what
 * its popcounts read), the words pack_row makes from the FP map, so outputs are bit-identical. The AMX path expands
 * them into its int8 rows band by band (int8 rows of the whole map measured 28 % slower: 8x the bytes, out of L2). */
static int64_t handoff_row_words(int isa, int64_t W, int64_t C)
{
    return W * ((C + 63) / 64) * (isa == ISA_AVX2 ? 2 : 1);
}

static int run_conv(conv_args *a, int isa, int threads, const float *ones, const float *zeros)
{
    void (*pack)(const conv_args *, int64_t) =
        isa >= ISA_AVX512 ? pack_row_avx512 : isa == ISA_AVX2 ? pack_planes_row_avx2 : pack_row_generic;
    void (*const handoff)(const conv_args *, int64_t) = pack;   /* bits_out rows */
    void (*row)(const conv_args *, int64_t, int64_t, int32_t *, int32_t *, const float *, const float *) =
        isa == ISA_AVX512 ? out_row_avx512 : isa == ISA_AVX2 ? out_row_avx2 : out_row_generic;
    const int64_t p = a->K / 2;
    size_t row_words = (size_t)handoff_row_words(isa, a->W, a->C);
    int64_t cmax = isa == ISA_GENERIC ? a->W : out_chunk(a) + p, extra = 0;
    int scratch = !a->bits_in;   /* packed rows made per band (else read from bits_in as they are) */
#ifdef HAVE_AMX
    if (isa == ISA_AMX) {   /* int8 rows 8x the size of bit rows: bands of 16 rows even at 1 thread (L2) */
        pack = a->bits_in ? expand_row_amx : pack_row_amx, row = out_row_amx, scratch = 1;
        row_words = (size_t)amx_row_bytes(a) / 8;
        cmax = AMX_PX, extra = AMX_PX * a->OT * 16;
    }
#endif
    /* the packer of the next unit's input: this call's output as its x, the next conv's threshold */
    conv_args next = *a;
    next.x = a->out, next.C = a->O, next.CW = (a->O + 63) / 64, next.shift = a->shift_out;
    next.shift_stride = 0, next.abits = next.aplanes = a->bits_out, next.prow0 = 0;
    const int64_t band = threads > 1 || isa == ISA_AMX ? ROW_BAND : a->H, bands = (a->H + band - 1) / band;
    const spatial_row_fn srow = !a->sk ? NULL : isa >= ISA_AVX512 ? spatial_row_avx512
                              : isa == ISA_AVX2 ? spatial_row_avx2 : spatial_row_generic;
    unsigned char *sdone = srow ? calloc((size_t)(a->N * a->H), 1) : NULL;
    if (srow && !sdone)
        return -1;
    int failed = 0;
    (void)threads;
#pragma omp parallel num_threads(threads) reduction(| : failed)
    {
        /* per thread: the packed rows of one band plus p above and below (none when they are given: bits_in), and
         * the popcounts of one pixel chunk */
        uint64_t *packed = !scratch ? (uint64_t *)a->bits_in
                                    : scratch_get(sizeof(uint64_t) * row_words * (size_t)(band + 2 * p));
        int32_t *pc = malloc(sizeof(int32_t) * (size_t)(cmax * a->OP + cmax + extra));
        conv_args t = *a;
        failed = !packed || !pc;
        if (isa == ISA_AVX2)
            t.aplanes = packed;
        else
            t.abits = packed;
#ifdef HAVE_AMX
        if (isa == ISA_AMX)
            amx_begin();
#endif
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < a->N * bands; b++) {
            if (!failed) {
                const int64_t n = b / bands, h0 = (b % bands) * band;
                const int64_t h1 = h0 + band < a->H ? h0 + band : a->H;
                const int64_t r0 = h0 - p > 0 ? h0 - p : 0;      /* first input row the band reads */
                if (scratch) {
                    t.prow0 = n * a->H + r0;
                    for (int64_t r = r0; r < h1 + p && r < a->H; r++)
                        pack(&t, n * a->H + r);
                }
                for (int64_t h = h0; h < h1; h++) {
                    row(&t, n, h, pc, pc + cmax * a->OP, ones, zeros);
                    if (a->bits_out)
                        handoff(&next, n * a->H + h);
                    if (srow) {   /* next unit's map rows whose input rows all lie in [h0, h]: one row behind */
                        const int64_t ps = a->sK / 2, last = h == h1 - 1 ? h1 - 1 : h - ps;
                        for (int64_t r = h - ps < h0 ? h0 : h - ps; r <= last; r++) {
                            const int64_t lo = r - ps < 0 ? 0 : r - ps, hi = r + ps > a->H - 1 ? a->H - 1 : r + ps;
                            if (lo >= h0 && hi <= h) {
                                srow(a->out, a->sk, a->sb, a->H, a->W, a->O, a->sK, n, r, a->smap_next);
                                sdone[n * a->H + r] = 1;
                            }
                        }
                    }
                }
            }
        }
        if (srow) {   /* rows next to another band's (2 ps per band): after every band is written (barrier above) */
#pragma omp for schedule(dynamic, 4)
            for (int64_t r = 0; r < a->N * a->H; r++)
                if (!failed && !sdone[r])
                    srow(a->out, a->sk, a->sb, a->H, a->W, a->O, a->sK, r / a->H, r % a->H, a->smap_next);
        }
#ifdef HAVE_AMX
        if (isa == ISA_AMX)
            amx_end();
#endif
        free(pc);
        scratch_release();
    }
    free(sdone);
    return failed ? -1 : 0;
}

/* ---------------------------------------------------------------- spatial re-scaling map */
/* EBSR Eq. 5 / SCALES Eq. 4: S(x)[n, h, w] = sigmoid(b + sum_{taps, c} x[n, h+i-p, w+j-p, c] * k[i, j, c]), a
 * K x K conv from C channels to 1 with zero padding. As a PyTorch conv this is a 1-output-channel GEMM that
 * oneDNN runs slowly (about 2 ms at 64 x 128 x 128 on 2 cores); here it is one dot product of K*K*C per pixel.
 * Taps outside the image are skipped (zero padding). */

__attribute__((always_inline))
static inline void spatial_row(const float *x, const float *k, float b, int64_t H, int64_t W, int64_t C, int64_t K,
                               int64_t n, int64_t h, float *out)
{
    int64_t p = K / 2, kh0, kh1;
    tap_range(h, H, K, &kh0, &kh1);
    for (int64_t w = 0; w < W; w++) {
        int64_t kw0, kw1;
        tap_range(w, W, K, &kw0, &kw1);
        float z = 0.0f;
        for (int64_t i = kh0; i < kh1; i++)
            for (int64_t j = kw0; j < kw1; j++) {
                const float *restrict xp = x + ((n * H + h + i - p) * W + (w + j - p)) * C;
                const float *restrict kp = k + (i * K + j) * C;
#pragma omp simd reduction(+ : z)
                for (int64_t c = 0; c < C; c++)
                    z += xp[c] * kp[c];
            }
        out[(n * H + h) * W + w] = 1.0f / (1.0f + expf(-(z + b)));
    }
}

static void spatial_row_generic(const float *x, const float *k, float b, int64_t H, int64_t W, int64_t C, int64_t K,
                                int64_t n, int64_t h, float *out)
{
    spatial_row(x, k, b, H, W, C, K, n, h, out);
}

/* Logistic sigmoid of a row, 8 lanes at a time: as sigmoid_row_avx512 below, with 2^k put into the exponent
 * bits (no scalef on AVX2); the argument is clamped to [-87, 87], where e^t stays a normal float (sigmoid = 1
 * exactly above 87, about 1.6e-38 below -87: at most 1.6e-38 from torch there). */
__attribute__((target("avx2,fma")))
static void sigmoid_row_avx2(float *v, int64_t n)
{
    const __m256 log2e = _mm256_set1_ps(1.44269504f), ln2hi = _mm256_set1_ps(0.693359375f),
                 ln2lo = _mm256_set1_ps(-2.12194440e-4f), one = _mm256_set1_ps(1.0f);
    const float c[8] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 t = _mm256_sub_ps(_mm256_setzero_ps(), _mm256_loadu_ps(v + i));   /* t = -v */
        t = _mm256_min_ps(_mm256_max_ps(t, _mm256_set1_ps(-87.0f)), _mm256_set1_ps(87.0f));
        __m256 k = _mm256_round_ps(_mm256_mul_ps(t, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m256 r = _mm256_fnmadd_ps(k, ln2lo, _mm256_fnmadd_ps(k, ln2hi, t));
        __m256 p = _mm256_set1_ps(c[7]);
        for (int j = 6; j >= 0; j--)
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c[j]));
        __m256i e2k = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
        __m256 e = _mm256_mul_ps(p, _mm256_castsi256_ps(e2k));
        _mm256_storeu_ps(v + i, _mm256_div_ps(one, _mm256_add_ps(one, e)));
    }
    for (; i < n; i++)
        v[i] = 1.0f / (1.0f + expf(-v[i]));
}

/* 3x3 maps, 4 interior pixels at a time (as spatial_quad3_avx512, 8-channel slices, two accumulators per pixel). */
__attribute__((target("avx2,fma")))
static inline void spatial_quad3_avx2(const float *x, const float *k, int64_t H, int64_t W, int64_t C, int64_t n,
                                      int64_t h, int64_t w, int64_t kh0, int64_t kh1, float *z)
{
    __m256 acc[4][2];
    for (int q = 0; q < 4; q++)
        acc[q][0] = acc[q][1] = _mm256_setzero_ps();
    for (int64_t i = kh0; i < kh1; i++) {
        const float *xr = x + ((n * H + h + i - 1) * W + (w - 1)) * C, *kr = k + i * 3 * C;
        int64_t c = 0;
        for (; c + 16 <= C; c += 16)
            for (int u = 0; u < 2; u++) {
                const int64_t cu = c + 8 * u;
                __m256 xs[6], ks[3];
                for (int t = 0; t < 6; t++)
                    xs[t] = _mm256_loadu_ps(xr + t * C + cu);
                for (int j = 0; j < 3; j++)
                    ks[j] = _mm256_loadu_ps(kr + j * C + cu);
                for (int q = 0; q < 4; q++)
                    for (int j = 0; j < 3; j++)
                        acc[q][u] = _mm256_fmadd_ps(xs[q + j], ks[j], acc[q][u]);
            }
        for (; c < C; c += 8) {
            const int64_t left = C - c < 8 ? C - c : 8;
            const __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
            __m256 xs[6], ks[3];
            for (int t = 0; t < 6; t++)
                xs[t] = _mm256_maskload_ps(xr + t * C + c, m);
            for (int j = 0; j < 3; j++)
                ks[j] = _mm256_maskload_ps(kr + j * C + c, m);
            for (int q = 0; q < 4; q++)
                for (int j = 0; j < 3; j++)
                    acc[q][0] = _mm256_fmadd_ps(xs[q + j], ks[j], acc[q][0]);
        }
    }
    for (int q = 0; q < 4; q++) {
        __m256 s8 = _mm256_add_ps(acc[q][0], acc[q][1]);
        __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
        s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
        s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
        z[q] = _mm_cvtss_f32(s4);
    }
}

__attribute__((target("avx2,fma")))
static void spatial_row_avx2(const float *x, const float *k, float b, int64_t H, int64_t W, int64_t C, int64_t K,
                             int64_t n, int64_t h, float *out)
{
    int64_t p = K / 2, kh0, kh1;
    float *o = out + (n * H + h) * W;
    tap_range(h, H, K, &kh0, &kh1);
    for (int64_t w = 0; w < W;) {
        if (K == 3 && w >= 1 && w + 4 < W) {
            spatial_quad3_avx2(x, k, H, W, C, n, h, w, kh0, kh1, o + w);
            for (int q = 0; q < 4; q++)
                o[w + q] += b;
            w += 4;
            continue;
        }
        int64_t kw0, kw1;
        tap_range(w, W, K, &kw0, &kw1);
        float z = 0.0f;
        for (int64_t i = kh0; i < kh1; i++)
            for (int64_t j = kw0; j < kw1; j++) {
                const float *restrict xp = x + ((n * H + h + i - p) * W + (w + j - p)) * C;
                const float *restrict kp = k + (i * K + j) * C;
#pragma omp simd reduction(+ : z)
                for (int64_t c = 0; c < C; c++)
                    z += xp[c] * kp[c];
            }
        o[w] = z + b;
        w += 1;
    }
    sigmoid_row_avx2(o, W);
}

/* Logistic sigmoid 1 / (1 + exp(-v)) of a row, 16 lanes at a time. exp(t) = 2^k * e^r with k = round(t log2 e),
 * r = t - k ln 2 (|r| <= 0.35, ln 2 split in two for exactness) and e^r by its Taylor polynomial to r^7
 * (truncation < 3e-8 relative); scalef applies 2^k and saturates to 0 / inf, so sigmoid -> 1 / 0 at the ends.
 * Within 2 float ulp of torch.sigmoid. (glibc expf, called per pixel, was 35 ns here.) */
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
static void sigmoid_row_avx512(float *v, int64_t n)
{
    const __m512 log2e = _mm512_set1_ps(1.44269504f), ln2hi = _mm512_set1_ps(0.693359375f),
                 ln2lo = _mm512_set1_ps(-2.12194440e-4f), one = _mm512_set1_ps(1.0f);
    const float c[8] = {1.0f, 1.0f, 1.0f / 2, 1.0f / 6, 1.0f / 24, 1.0f / 120, 1.0f / 720, 1.0f / 5040};
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1u);
        __m512 t = _mm512_sub_ps(_mm512_setzero_ps(), _mm512_maskz_loadu_ps(m, v + i));   /* t = -v */
        t = _mm512_min_ps(_mm512_max_ps(t, _mm512_set1_ps(-104.0f)), _mm512_set1_ps(104.0f));
        __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(t, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
        __m512 r = _mm512_fnmadd_ps(k, ln2lo, _mm512_fnmadd_ps(k, ln2hi, t));
        __m512 p = _mm512_set1_ps(c[7]);
        for (int j = 6; j >= 0; j--)
            p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c[j]));
        __m512 e = _mm512_scalef_ps(p, k);
        _mm512_mask_storeu_ps(v + i, m, _mm512_div_ps(one, _mm512_add_ps(one, e)));
    }
}

/* One pixel (any K, borders): four independent accumulators (64 channels per step, masked tails), one horizontal
 * sum, so the FMA latency chain is K*K*ceil(C/64) long instead of K*K*C/16. */
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
static inline float spatial_pixel_avx512(const float *x, const float *k, int64_t H, int64_t W, int64_t C, int64_t K,
                                         int64_t n, int64_t h, int64_t w, int64_t kh0, int64_t kh1)
{
    int64_t p = K / 2, kw0, kw1;
    tap_range(w, W, K, &kw0, &kw1);
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0, acc2 = acc0, acc3 = acc0;
    for (int64_t i = kh0; i < kh1; i++)
        for (int64_t j = kw0; j < kw1; j++) {
            const float *xp = x + ((n * H + h + i - p) * W + (w + j - p)) * C;
            const float *kp = k + (i * K + j) * C;
            int64_t c = 0;
            for (; c + 64 <= C; c += 64) {
                acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(xp + c), _mm512_loadu_ps(kp + c), acc0);
                acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(xp + c + 16), _mm512_loadu_ps(kp + c + 16), acc1);
                acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(xp + c + 32), _mm512_loadu_ps(kp + c + 32), acc2);
                acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(xp + c + 48), _mm512_loadu_ps(kp + c + 48), acc3);
            }
            for (; c < C; c += 16) {
                int64_t r = C - c < 16 ? C - c : 16;
                __mmask16 m = (__mmask16)((1u << r) - 1u);
                acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, xp + c), _mm512_maskz_loadu_ps(m, kp + c), acc0);
            }
        }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

/* 3x3 maps, 4 interior pixels at a time: per tap row and 16-channel slice, the 6 input pixels the 4 outputs read
 * and the 3 kernel vectors are loaded once and feed 12 FMAs (16 accumulators: 4 pixels x 4 slices), instead of
 * 2 loads per FMA one pixel at a time (64 channels, 128x128, 1 thread: 2x fewer loads; FMA-bound). */
__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
static inline void spatial_quad3_avx512(const float *x, const float *k, int64_t H, int64_t W, int64_t C, int64_t n,
                                        int64_t h, int64_t w, int64_t kh0, int64_t kh1, float *z)
{
    __m512 acc[4][4];
    for (int q = 0; q < 4; q++)
        for (int u = 0; u < 4; u++)
            acc[q][u] = _mm512_setzero_ps();
    for (int64_t i = kh0; i < kh1; i++) {
        const float *xr = x + ((n * H + h + i - 1) * W + (w - 1)) * C, *kr = k + i * 3 * C;
        int64_t c = 0;
        for (; c + 64 <= C; c += 64)
            for (int u = 0; u < 4; u++) {
                const int64_t cu = c + 16 * u;
                __m512 xs[6], ks[3];
                for (int t = 0; t < 6; t++)
                    xs[t] = _mm512_loadu_ps(xr + t * C + cu);
                for (int j = 0; j < 3; j++)
                    ks[j] = _mm512_loadu_ps(kr + j * C + cu);
                for (int q = 0; q < 4; q++)
                    for (int j = 0; j < 3; j++)
                        acc[q][u] = _mm512_fmadd_ps(xs[q + j], ks[j], acc[q][u]);
            }
        for (; c < C; c += 16) {
            const __mmask16 m = (__mmask16)((1u << (C - c < 16 ? C - c : 16)) - 1u);
            __m512 xs[6], ks[3];
            for (int t = 0; t < 6; t++)
                xs[t] = _mm512_maskz_loadu_ps(m, xr + t * C + c);
            for (int j = 0; j < 3; j++)
                ks[j] = _mm512_maskz_loadu_ps(m, kr + j * C + c);
            for (int q = 0; q < 4; q++)
                for (int j = 0; j < 3; j++)
                    acc[q][0] = _mm512_fmadd_ps(xs[q + j], ks[j], acc[q][0]);
        }
    }
    for (int q = 0; q < 4; q++)
        z[q] = _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(acc[q][0], acc[q][1]), _mm512_add_ps(acc[q][2], acc[q][3])));
}

__attribute__((target("avx512f,avx512dq,avx512bw,avx512vl,avx2,fma")))
static void spatial_row_avx512(const float *x, const float *k, float b, int64_t H, int64_t W, int64_t C, int64_t K,
                               int64_t n, int64_t h, float *out)
{
    int64_t kh0, kh1;
    float *o = out + (n * H + h) * W;
    tap_range(h, H, K, &kh0, &kh1);
    for (int64_t w = 0; w < W;) {
        if (K == 3 && w >= 1 && w + 4 < W) {   /* w .. w + 3 and their right neighbours inside the image */
            spatial_quad3_avx512(x, k, H, W, C, n, h, w, kh0, kh1, o + w);
            for (int q = 0; q < 4; q++)
                o[w + q] += b;
            w += 4;
        } else {
            o[w] = spatial_pixel_avx512(x, k, H, W, C, K, n, h, w, kh0, kh1) + b;
            w += 1;
        }
    }
    sigmoid_row_avx512(o, W);
}

/* ---------------------------------------------------------------- Python bindings */

static int parse_isa(int isa)
{
    int best = best_isa();
    if (isa == ISA_AUTO)
        return best;
    if (isa < ISA_GENERIC || isa > best) {
        PyErr_Format(PyExc_ValueError, "ISA level %d not supported by this CPU (best is %d)", isa, best);
        return -1;
    }
    return isa;
}

#define PTR(v) ((void *)(uintptr_t)(v))



/* conv(x, shift, shift_stride, wbits, N, H, W, C, O, OP, K, scale, bias, smap, cmap, scale2, bias2, slope,
 *      post_bias, res, post_slope, out, threads, isa, rowsum, sk, sK, sb, smap_next, wtiles, bits_in, bits_out,
 *      shift_out) -- arrays are addresses (0 = absent); see conv_args. */
static PyObject *py_conv(PyObject *self, PyObject *args)
{
    unsigned long long x, shift, wbits, scale, bias, smap, cmap, scale2, bias2, slope, post_bias, res, post_slope, out;
    unsigned long long rowsum = 0, sk = 0, smap_next = 0, wtiles_given = 0, bits_in = 0, bits_out = 0, shift_out = 0;
    long long shift_stride, N, H, W, C, O, OP, K, sK = 0;
    double sb = 0.0;
    int threads, isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKLKLLLLLLLKKKKKKKKKKKii|KKLdKKKKK", &x, &shift, &shift_stride, &wbits, &N, &H, &W,
                          &C, &O, &OP, &K, &scale, &bias, &smap, &cmap, &scale2, &bias2, &slope, &post_bias, &res,
                          &post_slope, &out, &threads, &isa, &rowsum, &sk, &sK, &sb, &smap_next, &wtiles_given,
                          &bits_in, &bits_out, &shift_out))
        return NULL;
    if (sk && (!smap_next || sK <= 0 || sK % 2 == 0)) {
        PyErr_SetString(PyExc_ValueError, "bitpack conv: bad next-unit spatial map arguments");
        return NULL;
    }
    if (N <= 0 || H <= 0 || W <= 0 || C <= 0 || O <= 0 || OP < O || OP % 8 || K <= 0 || K % 2 == 0 || !x ||
        !wbits || !scale || !bias || !out || threads <= 0 || (scale2 && !bias2) ||
        (shift_stride != 0 && shift_stride != C)) {
        PyErr_SetString(PyExc_ValueError, "bitpack conv: bad arguments");
        return NULL;
    }
    if ((isa = parse_isa(isa)) < 0)
        return NULL;
    conv_args a = {PTR(x), PTR(shift), shift_stride, PTR(wbits), N, H, W, C, (C + 63) / 64, O, OP, K,
                   PTR(scale), PTR(bias), PTR(smap), PTR(cmap), PTR(scale2), PTR(bias2), PTR(slope),
                   PTR(post_bias), PTR(res), PTR(post_slope), PTR(out), NULL, NULL, 0, NULL, PTR(rowsum),
                   NULL, 0, PTR(sk), sK, (float)sb, PTR(smap_next)};
    a.bits_in = PTR(bits_in), a.bits_out = PTR(bits_out), a.shift_out = PTR(shift_out);
    float *ones = malloc(sizeof(float) * (size_t)O), *zeros = calloc((size_t)O, sizeof(float));
    int8_t *wtiles = NULL;
    if (isa == ISA_AVX2) {
        size_t wbytes = sizeof(uint64_t) * (size_t)(K * K * a.CW * 2 * OP);   /* a multiple of 128 (OP % 8 == 0) */
        a.wplanes = aligned_alloc(64, wbytes);
        if (a.wplanes)
            avx2_weight_planes(&a, a.wplanes);
    }
#ifdef HAVE_AMX
    if (isa == ISA_AMX) {   /* the caller's tiles (amx_tiles, made once per layer), else made for this call */
        a.OT = (O + 15) / 16;
        if (wtiles_given) {
            a.wtiles = PTR(wtiles_given);
        } else {
            wtiles = aligned_alloc(64, (size_t)(K * K * a.CW * a.OT * 1024));
            if (wtiles)
                amx_weight_tiles(&a, wtiles);
            a.wtiles = wtiles;
        }
    }
#endif
    if (!ones || !zeros || (isa == ISA_AVX2 && !a.wplanes) || (isa == ISA_AMX && !a.wtiles)) {
        free(ones), free(zeros), free(a.wplanes), free(wtiles);
        return PyErr_NoMemory();
    }
    for (long long o = 0; o < O; o++)
        ones[o] = 1.0f;
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = run_conv(&a, isa, threads, ones, zeros);
    Py_END_ALLOW_THREADS
    free(ones), free(zeros), free(a.wplanes), free(wtiles);
    if (rc < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* amx_tiles(wbits, C, O, OP, K, out): the AMX path's weight tiles of packed weights, into out (64-byte aligned,
 * K * K * ceil(C / 64) * ceil(O / 16) * 1024 bytes), made once per layer and passed to conv; False where this build
 * has no AMX path. */
static PyObject *py_amx_tiles(PyObject *self, PyObject *args)
{
    unsigned long long wbits, out;
    long long C, O, OP, K;
    (void)self;
    if (!PyArg_ParseTuple(args, "KLLLLK", &wbits, &C, &O, &OP, &K, &out))
        return NULL;
    if (!wbits || !out || C <= 0 || O <= 0 || OP < O || K <= 0 || (out & 63)) {
        PyErr_SetString(PyExc_ValueError, "bitpack amx_tiles: bad arguments");
        return NULL;
    }
#ifdef HAVE_AMX
    conv_args a;
    memset(&a, 0, sizeof a);
    a.wbits = PTR(wbits), a.C = C, a.CW = (C + 63) / 64, a.O = O, a.OP = OP, a.K = K, a.OT = (O + 15) / 16;
    amx_weight_tiles(&a, PTR(out));
    Py_RETURN_TRUE;
#else
    (void)C;
    Py_RETURN_FALSE;
#endif
}

/* pack(x, shift, shift_stride, N, H, W, C, out, isa): sign-pack an NHWC float map into out[N, H, W, ceil(C/64)]. */
static PyObject *py_pack(PyObject *self, PyObject *args)
{
    unsigned long long x, shift, out;
    long long shift_stride, N, H, W, C;
    int isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "KKLLLLLKi", &x, &shift, &shift_stride, &N, &H, &W, &C, &out, &isa))
        return NULL;
    if (N <= 0 || H <= 0 || W <= 0 || C <= 0 || !x || !out || (shift_stride != 0 && shift_stride != C)) {
        PyErr_SetString(PyExc_ValueError, "bitpack pack: bad arguments");
        return NULL;
    }
    if ((isa = parse_isa(isa)) < 0)
        return NULL;
    conv_args a;
    memset(&a, 0, sizeof a);
    a.x = PTR(x), a.shift = PTR(shift), a.shift_stride = shift_stride, a.N = N, a.H = H, a.W = W, a.C = C, a.CW = (C + 63) / 64;
    a.abits = PTR(out);
    void (*pack)(const conv_args *, int64_t) =
        isa >= ISA_AVX512 ? pack_row_avx512 : isa == ISA_AVX2 ? pack_row_avx2 : pack_row_generic;
    for (int64_t r = 0; r < N * H; r++)
        pack(&a, r);
    Py_RETURN_NONE;
}

/* packed_words(isa, N, H, W, C): (the ISA level that runs, uint64 words of a packed (N, H, W, C) map in that path's
 * hand-off format), for conv's bits_in / bits_out. */
static PyObject *py_packed_words(PyObject *self, PyObject *args)
{
    long long N, H, W, C;
    int isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "iLLLL", &isa, &N, &H, &W, &C))
        return NULL;
    if (N <= 0 || H <= 0 || W <= 0 || C <= 0) {
        PyErr_SetString(PyExc_ValueError, "bitpack packed_words: bad arguments");
        return NULL;
    }
    if ((isa = parse_isa(isa)) < 0)
        return NULL;
    return Py_BuildValue("iL", isa, (long long)(N * H * handoff_row_words(isa, W, C)));
}

/* spatial(x, N, H, W, C, k, K, b, out, threads, isa): out[N, H, W] = sigmoid(b + conv_KxK(x, k)), x NHWC,
 * k [K, K, C]. */
static PyObject *py_spatial(PyObject *self, PyObject *args)
{
    unsigned long long x, k, out;
    long long N, H, W, C, K;
    double b;
    int threads, isa;
    (void)self;
    if (!PyArg_ParseTuple(args, "KLLLLKLdKii", &x, &N, &H, &W, &C, &k, &K, &b, &out, &threads, &isa))
        return NULL;
    if (N <= 0 || H <= 0 || W <= 0 || C <= 0 || K <= 0 || K % 2 == 0 || !x || !k || !out || threads <= 0) {
        PyErr_SetString(PyExc_ValueError, "bitpack spatial: bad arguments");
        return NULL;
    }
    if ((isa = parse_isa(isa)) < 0)
        return NULL;
    void (*row)(const float *, const float *, float, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, float *) =
        isa >= ISA_AVX512 ? spatial_row_avx512 : isa == ISA_AVX2 ? spatial_row_avx2 : spatial_row_generic;
    const float *xp = PTR(x), *kp = PTR(k);
    float *op = PTR(out);
    float bias = (float)b;
    int64_t rows = N * H;
    (void)threads;
    Py_BEGIN_ALLOW_THREADS
#pragma omp parallel for schedule(static) num_threads(threads)
    for (int64_t r = 0; r < rows; r++)
        row(xp, kp, bias, H, W, C, K, r / H, r % H, op);
    Py_END_ALLOW_THREADS
    Py_RETURN_NONE;
}

static PyObject *py_best_isa(PyObject *self, PyObject *noargs)
{
    (void)self, (void)noargs;
    return PyLong_FromLong(best_isa());
}

/* core_ghz(n): the core clock in GHz, from n iterations of 4 dependent 64-bit multiplies (latency 3 cycles on Zen 3/4
 * and on Intel cores since Sandy Bridge) timed in this thread's CPU time (for the benchmark's cycle bounds; the clock
 * under turbo, not the TSC). A chain of `add reg, imm` read 11.4 GHz on a Sapphire Rapids Xeon, whose renamer
 * folds such adds; multiplies are not folded. */
static PyObject *py_core_ghz(PyObject *self, PyObject *args)
{
    long long n;
    (void)self;
    if (!PyArg_ParseTuple(args, "L", &n) || n <= 0)
        return PyErr_Occurred() ? NULL : (PyErr_SetString(PyExc_ValueError, "core_ghz: n > 0"), NULL);
    struct timespec t0, t1;
    uint64_t x = 3, m = 0x9E3779B97F4A7C15ull;
    Py_BEGIN_ALLOW_THREADS
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    for (long long i = 0; i < n; i++)
        __asm__ volatile("imul %1, %0\n\timul %1, %0\n\timul %1, %0\n\timul %1, %0" : "+r"(x) : "r"(m));
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
    Py_END_ALLOW_THREADS
    double s = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return PyFloat_FromDouble(s > 0 ? 12.0 * (double)n / s * 1e-9 : 0.0);
}

static PyObject *py_openmp(PyObject *self, PyObject *noargs)
{
    (void)self, (void)noargs;
#ifdef _OPENMP
    Py_RETURN_TRUE;
#else
    Py_RETURN_FALSE;
#endif
}

static PyMethodDef methods[] = {
    {"conv", py_conv, METH_VARARGS, "Fused sign-pack + XNOR-popcount conv + FP epilogue (addresses, see _kernel.c)."},
    {"pack", py_pack, METH_VARARGS, "Sign-pack an NHWC float map, 64 channels per uint64 word."},
    {"packed_words", py_packed_words, METH_VARARGS, "(ISA run, uint64 words) of a packed map in a path's row format."},
    {"amx_tiles", py_amx_tiles, METH_VARARGS, "The AMX path's int8 weight tiles of packed weights (once per layer)."},
    {"spatial", py_spatial, METH_VARARGS, "Spatial re-scaling map sigmoid(b + KxK conv C -> 1) of an NHWC float map."},
    {"best_isa", py_best_isa, METH_NOARGS, "Best ISA level on this CPU: 3 AMX-INT8, 2 AVX-512 VPOPCNTDQ, 1 AVX2, 0 portable C."},
    {"core_ghz", py_core_ghz, METH_VARARGS, "Core clock (GHz) from a timed chain of dependent adds."},
    {"openmp", py_openmp, METH_NOARGS, "Whether the extension was built with OpenMP (multi-threaded)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_kernel", "XNOR-popcount binary convolution.", -1, methods};

PyMODINIT_FUNC PyInit__kernel(void)
{
    return PyModule_Create(&module);
}
