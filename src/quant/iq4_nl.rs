//! IQ4_NL: 32 weights as indices into llama.cpp's fixed non-linear 16-level table with one f16
//! scale (18 bytes). Quantized like `quantize_iq4_nl` (what llama-quantize calls): a weighted
//! least-squares scale refined over 15 candidate scales (`ntry = 7`).
//!
//! Byte-identical to that ggml routine (llama-cpp-python 0.3.36's libggml-base) with every
//! kernel. Its final indices are recomputed from the unrounded scale, so an all-zero block is
//! `d = 0` with every index 8 (bytes `0x88`). Blocks with |x| above about 8.3e6 overflow the
//! f16 scale; above ~1.8e19 the fit is NaN, stored as the f16 NaN x86 ggml writes (0xFE00)
//! on every platform.

use super::float::{f16_bits_to_f32, f32_to_f16_bits};
use super::kquant::GROUP_MAX_EPS;
use super::{BlockFormat, Isa};
use crate::gguf::GgmlType;

/// `kvalues_iq4nl`.
pub const IQ4NL_VALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Nl {
    pub d: [u8; 2],
    pub qs: [u8; 16],
}

const _: () = assert!(size_of::<BlockIq4Nl>() == 18);

/// ggml's `best_index_int8`: nearest table entry, ties to the upper index.
#[inline]
pub(crate) fn best_index(values: &[i8; 16], x: f32) -> usize {
    if x <= values[0] as f32 {
        return 0;
    }
    if x >= values[15] as f32 {
        return 15;
    }
    let (mut ml, mut mu) = (0usize, 15usize);
    while mu - ml > 1 {
        let mav = (ml + mu) / 2;
        if x < values[mav] as f32 {
            mu = mav;
        } else {
            ml = mav;
        }
    }
    if x - (values[mu - 1] as f32) < values[mu] as f32 - x {
        mu - 1
    } else {
        mu
    }
}

const NTRY: i32 = 7;

/// The f16 bits stored for the block scale. A NaN scale (only from inputs whose squares
/// overflow, |x| > ~1.8e19, where inf − inf appears in the sums) is written as x86's default
/// NaN, negative quiet 0xFE00: that is what ggml writes on x86-64, where the NaN comes from
/// the FPU. ARM FPUs make a positive default NaN instead; canonicalising keeps qforge's bytes
/// the same on every platform and equal to x86 ggml's.
#[inline]
pub(crate) fn scale_bits(d: f32) -> u16 {
    if d.is_nan() {
        0xFE00
    } else {
        f32_to_f16_bits(d)
    }
}

/// The scale `quantize_row_iq4_nl_impl` (ntry = 7, no importance weights) picks for 32 values:
/// a weighted least-squares fit refined over 15 candidate scales. Shared by IQ4_NL (one block)
/// and IQ4_XS (each of its eight sub-blocks).
pub(crate) fn block_scale(x: &[f32]) -> f32 {
    let mut weight = [0f32; 32];
    for (w, &xi) in weight.iter_mut().zip(x) {
        *w = xi * xi;
    }
    block_scale_weighted(x, &weight)
}

/// [`block_scale`] under explicit weights (the importance-weighted path).
pub(crate) fn block_scale_weighted(x: &[f32], weight: &[f32]) -> f32 {
    let v = &IQ4NL_VALUES;
    let (mut amax, mut max) = (0f32, 0f32);
    for &xi in x {
        if xi.abs() > amax {
            amax = xi.abs();
            max = xi;
        }
    }
    if amax < GROUP_MAX_EPS {
        0.0
    } else {
        let mut d = -max / v[0] as f32;
        let mut id = 1.0 / d;
        let (mut sumqx, mut sumq2) = (0f32, 0f32);
        for (j, &xj) in x.iter().enumerate() {
            let q = v[best_index(v, id * xj)] as f32;
            let w = weight[j];
            sumqx += w * q * xj;
            sumq2 += w * q * q;
        }
        d = sumqx / sumq2;
        let mut best = d * sumqx;
        for itry in -NTRY..=NTRY {
            id = (itry + v[0] as i32) as f32 / max;
            sumqx = 0.0;
            sumq2 = 0.0;
            for (j, &xj) in x.iter().enumerate() {
                let q = v[best_index(v, id * xj)] as f32;
                let w = weight[j];
                sumqx += w * q * xj;
                sumq2 += w * q * q;
            }
            if sumq2 > 0.0 && sumqx * sumqx > best * sumq2 {
                d = sumqx / sumq2;
                best = d * sumqx;
            }
        }
        d
    }
}

impl BlockIq4Nl {
    /// The block for 32 values under `scale` (unrounded): its f16 bits and each value's index
    /// recomputed from it.
    pub(crate) fn from_scale(x: &[f32], scale: f32) -> Self {
        let v = &IQ4NL_VALUES;
        let dh = scale_bits(scale);
        // ntry > 0: final indices from the unrounded scale.
        let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let l0 = best_index(v, id * x[j]) as u8;
            let l1 = best_index(v, id * x[j + 16]) as u8;
            qs[j] = l0 | (l1 << 4);
        }
        BlockIq4Nl {
            d: dh.to_le_bytes(),
            qs,
        }
    }
}

impl BlockFormat for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::Iq4Nl;
    const ELEMS: usize = 32;

    fn quantize_block(x: &[f32]) -> Self {
        Self::from_scale(x, block_scale(x))
    }

    fn quantize_blocks(isa: Isa, x: &[f32], out: &mut [Self]) {
        #[allow(unused_mut)] // not every target has a multi-block kernel
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        if matches!(isa, Isa::Avx2 | Isa::Avx512) {
            for (group, blocks) in x.chunks_exact(256).zip(out.chunks_exact_mut(8)) {
                // SAFETY: the dispatch only passes tiers this CPU supports.
                unsafe { x86::quantize8(group, blocks) };
                done += 8;
            }
        }
        #[cfg(target_arch = "aarch64")]
        if isa == Isa::Neon {
            for (group, blocks) in x.chunks_exact(128).zip(out.chunks_exact_mut(4)) {
                // SAFETY: the dispatch only passes tiers this CPU supports.
                unsafe { neon::quantize4(group, blocks) };
                done += 4;
            }
        }
        let _ = isa;
        for (b, c) in out[done..].iter_mut().zip(x[32 * done..].chunks_exact(32)) {
            *b = Self::quantize_block(c);
        }
    }

    fn dequantize_blocks(isa: Isa, blocks: &[Self], out: &mut [f32]) {
        dequantize_with_kernels!(isa, blocks, out;
            avx512: super::simd_avx512::dequantize_iq4_nl,
            avx2: x86::dequantize,
            neon: neon::dequantize,
        )
    }

    fn dequantize_block(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        for j in 0..16 {
            out[j] = d * IQ4NL_VALUES[(self.qs[j] & 0xF) as usize] as f32;
            out[j + 16] = d * IQ4NL_VALUES[(self.qs[j] >> 4) as usize] as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::{BlockIq4Nl, IQ4NL_VALUES, NTRY};
    use crate::quant::kquant::GROUP_MAX_EPS;
    use std::arch::x86_64::*;

    /// ggml's `best_index_int8` on 8 lanes: 0 below the table, 15 above, else the lower
    /// neighbour `ml` (the number of table values ≤ x, as the binary search finds) unless
    /// `x − v[ml] ≥ v[ml+1] − x`. NaN takes the scalar search's path (ml = 14).
    #[inline(always)]
    unsafe fn best_index(x: __m256, v: &[__m256; 16], t_lo: __m256, t_hi: __m256) -> __m256i {
        // SAFETY: register-only AVX2 operations; callers have AVX2.
        unsafe {
            let mut ml = _mm256_setzero_si256();
            for vk in &v[1..15] {
                let le = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(*vk, x));
                ml = _mm256_sub_epi32(ml, le); // le is -1 where true
            }
            let nan = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_UNORD_Q>(x, x));
            ml = _mm256_blendv_epi8(ml, _mm256_set1_epi32(14), nan);
            let mu = _mm256_add_epi32(ml, _mm256_set1_epi32(1));
            let lookup = |i: __m256i| {
                let lo = _mm256_permutevar8x32_ps(t_lo, i);
                let hi = _mm256_permutevar8x32_ps(t_hi, i);
                _mm256_blendv_ps(lo, hi, _mm256_castsi256_ps(_mm256_slli_epi32::<28>(i)))
            };
            let (vl, vu) = (lookup(ml), lookup(mu));
            let lower = _mm256_cmp_ps::<_CMP_LT_OQ>(_mm256_sub_ps(x, vl), _mm256_sub_ps(vu, x));
            let mut idx = _mm256_blendv_epi8(mu, ml, _mm256_castps_si256(lower));
            let below = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LE_OQ>(x, v[0]));
            let above = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_GE_OQ>(x, v[15]));
            idx = _mm256_andnot_si256(below, idx);
            _mm256_blendv_epi8(idx, _mm256_set1_epi32(15), above)
        }
    }

    /// Eight blocks at once, lane b = block b, each lane in `quantize_iq4_nl`'s order.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize8(x: &[f32], out: &mut [BlockIq4Nl]) {
        assert!(out.len() >= 8);
        // SAFETY: same target features as this function.
        let (scales, codes) = unsafe { fit8(x) };
        for (b, blk) in out.iter_mut().take(8).enumerate() {
            let mut qs = [0u8; 16];
            for j in 0..16 {
                qs[j] = codes[j][b] as u8 | ((codes[j + 16][b] as u8) << 4);
            }
            *blk = BlockIq4Nl {
                d: super::scale_bits(scales[b]).to_le_bytes(),
                qs,
            };
        }
    }

    /// The unrounded scales [`super::block_scale`] gives for the eight 32-value blocks of
    /// `x[..256]` (one per lane), and each value's table index under its block's scale.
    #[target_feature(enable = "avx2")]
    pub unsafe fn fit8(x: &[f32]) -> ([f32; 8], [[i32; 8]; 32]) {
        assert!(x.len() >= 256);
        let table: [f32; 16] = IQ4NL_VALUES.map(|v| v as f32);
        // SAFETY (whole body): the table has 16 floats; the gathers read x[32b + j] for
        // b < 8, j < 32 (x has 256 values); stores go to local arrays.
        unsafe {
            let t_lo = _mm256_loadu_ps(table.as_ptr());
            let t_hi = _mm256_loadu_ps(table.as_ptr().add(8));
            let v: [__m256; 16] = std::array::from_fn(|k| _mm256_set1_ps(table[k]));
            let sign = _mm256_set1_ps(-0.0);
            let zero = _mm256_setzero_ps();
            let base = _mm256_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224);
            let xt: [__m256; 32] = std::array::from_fn(|j| {
                _mm256_i32gather_ps::<4>(
                    x.as_ptr(),
                    _mm256_add_epi32(base, _mm256_set1_epi32(j as i32)),
                )
            });
            let w: [__m256; 32] = std::array::from_fn(|j| _mm256_mul_ps(xt[j], xt[j]));
            let (mut amax, mut max) = (zero, zero);
            for xj in &xt {
                let ax = _mm256_andnot_ps(sign, *xj);
                let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(ax, amax);
                amax = _mm256_blendv_ps(amax, ax, gt);
                max = _mm256_blendv_ps(max, *xj, gt);
            }
            let zero_block = _mm256_cmp_ps::<_CMP_LT_OQ>(amax, _mm256_set1_ps(GROUP_MAX_EPS));
            let sums = |id: __m256| -> (__m256, __m256) {
                let (mut sumqx, mut sumq2) = (zero, zero);
                for j in 0..32 {
                    let i = best_index(_mm256_mul_ps(id, xt[j]), &v, t_lo, t_hi);
                    let q = _mm256_blendv_ps(
                        _mm256_permutevar8x32_ps(t_lo, i),
                        _mm256_permutevar8x32_ps(t_hi, i),
                        _mm256_castsi256_ps(_mm256_slli_epi32::<28>(i)),
                    );
                    let wq = _mm256_mul_ps(w[j], q);
                    sumqx = _mm256_add_ps(sumqx, _mm256_mul_ps(wq, xt[j]));
                    sumq2 = _mm256_add_ps(sumq2, _mm256_mul_ps(wq, q));
                }
                (sumqx, sumq2)
            };
            let d0 = _mm256_div_ps(_mm256_xor_ps(max, sign), v[0]);
            let (sumqx, sumq2) = sums(_mm256_div_ps(_mm256_set1_ps(1.0), d0));
            let mut d = _mm256_div_ps(sumqx, sumq2);
            let mut best = _mm256_mul_ps(d, sumqx);
            for itry in -NTRY..=NTRY {
                let id = _mm256_div_ps(_mm256_set1_ps((itry + IQ4NL_VALUES[0] as i32) as f32), max);
                let (sumqx, sumq2) = sums(id);
                let better = _mm256_and_ps(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(sumq2, zero),
                    _mm256_cmp_ps::<_CMP_GT_OQ>(
                        _mm256_mul_ps(sumqx, sumqx),
                        _mm256_mul_ps(best, sumq2),
                    ),
                );
                let dn = _mm256_div_ps(sumqx, sumq2);
                d = _mm256_blendv_ps(d, dn, better);
                best = _mm256_blendv_ps(best, _mm256_mul_ps(dn, sumqx), better);
            }
            d = _mm256_andnot_ps(zero_block, d);
            let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(d, zero);
            let id = _mm256_and_ps(nonzero, _mm256_div_ps(_mm256_set1_ps(1.0), d));
            let mut codes = [[0i32; 8]; 32];
            for j in 0..32 {
                let i = best_index(_mm256_mul_ps(id, xt[j]), &v, t_lo, t_hi);
                _mm256_storeu_si256(codes[j].as_mut_ptr() as *mut __m256i, i);
            }
            let mut scales = [0f32; 8];
            _mm256_storeu_ps(scales.as_mut_ptr(), d);
            (scales, codes)
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize(blocks: &[BlockIq4Nl], out: &mut [f32]) {
        let table: [f32; 16] = IQ4NL_VALUES.map(|v| v as f32);
        // SAFETY (whole body): the table has 16 floats (two 8-lane loads); each block has 16
        // code bytes and each output chunk 32 floats.
        unsafe {
            let t_lo = _mm256_loadu_ps(table.as_ptr());
            let t_hi = _mm256_loadu_ps(table.as_ptr().add(8));
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
                let d = _mm256_set1_ps(crate::quant::float::f16_bits_to_f32(u16::from_le_bytes(
                    b.d,
                )));
                let idx = super::super::simd_x86::nibbles_32(&b.qs);
                for (k, i) in idx.into_iter().enumerate() {
                    let lo = _mm256_permutevar8x32_ps(t_lo, i);
                    let hi = _mm256_permutevar8x32_ps(t_hi, i);
                    let sel = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(i));
                    // kv[idx] · d, the scalar order (d · kv is the same product)
                    let v = _mm256_mul_ps(d, _mm256_blendv_ps(lo, hi, sel));
                    _mm256_storeu_ps(o.as_mut_ptr().add(8 * k), v);
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{BlockIq4Nl, IQ4NL_VALUES, NTRY};
    use crate::quant::float::f16_bits_to_f32;
    use crate::quant::kquant::GROUP_MAX_EPS;
    use std::arch::aarch64::*;

    /// `kvalues_iq4nl[idx]` as f32 for 4 lanes of indices 0..=15: a byte-table lookup in which
    /// the three upper bytes of each lane index out of range (giving 0), then sign extension.
    #[inline(always)]
    unsafe fn lookup(table: int8x16_t, idx: int32x4_t) -> float32x4_t {
        // SAFETY: register-only NEON operations; the caller has NEON.
        unsafe {
            let bytes = vorrq_u32(vreinterpretq_u32_s32(idx), vdupq_n_u32(0xFFFF_FF00));
            let v = vqtbl1q_s8(table, vreinterpretq_u8_u32(bytes));
            let v = vshrq_n_s32::<24>(vshlq_n_s32::<24>(vreinterpretq_s32_s8(v)));
            vcvtq_f32_s32(v)
        }
    }

    /// ggml's `best_index_int8` on 4 lanes: 0 below the table, 15 above, else the lower
    /// neighbour `ml` (the number of table values ≤ x among v[1..15], which is what the
    /// binary search finds) unless `x − v[ml] ≥ v[ml+1] − x`. NaN takes the scalar search's
    /// path (ml = 14, then 15).
    #[inline(always)]
    unsafe fn best_index(x: float32x4_t, v: &[float32x4_t; 16], table: int8x16_t) -> int32x4_t {
        // SAFETY: register-only NEON operations; the caller has NEON.
        unsafe {
            let mut ml = vdupq_n_s32(0);
            for vk in &v[1..15] {
                // the mask is all ones (−1) where v[k] ≤ x
                ml = vsubq_s32(ml, vreinterpretq_s32_u32(vcleq_f32(*vk, x)));
            }
            let nan = vmvnq_u32(vceqq_f32(x, x));
            ml = vbslq_s32(nan, vdupq_n_s32(14), ml);
            let mu = vaddq_s32(ml, vdupq_n_s32(1));
            let (vl, vu) = (lookup(table, ml), lookup(table, mu));
            let lower = vcltq_f32(vsubq_f32(x, vl), vsubq_f32(vu, x));
            let idx = vbslq_s32(lower, ml, mu);
            let idx = vbslq_s32(vcleq_f32(x, v[0]), vdupq_n_s32(0), idx);
            vbslq_s32(vcgeq_f32(x, v[15]), vdupq_n_s32(15), idx)
        }
    }

    /// Four blocks at once, lane b = block b, each lane in `quantize_iq4_nl`'s order.
    #[target_feature(enable = "neon")]
    pub unsafe fn quantize4(x: &[f32], out: &mut [BlockIq4Nl]) {
        assert!(x.len() >= 128 && out.len() >= 4);
        // SAFETY (whole body): the table has 16 bytes; indices into x are 32b + j < 128;
        // stores go to local 4-lane arrays.
        unsafe {
            let table = vld1q_s8(IQ4NL_VALUES.as_ptr());
            let v: [float32x4_t; 16] = std::array::from_fn(|k| vdupq_n_f32(IQ4NL_VALUES[k] as f32));
            let zero = vdupq_n_f32(0.0);
            let xt: [float32x4_t; 32] = std::array::from_fn(|j| {
                let lanes: [f32; 4] = std::array::from_fn(|b| x[32 * b + j]);
                vld1q_f32(lanes.as_ptr())
            });
            let w: [float32x4_t; 32] = std::array::from_fn(|j| vmulq_f32(xt[j], xt[j]));
            let (mut amax, mut max) = (zero, zero);
            for xj in &xt {
                let ax = vabsq_f32(*xj);
                let gt = vcgtq_f32(ax, amax);
                amax = vbslq_f32(gt, ax, amax);
                max = vbslq_f32(gt, *xj, max);
            }
            let zero_block = vcltq_f32(amax, vdupq_n_f32(GROUP_MAX_EPS));
            let sums = |id: float32x4_t| -> (float32x4_t, float32x4_t) {
                let (mut sumqx, mut sumq2) = (zero, zero);
                for j in 0..32 {
                    let q = lookup(table, best_index(vmulq_f32(id, xt[j]), &v, table));
                    let wq = vmulq_f32(w[j], q);
                    sumqx = vaddq_f32(sumqx, vmulq_f32(wq, xt[j]));
                    sumq2 = vaddq_f32(sumq2, vmulq_f32(wq, q));
                }
                (sumqx, sumq2)
            };
            let d0 = vdivq_f32(vnegq_f32(max), v[0]);
            let (sumqx, sumq2) = sums(vdivq_f32(vdupq_n_f32(1.0), d0));
            let mut d = vdivq_f32(sumqx, sumq2);
            let mut best = vmulq_f32(d, sumqx);
            for itry in -NTRY..=NTRY {
                let num = vdupq_n_f32((itry + IQ4NL_VALUES[0] as i32) as f32);
                let (sumqx, sumq2) = sums(vdivq_f32(num, max));
                let better = vandq_u32(
                    vcgtq_f32(sumq2, zero),
                    vcgtq_f32(vmulq_f32(sumqx, sumqx), vmulq_f32(best, sumq2)),
                );
                let dn = vdivq_f32(sumqx, sumq2);
                d = vbslq_f32(better, dn, d);
                best = vbslq_f32(better, vmulq_f32(dn, sumqx), best);
            }
            d = vbslq_f32(zero_block, zero, d);
            // `d ? 1/d : 0`, where a NaN d counts as non-zero
            let id = vbslq_f32(vceqq_f32(d, zero), zero, vdivq_f32(vdupq_n_f32(1.0), d));
            let mut codes = [[0i32; 4]; 32];
            for j in 0..32 {
                vst1q_s32(
                    codes[j].as_mut_ptr(),
                    best_index(vmulq_f32(id, xt[j]), &v, table),
                );
            }
            let mut scales = [0f32; 4];
            vst1q_f32(scales.as_mut_ptr(), d);
            for (b, blk) in out.iter_mut().take(4).enumerate() {
                let mut qs = [0u8; 16];
                for j in 0..16 {
                    qs[j] = codes[j][b] as u8 | ((codes[j + 16][b] as u8) << 4);
                }
                *blk = BlockIq4Nl {
                    d: super::scale_bits(scales[b]).to_le_bytes(),
                    qs,
                };
            }
        }
    }

    /// Sixteen table values (i8) to four f32x4 vectors, each multiplied by `d`.
    #[inline(always)]
    unsafe fn scale16(v: int8x16_t, d: float32x4_t) -> [float32x4_t; 4] {
        // SAFETY: register-only NEON operations; the caller has NEON.
        unsafe {
            let lo = vmovl_s8(vget_low_s8(v));
            let hi = vmovl_s8(vget_high_s8(v));
            [
                vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
                vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))),
                vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
                vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))),
            ]
            .map(|f| vmulq_f32(d, f))
        }
    }

    #[target_feature(enable = "neon")]
    pub unsafe fn dequantize(blocks: &[BlockIq4Nl], out: &mut [f32]) {
        // SAFETY (whole body): the table has 16 bytes, each block 16 code bytes, and each
        // output chunk 32 floats (eight 4-lane stores).
        unsafe {
            let table = vld1q_s8(IQ4NL_VALUES.as_ptr());
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
                let d = vdupq_n_f32(f16_bits_to_f32(u16::from_le_bytes(b.d)));
                let raw = vld1q_u8(b.qs.as_ptr());
                let lo = vqtbl1q_s8(table, vandq_u8(raw, vdupq_n_u8(0x0F)));
                let hi = vqtbl1q_s8(table, vshrq_n_u8::<4>(raw));
                // d · kv[idx], one rounded product as in the scalar code
                for (half, v) in [lo, hi].into_iter().enumerate() {
                    for (k, y) in scale16(v, d).into_iter().enumerate() {
                        vst1q_f32(o.as_mut_ptr().add(16 * half + 4 * k), y);
                    }
                }
            }
        }
    }
}
