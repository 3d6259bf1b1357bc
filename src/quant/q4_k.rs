//! Q4_K: 256 weights in 8 sub-blocks of 32, 4-bit codes with 6-bit scales and mins under two
//! f16 super-scales (144 bytes), ggml's `quantize_row_q4_K_ref`.
//!
//! Quantization is byte-identical to ggml (the libggml-base of llama-cpp-python 0.3.36,
//! fixtures/quant/kquant) with every kernel: the scalar port, the AVX2 / AVX-512 / NEON fits
//! that run the eight sub-block fits in parallel lanes with the same per-lane operation order.
//! Dequantization is `(d·sc)·q − (dmin·m)`, two rounded operations after the two products.
//!
//! Huge inputs never panic and give ggml's bytes, which are not useful: once a sub-block's
//! fitted scale or min exceeds 63·65504 (a value range of roughly 6e7) the f16 super-scale
//! is inf and the super-block dequantizes to inf/NaN; the same happens when squares
//! overflow (|x| > ~1.8e19). ggml's `assert(|x| <= 4194303)` in `nearest_int` is compiled out
//! of release builds, and the 1.5·2^23 trick here is total, so arguments that large give the
//! same (meaningless) codes as ggml.

use super::float::f16_bits_to_f32;
use super::kquant::{quantize_k_superblock, scale_min_k4, Q4K_FIT};
use super::{BlockFormat, Isa};
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    pub d: [u8; 2],
    pub dmin: [u8; 2],
    pub scales: [u8; 12],
    pub qs: [u8; 128],
}

const _: () = assert!(size_of::<BlockQ4K>() == 144);

impl BlockQ4K {
    /// Per sub-block (d·sc, dmin·m), the products ggml's dequantizer computes first.
    #[inline(always)]
    pub(crate) fn sub_scales(&self) -> [(f32, f32); 8] {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        let dmin = f16_bits_to_f32(u16::from_le_bytes(self.dmin));
        std::array::from_fn(|j| {
            let (sc, m) = scale_min_k4(j, &self.scales);
            (d * sc as f32, dmin * m as f32)
        })
    }
}

impl BlockQ4K {
    pub(crate) fn from_parts(d: u16, dmin: u16, scales: [u8; 12], l: [u8; 256]) -> Self {
        let mut qs = [0u8; 128];
        for c in 0..4 {
            for i in 0..32 {
                qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
        BlockQ4K {
            d: d.to_le_bytes(),
            dmin: dmin.to_le_bytes(),
            scales,
            qs,
        }
    }
}

impl BlockFormat for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4K;
    const ELEMS: usize = 256;

    fn quantize_blocks(isa: Isa, x: &[f32], out: &mut [Self]) {
        super::kquant::quantize_k_blocks(isa, x, Q4K_FIT, out, |(d, dmin, scales, l)| {
            Self::from_parts(d, dmin, scales, l)
        });
    }

    fn quantize_block(x: &[f32]) -> Self {
        let (d, dmin, scales, l) = quantize_k_superblock(x, Q4K_FIT);
        let mut qs = [0u8; 128];
        for c in 0..4 {
            for i in 0..32 {
                qs[32 * c + i] = l[64 * c + i] | (l[64 * c + 32 + i] << 4);
            }
        }
        BlockQ4K {
            d: d.to_le_bytes(),
            dmin: dmin.to_le_bytes(),
            scales,
            qs,
        }
    }

    fn dequantize_block(&self, out: &mut [f32]) {
        let s = self.sub_scales();
        for c in 0..4 {
            let (d1, m1) = s[2 * c];
            let (d2, m2) = s[2 * c + 1];
            for i in 0..32 {
                let q = self.qs[32 * c + i];
                out[64 * c + i] = d1 * (q & 0xF) as f32 - m1;
                out[64 * c + 32 + i] = d2 * (q >> 4) as f32 - m2;
            }
        }
    }

    fn dequantize_blocks(isa: Isa, blocks: &[Self], out: &mut [f32]) {
        dequantize_with_kernels!(isa, blocks, out;
            avx512: super::simd_avx512::dequantize_q4_k,
            avx2: x86::dequantize,
            neon: super::simd_neon::dequantize_q4_k,
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::BlockQ4K;
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize(blocks: &[BlockQ4K], out: &mut [f32]) {
        // SAFETY (whole body): qs has 128 bytes (4 × 32 read), each output chunk 256 floats.
        unsafe {
            let mask = _mm_set1_epi8(0x0F);
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let s = b.sub_scales();
                let p = o.as_mut_ptr();
                for c in 0..4 {
                    let (d1, m1) = s[2 * c];
                    let (d2, m2) = s[2 * c + 1];
                    let (vd1, vm1) = (_mm256_set1_ps(d1), _mm256_set1_ps(m1));
                    let (vd2, vm2) = (_mm256_set1_ps(d2), _mm256_set1_ps(m2));
                    for h in 0..2 {
                        let raw =
                            _mm_loadu_si128(b.qs.as_ptr().add(32 * c + 16 * h) as *const __m128i);
                        let lo = _mm_and_si128(raw, mask);
                        let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
                        for (k, v) in [lo, _mm_srli_si128::<8>(lo)].into_iter().enumerate() {
                            let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
                            // d·q − m as two rounded operations, like ggml (no FMA).
                            let y = _mm256_sub_ps(_mm256_mul_ps(vd1, f), vm1);
                            _mm256_storeu_ps(p.add(64 * c + 16 * h + 8 * k), y);
                        }
                        for (k, v) in [hi, _mm_srli_si128::<8>(hi)].into_iter().enumerate() {
                            let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
                            let y = _mm256_sub_ps(_mm256_mul_ps(vd2, f), vm2);
                            _mm256_storeu_ps(p.add(64 * c + 32 + 16 * h + 8 * k), y);
                        }
                    }
                }
            }
        }
    }
}
