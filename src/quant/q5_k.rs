//! Q5_K: like Q4_K with a fifth bit per weight in `qh` (176 bytes),
//! ggml's `quantize_row_q5_K_ref`. Used by llama-quantize's Q4_K_S and IQ4_NL mixes.

use super::float::f16_bits_to_f32;
use super::kquant::{quantize_k_superblock, scale_min_k4, Q5K_FIT};
use super::BlockFormat;
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qh: [u8; 32],
    pub qs: [u8; 128],
}

const _: () = assert!(size_of::<BlockQ5K>() == 176);

impl BlockFormat for BlockQ5K {
    const TYPE: GgmlType = GgmlType::Q5K;
    const ELEMS: usize = 256;

    fn quantize_blocks(isa: super::Isa, x: &[f32], out: &mut [Self]) {
        super::kquant::quantize_k_blocks(isa, x, Q5K_FIT, out, |(d, dmin, scales, l)| {
            Self::from_parts(d, dmin, scales, l)
        });
    }

    fn quantize_block(x: &[f32]) -> Self {
        let (d, dmin, scales, l) = quantize_k_superblock(x, Q5K_FIT);
        Self::from_parts(d, dmin, scales, l)
    }

    fn dequantize_block(&self, out: &mut [f32]) {
        self.dequantize_scalar(out)
    }

    fn dequantize_blocks(isa: super::Isa, blocks: &[Self], out: &mut [f32]) {
        dequantize_with_kernels!(isa, blocks, out;
            avx512: super::simd_avx512::dequantize_q5_k,
            avx2: x86::dequantize,
        )
    }
}

impl BlockQ5K {
    pub(crate) fn from_parts(d: u16, dmin: u16, scales: [u8; 12], l: [u8; 256]) -> Self {
        let mut qs = [0u8; 128];
        let mut qh = [0u8; 32];
        for c in 0..4 {
            let (m1, m2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for j in 0..32 {
                let mut l1 = l[64 * c + j];
                if l1 > 15 {
                    l1 -= 16;
                    qh[j] |= m1;
                }
                let mut l2 = l[64 * c + 32 + j];
                if l2 > 15 {
                    l2 -= 16;
                    qh[j] |= m2;
                }
                qs[32 * c + j] = l1 | (l2 << 4);
            }
        }
        BlockQ5K {
            d: d.to_le_bytes(),
            dmin: dmin.to_le_bytes(),
            scales,
            qh,
            qs,
        }
    }

    fn dequantize_scalar(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        let dmin = f16_bits_to_f32(u16::from_le_bytes(self.dmin));
        for c in 0..4 {
            let (sc1, mn1) = scale_min_k4(2 * c, &self.scales);
            let (sc2, mn2) = scale_min_k4(2 * c + 1, &self.scales);
            let (d1, m1) = (d * sc1 as f32, dmin * mn1 as f32);
            let (d2, m2) = (d * sc2 as f32, dmin * mn2 as f32);
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            for j in 0..32 {
                let q = self.qs[32 * c + j];
                let h1 = if self.qh[j] & u1 != 0 { 16 } else { 0 };
                let h2 = if self.qh[j] & u2 != 0 { 16 } else { 0 };
                out[64 * c + j] = d1 * ((q & 0xF) + h1) as f32 - m1;
                out[64 * c + 32 + j] = d2 * ((q >> 4) + h2) as f32 - m2;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::float::f16_bits_to_f32;
    use super::super::kquant::scale_min_k4;
    use super::BlockQ5K;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize(blocks: &[BlockQ5K], out: &mut [f32]) {
        // SAFETY (whole body): qs has 128 bytes and qh 32 (16-byte loads at offsets < 128 /
        // < 32); each output chunk holds 256 floats.
        unsafe {
            let m4 = _mm_set1_epi8(0x0F);
            let sixteen = _mm_set1_epi8(16);
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let d = f16_bits_to_f32(u16::from_le_bytes(b.d));
                let dmin = f16_bits_to_f32(u16::from_le_bytes(b.dmin));
                for c in 0..4 {
                    let (sc1, mn1) = scale_min_k4(2 * c, &b.scales);
                    let (sc2, mn2) = scale_min_k4(2 * c + 1, &b.scales);
                    let u1 = _mm_set1_epi8((1u8 << (2 * c)) as i8);
                    let u2 = _mm_set1_epi8((2u8 << (2 * c)) as i8);
                    for h in 0..2 {
                        let raw =
                            _mm_loadu_si128(b.qs.as_ptr().add(32 * c + 16 * h) as *const __m128i);
                        let qh = _mm_loadu_si128(b.qh.as_ptr().add(16 * h) as *const __m128i);
                        let bit = |u: __m128i| {
                            _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(qh, u), u), sixteen)
                        };
                        let lo = _mm_add_epi8(_mm_and_si128(raw, m4), bit(u1));
                        let hi = _mm_add_epi8(_mm_and_si128(_mm_srli_epi16::<4>(raw), m4), bit(u2));
                        for (part, q, sc, mn) in [(0usize, lo, sc1, mn1), (32usize, hi, sc2, mn2)] {
                            let (vd, vm) = (
                                _mm256_set1_ps(d * sc as f32),
                                _mm256_set1_ps(dmin * mn as f32),
                            );
                            for (k, v) in [q, _mm_srli_si128::<8>(q)].into_iter().enumerate() {
                                let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
                                // d·q − m as two rounded operations, like ggml (no FMA).
                                let y = _mm256_sub_ps(_mm256_mul_ps(vd, f), vm);
                                _mm256_storeu_ps(
                                    o.as_mut_ptr().add(64 * c + part + 16 * h + 8 * k),
                                    y,
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
