//! Q3_K: 16 sub-blocks of 16 weights, 3-bit codes (2 low bits in `qs`, the high bit in
//! `hmask`) with 6-bit signed scales (110 bytes per 256 weights), ggml's `quantize_row_q3_K_ref`.
//!
//! Each sub-block gets a signed scale from `make_q3_quants` (codes −4..=3 refined by
//! coordinate descent under weights x²). The scale with the largest magnitude sets the
//! f16 super-scale `d = fp16(1/iscale)` with `iscale = −32/max_scale`; each sub-block stores
//! the 6-bit code `v = clamp(round(iscale·s), −32, 31) + 32`, packed into 12 bytes (low
//! nibbles in bytes 0..8, top two bits in bytes 8..12). The codes are then re-derived from
//! the stored `d·(v − 32)`; a sub-block whose stored scale is 0 keeps make_q3_quants' codes
//! (raw 0 for an all-zero sub-block). An all-zero block is 110 zero bytes. Dequantization is
//! `(d·(v − 32))·(q − 4)`.
//!
//! With importance weights (`quantize_weighted`, ggml's `quantize_row_q3_K_impl`) the
//! sub-block scales come from `make_qx_quants` (weights `qw·sqrt(σ² + x²)`,
//! `σ² = 2·Σx²/256`) and the scale codes and `d` from a weighted `make_qx_quants` over the
//! sixteen scales; the requantization and packing are shared with the static path.
//!
//! Every float operation is in ggml's order without FMA, so the bytes equal ggml's (the
//! libggml-base of llama-cpp-python 0.3.36, fixtures/quant/kquant) including degenerate
//! input: huge values overflow to inf/NaN exactly as ggml's do.

use super::float::{f16_bits_to_f32, f32_to_f16_bits};
use super::kquant::{make_qx_quants_weighted, nearest_int, GROUP_MAX_EPS};
use super::{BlockFormat, Isa};
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}

const _: () = assert!(size_of::<BlockQ3K>() == 110);

/// ggml's `make_q3_quants(16, 4, x, L, do_rmse = true)`: a signed scale and codes
/// `L = l + 4` (l in −4..=3), or all-zero codes and scale 0 when max |x| < 1e-15.
fn make_q3_quants(x: &[f32], l_out: &mut [i8]) -> f32 {
    const NMAX: i32 = 4;
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(NMAX as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
        l_out[i] = l as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (i, &v) in x.iter().enumerate() {
            let w = v * v;
            let cur = l_out[i] as f32;
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(v * sl2 / slx).clamp(-NMAX, NMAX - 1);
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for l in l_out.iter_mut() {
        *l += NMAX as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Store the 6-bit code `v` of sub-block `j` in ggml's 12-byte packing (`s` starts zeroed):
/// the low nibble in byte `j % 8` (low half for j < 8, high half after), the top two bits
/// in byte `8 + j % 4` at bit `2·(j / 4)`.
#[inline(always)]
fn set_scale_code(j: usize, v: u8, s: &mut [u8; 12]) {
    if j < 8 {
        s[j] = v & 0xF;
    } else {
        s[j - 8] |= (v & 0xF) << 4;
    }
    s[8 + j % 4] |= (v >> 4) << (2 * (j / 4));
}

/// The 6-bit code of sub-block `j` from ggml's 12-byte packing.
#[inline(always)]
fn scale_code(j: usize, s: &[u8; 12]) -> u8 {
    let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)
}

impl BlockQ3K {
    /// ggml's `quantize_row_q3_K_ref` for one super-block of 256 weights.
    fn quantize_ref(x: &[f32]) -> Self {
        let x: &[f32; 256] = x.try_into().expect("Q3_K block is 256 weights");
        let mut l = [0i8; 256];
        let mut fit = [0f32; 16];
        let (mut max_scale, mut amax) = (0f32, 0f32);
        for j in 0..16 {
            fit[j] = make_q3_quants(&x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
            let a = fit[j].abs();
            if a > amax {
                amax = a;
                max_scale = fit[j];
            }
        }

        let mut scales = [0u8; 12];
        let d = if max_scale != 0.0 {
            let iscale = -32.0 / max_scale;
            for (j, &s) in fit.iter().enumerate() {
                // C keeps nearest_int's result in an int8_t (low byte), then clamps.
                let v = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
                set_scale_code(j, v, &mut scales);
            }
            f32_to_f16_bits(1.0 / iscale)
        } else {
            f32_to_f16_bits(0.0)
        };
        Self::from_fits(x, l, scales, d)
    }

    /// ggml's `quantize_row_q3_K_impl` with importance weights `qw` for one super-block of
    /// 256 weights: each sub-block's signed scale and codes come from
    /// `make_qx_quants(16, 4, …, rmse_type 1)` under `w = qw·sqrt(σ² + x²)` with
    /// `σ² = 2·Σx²/256`, and the sixteen 6-bit scale codes from `make_qx_quants(16, 32, …)`
    /// weighted by the sub-blocks' weight sums.
    pub(crate) fn quantize_weighted(x: &[f32], qw: &[f32]) -> Self {
        let x: &[f32; 256] = x.try_into().expect("Q3_K block is 256 weights");
        let qw: &[f32; 256] = qw.try_into().expect("Q3_K block has 256 importance values");
        let mut sum_x2 = 0f32;
        for &v in x {
            sum_x2 += v * v;
        }
        let sigma2 = 2.0 * sum_x2 / 256.0;
        let mut l = [0i8; 256];
        let mut fit = [0f32; 16];
        let mut sw = [0f32; 16];
        let mut w = [0f32; 16];
        for j in 0..16 {
            let r = 16 * j..16 * j + 16;
            let xs = &x[r.clone()];
            for (k, wk) in w.iter_mut().enumerate() {
                *wk = qw[16 * j + k] * (sigma2 + xs[k] * xs[k]).sqrt();
            }
            let mut sumw = 0f32;
            for &wk in &w {
                sumw += wk;
            }
            sw[j] = sumw;
            fit[j] = make_qx_quants_weighted(4, xs, &mut l[r], Some(&w));
        }
        let mut ls = [0i8; 16];
        let d_block = make_qx_quants_weighted(32, &fit, &mut ls, Some(&sw));
        let mut scales = [0u8; 12];
        for (j, &v) in ls.iter().enumerate() {
            set_scale_code(j, v as u8, &mut scales);
        }
        Self::from_fits(x, l, scales, f32_to_f16_bits(d_block))
    }

    /// Re-derive the codes from the stored scales (a sub-block whose stored scale is 0 keeps
    /// its fitted codes `l`, offset by 4), then build hmask and qs.
    fn from_fits(x: &[f32; 256], mut l: [i8; 256], scales: [u8; 12], d: u16) -> Self {
        let df = f16_bits_to_f32(d);
        for j in 0..16 {
            let sc = scale_code(j, &scales) as i32 - 32;
            let dd = df * sc as f32;
            if dd == 0.0 {
                continue;
            }
            for i in 16 * j..16 * j + 16 {
                l[i] = (nearest_int(x[i] / dd).clamp(-4, 3) + 4) as i8;
            }
        }

        // High bit of weight e goes to bit e/32 of hmask[e % 32]; the low 2 bits to qs.
        let mut hmask = [0u8; 32];
        for (e, q) in l.iter_mut().enumerate() {
            if *q > 3 {
                hmask[e % 32] |= 1 << (e / 32);
                *q -= 4;
            }
        }
        let mut qs = [0u8; 64];
        for c in 0..2 {
            for i in 0..32 {
                let q = |k: usize| l[128 * c + 32 * k + i] as u8;
                qs[32 * c + i] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
            }
        }
        BlockQ3K {
            hmask,
            qs,
            scales,
            d: d.to_le_bytes(),
        }
    }

    /// ggml's `dequantize_row_q3_K` for one block.
    fn dequantize_scalar(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        let dl: [f32; 16] =
            std::array::from_fn(|j| d * (scale_code(j, &self.scales) as i32 - 32) as f32);
        for (e, y) in out[..256].iter_mut().enumerate() {
            let q2 = ((self.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i32;
            let high = self.hmask[e % 32] & (1 << (e / 32)) != 0;
            let q = if high { q2 } else { q2 - 4 };
            *y = dl[e / 16] * q as f32;
        }
    }
}

impl BlockFormat for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3K;
    const ELEMS: usize = 256;

    fn quantize_block(x: &[f32]) -> Self {
        Self::quantize_ref(x)
    }

    fn dequantize_block(&self, out: &mut [f32]) {
        self.dequantize_scalar(out)
    }

    fn dequantize_blocks(isa: Isa, blocks: &[Self], out: &mut [f32]) {
        dequantize_with_kernels!(isa, blocks, out;
            avx512: x86::dequantize_avx512,
            avx2: x86::dequantize,
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::float::f16_bits_to_f32;
    use super::{scale_code, BlockQ3K};
    use std::arch::x86_64::*;

    /// The sixteen sub-block scales `d·(v − 32)`, each one rounded product as in the scalar
    /// dequantizer.
    #[inline(always)]
    fn sub_scales(b: &BlockQ3K) -> [f32; 16] {
        let d = f16_bits_to_f32(u16::from_le_bytes(b.d));
        std::array::from_fn(|j| d * (scale_code(j, &b.scales) as i32 - 32) as f32)
    }

    /// The signed 3-bit codes (−4..=3, as i8) of the 16 elements `128c + 32k + 16h + (0..16)`
    /// for k = 0..4: the low two bits `(qs[32c + 16h + j] >> 2k) & 3` from `raw`, minus 4
    /// unless bit `4c + k` of `hmask[16h + j]` (in `hm`) is set.
    #[inline(always)]
    fn codes(raw: __m128i, hm: __m128i, c: usize) -> [__m128i; 4] {
        // SAFETY: register-only SSE2 operations, available on every x86-64 CPU.
        unsafe {
            let m3 = _mm_set1_epi8(3);
            let four = _mm_set1_epi8(4);
            let low = [
                _mm_and_si128(raw, m3),
                _mm_and_si128(_mm_srli_epi16::<2>(raw), m3),
                _mm_and_si128(_mm_srli_epi16::<4>(raw), m3),
                _mm_and_si128(_mm_srli_epi16::<6>(raw), m3),
            ];
            let mut out = low;
            for (k, (q, lo)) in out.iter_mut().zip(low).enumerate() {
                let bit = _mm_set1_epi8((1u8 << (4 * c + k)) as i8);
                let set = _mm_cmpeq_epi8(_mm_and_si128(hm, bit), bit);
                *q = _mm_sub_epi8(lo, _mm_andnot_si128(set, four));
            }
            out
        }
    }

    /// Element `e = 128c + 32k + 16h + j` (j < 16) belongs to sub-block `8c + 2k + h`; its
    /// code comes from `qs[32c + 16h + j]` and `hmask[16h + j]` (see [`codes`]).
    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize(blocks: &[BlockQ3K], out: &mut [f32]) {
        // SAFETY (whole body): qs has 64 bytes and hmask 32 (16-byte loads at 32c + 16h < 64
        // and 16h < 32); each output chunk holds 256 floats and every store writes 8 of them
        // at 128c + 32k + 16h + 8e + (0..8) < 256.
        unsafe {
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let dl = sub_scales(b);
                let p = o.as_mut_ptr();
                for h in 0..2 {
                    let hm = _mm_loadu_si128(b.hmask.as_ptr().add(16 * h) as *const __m128i);
                    for c in 0..2 {
                        let raw =
                            _mm_loadu_si128(b.qs.as_ptr().add(32 * c + 16 * h) as *const __m128i);
                        for (k, q) in codes(raw, hm, c).into_iter().enumerate() {
                            let vd = _mm256_set1_ps(dl[8 * c + 2 * k + h]);
                            for (e, v) in [q, _mm_srli_si128::<8>(q)].into_iter().enumerate() {
                                let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
                                _mm256_storeu_ps(
                                    p.add(128 * c + 32 * k + 16 * h + 8 * e),
                                    _mm256_mul_ps(vd, f),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`dequantize`] with 16-lane vectors: one store per run of 16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn dequantize_avx512(blocks: &[BlockQ3K], out: &mut [f32]) {
        // SAFETY (whole body): qs has 64 bytes and hmask 32 (16-byte loads at 32c + 16h < 64
        // and 16h < 32); each output chunk holds 256 floats and every store writes 16 of them
        // at 128c + 32k + 16h + (0..16) < 256.
        unsafe {
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let dl = sub_scales(b);
                let p = o.as_mut_ptr();
                for h in 0..2 {
                    let hm = _mm_loadu_si128(b.hmask.as_ptr().add(16 * h) as *const __m128i);
                    for c in 0..2 {
                        let raw =
                            _mm_loadu_si128(b.qs.as_ptr().add(32 * c + 16 * h) as *const __m128i);
                        for (k, q) in codes(raw, hm, c).into_iter().enumerate() {
                            let vd = _mm512_set1_ps(dl[8 * c + 2 * k + h]);
                            let f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
                            _mm512_storeu_ps(
                                p.add(128 * c + 32 * k + 16 * h),
                                _mm512_mul_ps(vd, f),
                            );
                        }
                    }
                }
            }
        }
    }
}
