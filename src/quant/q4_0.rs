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

    fn dequantize_blocks(isa: Isa, blocks: &[Self], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if matches!(isa, Isa::Avx2 | Isa::Avx512) {
            // SAFETY: the dispatch only passes tiers this CPU supports.
            unsafe { x86::dequantize(blocks, out) };
            return;
        }
        let _ = isa;
        for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            b.dequantize_block(o);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::BlockQ4_0;
    use std::arch::x86_64::*;

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
