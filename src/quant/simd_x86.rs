//! Small AVX2 building blocks shared by the x86 kernels. Every function reproduces a scalar
//! C/ggml idiom exactly; callers must have checked AVX2 (the `Isa` dispatch does).
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

/// The largest |x| over four 8-lane vectors (max is exact, so the order does not matter).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn hmax_abs(v: &[__m256; 4]) -> f32 {
    let sign = _mm256_set1_ps(-0.0);
    let a = v.map(|x| _mm256_andnot_ps(sign, x));
    let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
    let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
    let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    let m1 = _mm_max_ss(m2, _mm_shuffle_ps::<0b01>(m2, m2));
    _mm_cvtss_f32(m1)
}

/// ggml's "first value of largest magnitude" (strict `amax < |v|` scan from 0) for a
/// 32-value block already loaded as four vectors.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn first_absmax_signed(v: &[__m256; 4], block: &[f32]) -> f32 {
    // SAFETY: pure register operations on values the caller loaded.
    let amax = unsafe { hmax_abs(v) };
    if amax == 0.0 {
        return 0.0;
    }
    let sign = _mm256_set1_ps(-0.0);
    let target = _mm256_set1_ps(amax);
    let mut mask: u32 = 0;
    for (k, x) in v.iter().enumerate() {
        let eq = _mm256_cmp_ps::<_CMP_EQ_OQ>(_mm256_andnot_ps(sign, *x), target);
        mask |= (_mm256_movemask_ps(eq) as u32) << (8 * k);
    }
    // mask is non-zero for finite input; NaN input (never passed by the dispatch) yields 0.
    block
        .get(mask.trailing_zeros() as usize)
        .copied()
        .unwrap_or(0.0)
}

/// C's `roundf` (half away from zero) on 8 lanes, exactly: truncate, then step away from zero
/// when the dropped fraction is at least one half. Infinities and NaN come out as NaN or
/// themselves, which `_mm256_cvttps_epi32` then maps to `i32::MIN` like `cvttss2si`.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn round_half_away(v: __m256) -> __m256 {
    let t = _mm256_round_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
    let sign = _mm256_set1_ps(-0.0);
    let frac = _mm256_andnot_ps(sign, _mm256_sub_ps(v, t));
    let up = _mm256_cmp_ps::<_CMP_GE_OQ>(frac, _mm256_set1_ps(0.5));
    let step = _mm256_or_ps(_mm256_and_ps(v, sign), _mm256_set1_ps(1.0));
    _mm256_add_ps(t, _mm256_and_ps(up, step))
}

/// The low byte of each of 8 i32 lanes, in order, in the low 64 bits (C's `(int8_t)` cast).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn low_bytes_8(q: __m256i) -> __m128i {
    let pick = _mm256_setr_epi8(
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, //
        0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1,
    );
    let b = _mm256_shuffle_epi8(q, pick);
    let joined = _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 1, 1, 1, 1, 1));
    _mm256_castsi256_si128(joined)
}

/// The parts of a 32-element ggml block (Q4_0/Q4_1/Q5_0/Q5_1 layouts).
pub(crate) struct Block32 {
    pub d: f32,
    /// The minimum added after the multiply (the `_1` types).
    pub m: Option<f32>,
    /// Byte j: element j in the low nibble, element j+16 in the high nibble.
    pub qs: [u8; 16],
    /// Bit e is bit 4 of element e (the Q5 types).
    pub qh: Option<u32>,
    /// Subtracted from each code before scaling (8 or 16 for the `_0` types, else 0).
    pub offset: i32,
}

/// Dequantize 32-element blocks: `(code − offset)·d`, plus `m` where given, each a separately
/// rounded operation as in ggml's scalar code. `parts` only reads fields; all vector work is
/// here, under the AVX2 target feature.
#[target_feature(enable = "avx2")]
// Kept out of line: inlined into the per-format wrappers, LLVM produced a loop three times
// slower for Q5_1 (measured with `cargo bench --bench quant`).
#[inline(never)]
pub(crate) unsafe fn dequant_blocks_32<B>(
    blocks: &[B],
    out: &mut [f32],
    parts: impl Fn(&B) -> Block32,
) {
    let m4 = _mm_set1_epi8(0x0F);
    let one = _mm256_set1_epi32(1);
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let p = parts(b);
        // SAFETY: qs is 16 bytes; o holds 32 floats (four 8-lane stores).
        let raw = unsafe { _mm_loadu_si128(p.qs.as_ptr() as *const __m128i) };
        let lo = _mm_and_si128(raw, m4);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), m4);
        let groups = [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)];
        let vd = _mm256_set1_ps(p.d);
        let off = _mm256_set1_epi32(p.offset);
        for (k, g) in groups.into_iter().enumerate() {
            let mut q = _mm256_cvtepu8_epi32(g);
            if let Some(qh) = p.qh {
                let shifts = _mm256_add_epi32(lane, _mm256_set1_epi32(8 * k as i32));
                let bits =
                    _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32(qh as i32), shifts), one);
                q = _mm256_or_si256(q, _mm256_slli_epi32::<4>(bits));
            }
            q = _mm256_sub_epi32(q, off);
            let mut y = _mm256_mul_ps(_mm256_cvtepi32_ps(q), vd);
            if let Some(m) = p.m {
                y = _mm256_add_ps(y, _mm256_set1_ps(m));
            }
            // SAFETY: see above.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr().add(8 * k), y) };
        }
    }
}

/// The 32 4-bit codes of a ggml 32-element block (byte j: element j low, j+16 high) as four
/// 8-lane i32 vectors in element order.
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn nibbles_32(qs: &[u8; 16]) -> [__m256i; 4] {
    // SAFETY: reads exactly the 16 bytes of `qs`.
    let raw = unsafe { _mm_loadu_si128(qs.as_ptr() as *const __m128i) };
    let m4 = _mm_set1_epi8(0x0F);
    let lo = _mm_and_si128(raw, m4);
    let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), m4);
    [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)].map(|v| _mm256_cvtepu8_epi32(v))
}

/// Which 32-element asymmetric or 5-bit format `quantize_32` produces.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Q32Kind {
    Q4_1,
    Q5_0,
    Q5_1,
}

/// ggml's "first element equal to the extreme" when the extreme is zero: the scalar scans keep
/// the first zero they meet, so its sign is the first zero's sign.
#[inline(always)]
fn first_zero_signed(extreme: f32, block: &[f32]) -> f32 {
    if extreme == 0.0 {
        block.iter().copied().find(|&v| v == 0.0).unwrap_or(extreme)
    } else {
        extreme
    }
}

/// Quantize 32-element blocks to Q4_1, Q5_0 or Q5_1 in ggml's per-block order, 8 lanes at a
/// time; `make(d, m, qs, qh)` builds the block (`d`, `m` unrounded f32; m unused for Q5_0).
#[target_feature(enable = "avx2")]
pub(crate) unsafe fn quantize_32<B>(
    x: &[f32],
    out: &mut [B],
    kind: Q32Kind,
    make: impl Fn(f32, f32, [u8; 16], u32) -> B,
) {
    for (b, c) in out.iter_mut().zip(x.chunks_exact(32)) {
        // SAFETY: c has 32 floats (four unaligned 8-lane loads); stores go to locals.
        unsafe {
            let v = [0, 8, 16, 24].map(|k| _mm256_loadu_ps(c.as_ptr().add(k)));
            let (d, min, offset) = match kind {
                Q32Kind::Q5_0 => {
                    let max = first_absmax_signed(&v, c);
                    (max / -16.0, 0.0, 16.5f32)
                }
                Q32Kind::Q4_1 | Q32Kind::Q5_1 => {
                    // min/max are exact in any order; only the sign of a zero extreme depends
                    // on the scan, which first_zero_signed restores.
                    let lo = _mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3]));
                    let hi = _mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3]));
                    let mut l = [0f32; 8];
                    let mut h = [0f32; 8];
                    _mm256_storeu_ps(l.as_mut_ptr(), lo);
                    _mm256_storeu_ps(h.as_mut_ptr(), hi);
                    let min = first_zero_signed(l.iter().copied().fold(f32::MAX, f32::min), c);
                    let max = first_zero_signed(h.iter().copied().fold(-f32::MAX, f32::max), c);
                    let levels = if kind == Q32Kind::Q4_1 { 15.0 } else { 31.0 };
                    ((max - min) / levels, min, 0.5f32)
                }
            };
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let (vid, vmin, voff) = (
                _mm256_set1_ps(id),
                _mm256_set1_ps(min),
                _mm256_set1_ps(offset),
            );
            let mut codes = [0i32; 32];
            for (k, vk) in v.iter().enumerate() {
                let t = match kind {
                    Q32Kind::Q5_0 => _mm256_add_ps(_mm256_mul_ps(*vk, vid), voff),
                    _ => _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(*vk, vmin), vid), voff),
                };
                let i = _mm256_cvttps_epi32(t);
                let q = match kind {
                    // (int8_t)(·) then MIN(15 or 31, ·), in signed arithmetic
                    Q32Kind::Q4_1 => _mm256_min_epi32(
                        _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(i)),
                        _mm256_set1_epi32(15),
                    ),
                    Q32Kind::Q5_0 => _mm256_min_epi32(
                        _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(i)),
                        _mm256_set1_epi32(31),
                    ),
                    // (uint8_t)(·), no clamp
                    Q32Kind::Q5_1 => _mm256_and_si256(i, _mm256_set1_epi32(0xFF)),
                };
                _mm256_storeu_si256(codes.as_mut_ptr().add(8 * k) as *mut __m256i, q);
            }
            let mut qs = [0u8; 16];
            let mut qh = 0u32;
            for j in 0..16 {
                let (q0, q1) = (codes[j] as u32, codes[j + 16] as u32);
                // Q4_1 ORs the whole low byte (ggml does not mask it); the Q5 types mask.
                qs[j] = if kind == Q32Kind::Q4_1 {
                    (q0 as u8) | ((q1 as u8) << 4)
                } else {
                    ((q0 & 0xF) | ((q1 & 0xF) << 4)) as u8
                };
                qh |= ((q0 & 0x10) >> 4) << j;
                qh |= ((q1 & 0x10) >> 4) << (j + 16);
            }
            *b = make(d, min, qs, qh);
        }
    }
}

/// The 6-bit codes (0..63, not yet offset by −32) of 4 × 16 elements of a Q6_K half-block:
/// elements `16g..16g+16` of its four 32-element quarters, from the `ql` bytes at `ql0`
/// (quarters 0, 2), `ql1` (quarters 1, 3) and the `qh` bytes holding their high 2 bits.
#[inline(always)]
pub(crate) fn q6k_codes(ql0: __m128i, ql1: __m128i, qh: __m128i) -> [__m128i; 4] {
    // SAFETY: SSE2 register operations, part of the x86-64 baseline.
    unsafe {
        let m4 = _mm_set1_epi8(0x0F);
        let m3 = _mm_set1_epi8(3);
        [
            _mm_or_si128(
                _mm_and_si128(ql0, m4),
                _mm_slli_epi16::<4>(_mm_and_si128(qh, m3)),
            ),
            _mm_or_si128(
                _mm_and_si128(ql1, m4),
                _mm_slli_epi16::<4>(_mm_and_si128(_mm_srli_epi16::<2>(qh), m3)),
            ),
            _mm_or_si128(
                _mm_and_si128(_mm_srli_epi16::<4>(ql0), m4),
                _mm_slli_epi16::<4>(_mm_and_si128(_mm_srli_epi16::<4>(qh), m3)),
            ),
            _mm_or_si128(
                _mm_and_si128(_mm_srli_epi16::<4>(ql1), m4),
                _mm_slli_epi16::<4>(_mm_and_si128(_mm_srli_epi16::<6>(qh), m3)),
            ),
        ]
    }
}
