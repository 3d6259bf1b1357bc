//! Q4_0: 32 weights as 4-bit codes around 8 with one f16 scale (18 bytes),
//! ggml's `quantize_row_q4_0_ref`. Byte j holds element j (low nibble) and j+16 (high).

use super::float::{f16_bits_to_f32, f32_to_f16_bits};
use super::{c_f32_to_i32, BlockFormat, Isa};
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    pub d: [u8; 2],
    pub qs: [u8; 16],
}

const _: () = assert!(size_of::<BlockQ4_0>() == 18);

/// The signed value with the largest magnitude; the first one wins ties (ggml's scan).
pub(crate) fn signed_absmax(x: &[f32]) -> f32 {
    let (mut amax, mut max) = (0f32, 0f32);
    for &v in x {
        if amax < v.abs() {
            amax = v.abs();
            max = v;
        }
    }
    max
}

impl BlockFormat for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = 32;

    fn quantize_block(x: &[f32]) -> Self {
        let max = signed_absmax(x);
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            // (int8_t)(x*id + 8.5f): truncation toward zero of a value >= 0.5
            let q0 = (c_f32_to_i32(x[j] * id + 8.5) as i8).min(15) as u8;
            let q1 = (c_f32_to_i32(x[j + 16] * id + 8.5) as i8).min(15) as u8;
            qs[j] = q0 | (q1 << 4);
        }
        BlockQ4_0 {
            d: f32_to_f16_bits(d).to_le_bytes(),
            qs,
        }
    }

    fn dequantize_block(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        for j in 0..16 {
            out[j] = ((self.qs[j] & 0xF) as i32 - 8) as f32 * d;
            out[j + 16] = ((self.qs[j] >> 4) as i32 - 8) as f32 * d;
        }
    }

    fn quantize_blocks(isa: Isa, x: &[f32], out: &mut [Self]) {
        quantize_with_avx2_kernel!(isa, x, out; x86::quantize)
    }

    fn dequantize_blocks(isa: Isa, blocks: &[Self], out: &mut [f32]) {
        dequantize_with_kernels!(isa, blocks, out;
            avx512: super::simd_avx512::dequantize_q4_0,
            avx2: x86::dequantize,
            neon: super::simd_neon::dequantize_q4_0,
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::simd_x86::{first_absmax_signed, low_bytes_8};
    use super::BlockQ4_0;
    use crate::quant::float::f32_to_f16_bits;
    use std::arch::x86_64::*;

    /// ggml's per-block order: the first value of largest magnitude, d = max / −8, id = 1/d,
    /// q = MIN(15, (int8_t)(x·id + 8.5f)) with C's x86 float→int conversion.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize(x: &[f32], out: &mut [BlockQ4_0]) {
        // SAFETY (whole body): each chunk has 32 floats; the qs store writes 16 bytes.
        unsafe {
            let half = _mm256_set1_ps(8.5);
            let fifteen = _mm256_set1_epi32(15);
            for (b, c) in out.iter_mut().zip(x.chunks_exact(32)) {
                let v = [0, 8, 16, 24].map(|k| _mm256_loadu_ps(c.as_ptr().add(k)));
                let max = first_absmax_signed(&v, c);
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let vid = _mm256_set1_ps(id);
                let q = v.map(|vk| {
                    let i = _mm256_cvttps_epi32(_mm256_add_ps(_mm256_mul_ps(vk, vid), half));
                    // (int8_t) keeps the low byte as a signed value, then MIN(15, ·)
                    let s8 = _mm256_srai_epi32::<24>(_mm256_slli_epi32::<24>(i));
                    _mm256_min_epi32(s8, fifteen)
                });
                // byte j = q[j] | (q[j+16] << 4), in u8 arithmetic
                let lo = [q[0], q[1]];
                let hi = [q[2], q[3]];
                let mut packed = [0u8; 16];
                for k in 0..2 {
                    let l = _mm256_and_si256(lo[k], _mm256_set1_epi32(0xFF));
                    let h =
                        _mm256_and_si256(_mm256_slli_epi32::<4>(hi[k]), _mm256_set1_epi32(0xFF));
                    let bytes = low_bytes_8(_mm256_or_si256(l, h));
                    _mm_storel_epi64(packed.as_mut_ptr().add(8 * k) as *mut __m128i, bytes);
                }
                b.qs = packed;
                b.d = f32_to_f16_bits(d).to_le_bytes();
            }
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dequantize(blocks: &[BlockQ4_0], out: &mut [f32]) {
        // SAFETY (whole body): every block has 16 code bytes and every output chunk 32
        // floats; loads and stores are unaligned.
        unsafe {
            let mask = _mm_set1_epi8(0x0F);
            let eight = _mm256_set1_epi32(8);
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
                let d = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                    u16::from_le_bytes(b.d) as i32,
                ))));
                let raw = _mm_loadu_si128(b.qs.as_ptr() as *const __m128i);
                let lo = _mm_and_si128(raw, mask);
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), mask);
                let p = o.as_mut_ptr();
                for (k, v) in [lo, _mm_srli_si128::<8>(lo), hi, _mm_srli_si128::<8>(hi)]
                    .into_iter()
                    .enumerate()
                {
                    let q = _mm256_sub_epi32(_mm256_cvtepu8_epi32(v), eight);
                    _mm256_storeu_ps(p.add(8 * k), _mm256_mul_ps(_mm256_cvtepi32_ps(q), d));
                }
            }
        }
    }
}
