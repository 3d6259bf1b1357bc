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
