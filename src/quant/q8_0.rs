//! Q8_0: 32 weights as i8 with one f16 scale (34 bytes), ggml's `quantize_row_q8_0_ref`.

use super::float::{f16_bits_to_f32, f32_to_f16_bits};
use super::{BlockFormat, Isa};
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ8_0 {
    /// f16 scale, little endian.
    pub d: [u8; 2],
    pub qs: [i8; 32],
}

const _: () = assert!(size_of::<BlockQ8_0>() == 34);

impl BlockFormat for BlockQ8_0 {
    const TYPE: GgmlType = GgmlType::Q8_0;
    const ELEMS: usize = 32;

    fn quantize_block(x: &[f32]) -> Self {
        let amax = x.iter().fold(0f32, |a, v| a.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0i8; 32];
        for (q, &v) in qs.iter_mut().zip(x) {
            // roundf: half away from zero, which f32::round is.
            *q = super::c_f32_to_i32((v * id).round()) as i8;
        }
        BlockQ8_0 {
            d: f32_to_f16_bits(d).to_le_bytes(),
            qs,
        }
    }

    fn dequantize_block(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        for (o, &q) in out.iter_mut().zip(&self.qs) {
            *o = q as f32 * d;
        }
    }

    fn quantize_blocks(isa: Isa, x: &[f32], out: &mut [Self]) {
        quantize_with_avx2_kernel!(isa, x, out; x86::quantize)
    }

    fn dequantize_blocks(isa: Isa, blocks: &[Self], out: &mut [f32]) {
        dequantize_with_kernels!(isa, blocks, out;
            avx512: super::simd_avx512::dequantize_q8_0,
            avx2: x86::dequantize,
            neon: super::simd_neon::dequantize_q8_0,
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::simd_x86::{hmax_abs, low_bytes_8, round_half_away};
    use super::BlockQ8_0;
    use crate::quant::float::f32_to_f16_bits;
    use std::arch::x86_64::*;

    /// ggml's per-block order of operations, 8 lanes at a time: amax (exact in any order),
    /// d = amax / 127, id = 1/d, q = roundf(x · id) with C's x86 float→int conversion.
    /// Eight blocks share one vector division for d, one for id and one f16 conversion
    /// (IEEE division and F16C's round-to-nearest-even give the scalar results bit for bit),
    /// so the per-block divisions no longer serialise the loop.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn quantize(x: &[f32], out: &mut [BlockQ8_0]) {
        let mut groups = out.chunks_exact_mut(8);
        let mut xs = x.chunks_exact(256);
        for (bs, c) in (&mut groups).zip(&mut xs) {
            // SAFETY (group): c has 8 × 32 floats, read as 32 unaligned 8-lane loads; every
            // store goes to a block of bs (8 blocks of 32 bytes + 2), unaligned.
            unsafe {
                let mut amax = [0f32; 8];
                for (j, a) in amax.iter_mut().enumerate() {
                    let p = c.as_ptr().add(32 * j);
                    *a = hmax_abs(&[0, 8, 16, 24].map(|k| _mm256_loadu_ps(p.add(k))));
                }
                let va = _mm256_loadu_ps(amax.as_ptr());
                let vd = _mm256_div_ps(va, _mm256_set1_ps(127.0));
                let nonzero = _mm256_cmp_ps::<_CMP_NEQ_OQ>(vd, _mm256_setzero_ps());
                let vid = _mm256_and_ps(_mm256_div_ps(_mm256_set1_ps(1.0), vd), nonzero);
                let mut ids = [0f32; 8];
                _mm256_storeu_ps(ids.as_mut_ptr(), vid);
                let mut dh = [0u16; 8];
                _mm_storeu_si128(
                    dh.as_mut_ptr() as *mut __m128i,
                    _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(vd),
                );
                for (j, b) in bs.iter_mut().enumerate() {
                    let p = c.as_ptr().add(32 * j);
                    let vid = _mm256_set1_ps(ids[j]);
                    for k in 0..4 {
                        let v = _mm256_loadu_ps(p.add(8 * k));
                        let q = _mm256_cvttps_epi32(round_half_away(_mm256_mul_ps(v, vid)));
                        _mm_storel_epi64(
                            b.qs.as_mut_ptr().add(8 * k) as *mut __m128i,
                            low_bytes_8(q),
                        );
                    }
                    b.d = dh[j].to_le_bytes();
                }
            }
        }
        for (b, c) in groups
            .into_remainder()
            .iter_mut()
            .zip(xs.remainder().chunks_exact(32))
        {
            // SAFETY (block): c has 32 floats (four unaligned 8-lane loads), b.qs 32 bytes.
            unsafe {
                let v = [0, 8, 16, 24].map(|k| _mm256_loadu_ps(c.as_ptr().add(k)));
                let amax = hmax_abs(&v);
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                let vid = _mm256_set1_ps(id);
                for (k, vk) in v.iter().enumerate() {
                    let q = _mm256_cvttps_epi32(round_half_away(_mm256_mul_ps(*vk, vid)));
                    _mm_storel_epi64(b.qs.as_mut_ptr().add(8 * k) as *mut __m128i, low_bytes_8(q));
                }
                b.d = f32_to_f16_bits(d).to_le_bytes();
            }
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dequantize(blocks: &[BlockQ8_0], out: &mut [f32]) {
        for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            // SAFETY: b.qs is 32 bytes, o is 32 floats; all loads/stores unaligned.
            unsafe {
                let d = _mm256_set1_ps(_mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
                    u16::from_le_bytes(b.d) as i32,
                ))));
                let q = _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i);
                let lo = _mm256_castsi256_si128(q);
                let hi = _mm256_extracti128_si256::<1>(q);
                let p = o.as_mut_ptr();
                _mm256_storeu_ps(
                    p,
                    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(lo)), d),
                );
                _mm256_storeu_ps(
                    p.add(8),
                    _mm256_mul_ps(
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(lo))),
                        d,
                    ),
                );
                _mm256_storeu_ps(
                    p.add(16),
                    _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(hi)), d),
                );
                _mm256_storeu_ps(
                    p.add(24),
                    _mm256_mul_ps(
                        _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128::<8>(hi))),
                        d,
                    ),
                );
            }
        }
    }
}
