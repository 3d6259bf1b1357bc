//! Q6_K: 256 weights in 16 sub-blocks of 16, 6-bit codes with signed 8-bit scales under one
//! f16 super-scale (210 bytes, scale last), ggml's `quantize_row_q6_K_ref`.
//!
//! Byte-identical to ggml with every kernel (the AVX2 / AVX-512 / NEON fits run the sixteen
//! `make_qx_quants` calls in parallel lanes, each in the scalar order). An all-zero block
//! (largest sub-block scale below 1e-15) is 210 zero bytes; a sub-block whose 8-bit scale is 0
//! keeps make_qx_quants' codes (0 for an all-zero sub-block, not 32). Dequantization is
//! `(d·sc)·(q − 32)`.
//!
//! Huge inputs never panic and give ggml's bytes: |x| above about 2.7e8 overflows the f16
//! super-scale (inf/NaN values), and a sub-block whose squares overflow (|x| > ~1.8e19) gets
//! a NaN fit that ggml's comparisons skip, so it is stored as zeros.

use super::float::{f16_bits_to_f32, f32_to_f16_bits};
use super::kquant::{fit_q6k_subblocks, make_qx_quants_weighted, nearest_int, GROUP_MAX_EPS};
use super::{BlockFormat, Isa};
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    pub ql: [u8; 128],
    pub qh: [u8; 64],
    pub scales: [i8; 16],
    pub d: [u8; 2],
}

const _: () = assert!(size_of::<BlockQ6K>() == 210);

impl BlockFormat for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6K;
    const ELEMS: usize = 256;

    fn quantize_block(x: &[f32]) -> Self {
        Self::quantize_with(Isa::Scalar, x)
    }

    fn quantize_blocks(isa: Isa, x: &[f32], out: &mut [Self]) {
        for (b, c) in out.iter_mut().zip(x.chunks_exact(256)) {
            *b = Self::quantize_with(isa, c);
        }
    }

    fn dequantize_block(&self, out: &mut [f32]) {
        self.dequantize_scalar(out)
    }

    fn dequantize_blocks(isa: Isa, blocks: &[Self], out: &mut [f32]) {
        dequantize_with_kernels!(isa, blocks, out;
            avx512: super::simd_avx512::dequantize_q6_k,
            avx2: x86::dequantize,
            neon: neon::dequantize,
        )
    }
}

impl BlockQ6K {
    /// ggml's `quantize_row_q6_K_ref` for one block; `isa` only selects how the sixteen
    /// sub-block fits are computed (every path gives the same bytes).
    fn quantize_with(isa: Isa, x: &[f32]) -> Self {
        let mut l = [0i8; 256];
        let scales = fit_q6k_subblocks(isa, x, &mut l);
        Self::from_fits(x, &scales, l)
    }

    /// ggml's `quantize_row_q6_K_impl` with importance weights `qw` (256 values): each
    /// sub-block's fit weighs value i by `qw[i]` itself.
    pub(crate) fn quantize_weighted(x: &[f32], qw: &[f32]) -> Self {
        let mut l = [0i8; 256];
        let scales: [f32; 16] = std::array::from_fn(|ib| {
            let r = 16 * ib..16 * ib + 16;
            make_qx_quants_weighted(32, &x[r.clone()], &mut l[r.clone()], Some(&qw[r]))
        });
        Self::from_fits(x, &scales, l)
    }

    /// The block from the sixteen sub-block fits (signed scales and codes).
    fn from_fits(x: &[f32], scales: &[f32; 16], mut l: [i8; 256]) -> Self {
        let (mut max_scale, mut max_abs_scale) = (0f32, 0f32);
        for &s in scales {
            if s.abs() > max_abs_scale {
                max_abs_scale = s.abs();
                max_scale = s;
            }
        }
        if max_abs_scale < GROUP_MAX_EPS {
            return bytemuck::Zeroable::zeroed();
        }
        let iscale = -128.0 / max_scale;
        let d = f32_to_f16_bits(1.0 / iscale);
        let mut sc = [0i8; 16];
        for ib in 0..16 {
            sc[ib] = nearest_int(iscale * scales[ib]).min(127) as i8;
        }
        let df = f16_bits_to_f32(d);
        for j in 0..16 {
            let dd = df * sc[j] as f32;
            if dd == 0.0 {
                continue;
            }
            for ii in 0..16 {
                let q = nearest_int(x[16 * j + ii] / dd).clamp(-32, 31);
                l[16 * j + ii] = (q + 32) as i8;
            }
        }
        let mut ql = [0u8; 128];
        let mut qh = [0u8; 64];
        for h in 0..2 {
            for i in 0..32 {
                let q = |k: usize| l[128 * h + i + 32 * k] as u8;
                ql[64 * h + i] = (q(0) & 0xF) | ((q(2) & 0xF) << 4);
                ql[64 * h + i + 32] = (q(1) & 0xF) | ((q(3) & 0xF) << 4);
                qh[32 * h + i] =
                    (q(0) >> 4) | ((q(1) >> 4) << 2) | ((q(2) >> 4) << 4) | ((q(3) >> 4) << 6);
            }
        }
        BlockQ6K {
            ql,
            qh,
            scales: sc,
            d: d.to_le_bytes(),
        }
    }

    fn dequantize_scalar(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        for h in 0..2 {
            let (ql, qh, sc) = (
                &self.ql[64 * h..],
                &self.qh[32 * h..],
                &self.scales[8 * h..],
            );
            for i in 0..32 {
                let is = i / 16;
                let q1 = ((ql[i] & 0xF) | ((qh[i] & 3) << 4)) as i32 - 32;
                let q2 = ((ql[i + 32] & 0xF) | (((qh[i] >> 2) & 3) << 4)) as i32 - 32;
                let q3 = ((ql[i] >> 4) | (((qh[i] >> 4) & 3) << 4)) as i32 - 32;
                let q4 = ((ql[i + 32] >> 4) | (((qh[i] >> 6) & 3) << 4)) as i32 - 32;
                let o = &mut out[128 * h..];
                o[i] = d * sc[is] as f32 * q1 as f32;
                o[i + 32] = d * sc[is + 2] as f32 * q2 as f32;
                o[i + 64] = d * sc[is + 4] as f32 * q3 as f32;
                o[i + 96] = d * sc[is + 6] as f32 * q4 as f32;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::float::f16_bits_to_f32;
    use super::BlockQ6K;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize(blocks: &[BlockQ6K], out: &mut [f32]) {
        // SAFETY (whole body): per half, ql has 64 bytes and qh 32 (two 16-byte loads each
        // at offsets < 64 / < 32); each output chunk holds 256 floats.
        unsafe {
            let c32 = _mm256_set1_epi32(32);
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let d = f16_bits_to_f32(u16::from_le_bytes(b.d));
                for h in 0..2 {
                    for g in 0..2 {
                        // elements i = 16g .. 16g+15 of this half: scale index is = g
                        let ql0 =
                            _mm_loadu_si128(b.ql.as_ptr().add(64 * h + 16 * g) as *const __m128i);
                        let ql1 = _mm_loadu_si128(
                            b.ql.as_ptr().add(64 * h + 32 + 16 * g) as *const __m128i
                        );
                        let qh =
                            _mm_loadu_si128(b.qh.as_ptr().add(32 * h + 16 * g) as *const __m128i);
                        let qs = super::super::simd_x86::q6k_codes(ql0, ql1, qh);
                        for (k, q) in qs.into_iter().enumerate() {
                            let scale = _mm256_set1_ps(d * b.scales[8 * h + g + 2 * k] as f32);
                            let base = o.as_mut_ptr().add(128 * h + 32 * k + 16 * g);
                            for (e, v) in [q, _mm_srli_si128::<8>(q)].into_iter().enumerate() {
                                let qi = _mm256_sub_epi32(_mm256_cvtepu8_epi32(v), c32);
                                let y = _mm256_mul_ps(scale, _mm256_cvtepi32_ps(qi));
                                _mm256_storeu_ps(base.add(8 * e), y);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::super::float::f16_bits_to_f32;
    use super::BlockQ6K;
    use std::arch::aarch64::*;

    #[target_feature(enable = "neon")]
    pub unsafe fn dequantize(blocks: &[BlockQ6K], out: &mut [f32]) {
        // SAFETY (whole body): per half, ql has 64 bytes and qh 32 (16-byte loads at offsets
        // 16g and 32 + 16g < 64, and 16g < 32); each output chunk holds 256 floats and every
        // store writes 4 of them at 128h + 32k + 16g + 4e + (0..4) < 256.
        unsafe {
            let m4 = vdupq_n_u8(0x0F);
            let m2 = vdupq_n_u8(0x03);
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let d = f16_bits_to_f32(u16::from_le_bytes(b.d));
                for h in 0..2 {
                    for g in 0..2 {
                        // elements 16g .. 16g+15 of each 32-run of this half: scale index g + 2k
                        let ql0 = vld1q_u8(b.ql.as_ptr().add(64 * h + 16 * g));
                        let ql1 = vld1q_u8(b.ql.as_ptr().add(64 * h + 32 + 16 * g));
                        let qh = vld1q_u8(b.qh.as_ptr().add(32 * h + 16 * g));
                        let codes = [
                            vorrq_u8(vandq_u8(ql0, m4), vshlq_n_u8::<4>(vandq_u8(qh, m2))),
                            vorrq_u8(
                                vandq_u8(ql1, m4),
                                vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<2>(qh), m2)),
                            ),
                            vorrq_u8(
                                vshrq_n_u8::<4>(ql0),
                                vshlq_n_u8::<4>(vandq_u8(vshrq_n_u8::<4>(qh), m2)),
                            ),
                            vorrq_u8(vshrq_n_u8::<4>(ql1), vshlq_n_u8::<4>(vshrq_n_u8::<6>(qh))),
                        ];
                        for (k, q) in codes.into_iter().enumerate() {
                            // q − 32 fits i8 (codes are 0..63)
                            let q = vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(32));
                            // (d·sc)·(q − 32): the scale product first, as ggml
                            let scale = vdupq_n_f32(d * b.scales[8 * h + g + 2 * k] as f32);
                            let base = o.as_mut_ptr().add(128 * h + 32 * k + 16 * g);
                            let lo = vmovl_s8(vget_low_s8(q));
                            let hi = vmovl_s8(vget_high_s8(q));
                            let parts = [
                                vmovl_s16(vget_low_s16(lo)),
                                vmovl_s16(vget_high_s16(lo)),
                                vmovl_s16(vget_low_s16(hi)),
                                vmovl_s16(vget_high_s16(hi)),
                            ];
                            for (e, p) in parts.into_iter().enumerate() {
                                vst1q_f32(base.add(4 * e), vmulq_f32(scale, vcvtq_f32_s32(p)));
                            }
                        }
                    }
                }
            }
        }
    }
}
