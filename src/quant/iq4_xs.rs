//! IQ4_XS: 256 weights as eight 32-weight sub-blocks of indices into IQ4_NL's non-linear table,
//! each sub-block scale a 6-bit code times one f16 super-scale (136 bytes, 4.25 bits/weight).
//! Quantized like `quantize_iq4_xs` (what llama-quantize calls; the `_ref` function is the
//! same): each sub-block's scale is IQ4_NL's fit ([`super::iq4_nl::block_scale`]), then the
//! scales are coded against `-max_scale / 32` and the indices recomputed with the coded scale.
//!
//! Byte-identical to ggml (llama-cpp-python 0.3.36's libggml-base) with every kernel: the AVX2
//! tier fits the eight sub-blocks in eight lanes (the IQ4_NL kernel), the rest is shared.

use super::float::f16_bits_to_f32;
use super::iq4_nl::{best_index, block_scale, scale_bits, IQ4NL_VALUES};
use super::kquant::nearest_int;
use super::{BlockFormat, Isa};
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Xs {
    pub d: [u8; 2],
    pub scales_h: [u8; 2],
    pub scales_l: [u8; 4],
    pub qs: [u8; 128],
}

const _: () = assert!(size_of::<BlockIq4Xs>() == 136);

impl BlockIq4Xs {
    /// The block from the eight sub-block scales of `x` (256 values).
    pub(crate) fn from_scales(x: &[f32], scales: &[f32; 8]) -> Self {
        // the scale with the largest magnitude (first wins), signed
        let (mut amax_scale, mut max_scale) = (0f32, 0f32);
        for &s in scales {
            if s.abs() > amax_scale {
                amax_scale = s.abs();
                max_scale = s;
            }
        }
        let d = -max_scale / 32.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut scales_h = 0u16;
        let mut scales_l = [0u8; 4];
        let mut qs = [0u8; 128];
        for (ib, &s) in scales.iter().enumerate() {
            let l = nearest_int(id * s).clamp(-32, 31);
            // the unrounded super-scale, not its f16 value
            let dl = d * l as f32;
            let idl = if dl != 0.0 { 1.0 / dl } else { 0.0 };
            let xb = &x[32 * ib..32 * ib + 32];
            for j in 0..16 {
                let l0 = best_index(&IQ4NL_VALUES, idl * xb[j]) as u8;
                let l1 = best_index(&IQ4NL_VALUES, idl * xb[j + 16]) as u8;
                qs[16 * ib + j] = l0 | (l1 << 4);
            }
            let code = (l + 32) as u16;
            scales_l[ib / 2] |= ((code & 0xF) as u8) << (4 * (ib % 2));
            scales_h |= (code >> 4) << (2 * ib);
        }
        BlockIq4Xs {
            d: scale_bits(d).to_le_bytes(),
            scales_h: scales_h.to_le_bytes(),
            scales_l,
            qs,
        }
    }
}

impl BlockFormat for BlockIq4Xs {
    const TYPE: GgmlType = GgmlType::Iq4Xs;
    const ELEMS: usize = 256;

    fn quantize_block(x: &[f32]) -> Self {
        let scales: [f32; 8] = std::array::from_fn(|ib| block_scale(&x[32 * ib..32 * ib + 32]));
        Self::from_scales(x, &scales)
    }

    fn quantize_blocks(isa: Isa, x: &[f32], out: &mut [Self]) {
        for (b, c) in out.iter_mut().zip(x.chunks_exact(256)) {
            #[cfg(target_arch = "x86_64")]
            if matches!(isa, Isa::Avx2 | Isa::Avx512) {
                // SAFETY: the dispatch only passes tiers this CPU supports.
                let (scales, _) = unsafe { super::iq4_nl::x86::fit8(c) };
                *b = Self::from_scales(c, &scales);
                continue;
            }
            let _ = isa;
            *b = Self::quantize_block(c);
        }
    }

    fn dequantize_block(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        let scales_h = u16::from_le_bytes(self.scales_h);
        for ib in 0..8 {
            let ls = ((self.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32
                | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
            let dl = d * (ls - 32) as f32;
            for j in 0..16 {
                let q = self.qs[16 * ib + j];
                out[32 * ib + j] = dl * IQ4NL_VALUES[(q & 0xF) as usize] as f32;
                out[32 * ib + 16 + j] = dl * IQ4NL_VALUES[(q >> 4) as usize] as f32;
            }
        }
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
    use super::{BlockIq4Xs, IQ4NL_VALUES};
    use std::arch::x86_64::*;

    /// The eight sub-block scales `d·(ls − 32)`, each one rounded product as in the scalar
    /// dequantizer.
    #[inline(always)]
    fn sub_scales(b: &BlockIq4Xs) -> [f32; 8] {
        let d = f16_bits_to_f32(u16::from_le_bytes(b.d));
        let scales_h = u16::from_le_bytes(b.scales_h);
        std::array::from_fn(|ib| {
            let ls = ((b.scales_l[ib / 2] >> (4 * (ib % 2))) & 0xF) as i32
                | ((((scales_h >> (2 * ib)) & 3) as i32) << 4);
            d * (ls - 32) as f32
        })
    }

    /// The table values (i8) of sub-block `ib`'s 32 elements: `[elements 0..16, 16..32]`, from
    /// the low and high nibbles of `qs[16ib..16ib + 16]`, looked up with a byte shuffle.
    #[inline(always)]
    unsafe fn values(b: &BlockIq4Xs, ib: usize, table: __m128i) -> [__m128i; 2] {
        // SAFETY: reads qs[16ib..16ib + 16] (ib < 8, qs has 128 bytes); the rest is register
        // work on SSSE3, which the callers' AVX2 / AVX-512 target features include.
        unsafe {
            let m4 = _mm_set1_epi8(0x0F);
            let raw = _mm_loadu_si128(b.qs.as_ptr().add(16 * ib) as *const __m128i);
            [
                _mm_shuffle_epi8(table, _mm_and_si128(raw, m4)),
                _mm_shuffle_epi8(table, _mm_and_si128(_mm_srli_epi16::<4>(raw), m4)),
            ]
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize(blocks: &[BlockIq4Xs], out: &mut [f32]) {
        // SAFETY (whole body): the table has 16 bytes; `values` reads within qs (ib < 8);
        // each output chunk holds 256 floats and every store writes 8 of them at
        // 32ib + 16half + 8e + (0..8) < 256.
        unsafe {
            let table = _mm_loadu_si128(IQ4NL_VALUES.as_ptr() as *const __m128i);
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let dl = sub_scales(b);
                let p = o.as_mut_ptr();
                for (ib, &s) in dl.iter().enumerate() {
                    let vd = _mm256_set1_ps(s);
                    for (half, v) in values(b, ib, table).into_iter().enumerate() {
                        for (e, w) in [v, _mm_srli_si128::<8>(v)].into_iter().enumerate() {
                            let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(w));
                            // dl · kv[idx], one rounded product as in the scalar code
                            _mm256_storeu_ps(
                                p.add(32 * ib + 16 * half + 8 * e),
                                _mm256_mul_ps(vd, f),
                            );
                        }
                    }
                }
            }
        }
    }

    /// [`dequantize`] with 16-lane vectors: one store per half sub-block.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn dequantize_avx512(blocks: &[BlockIq4Xs], out: &mut [f32]) {
        // SAFETY (whole body): the table has 16 bytes; `values` reads within qs (ib < 8);
        // each output chunk holds 256 floats and every store writes 16 of them at
        // 32ib + 16half + (0..16) < 256.
        unsafe {
            let table = _mm_loadu_si128(IQ4NL_VALUES.as_ptr() as *const __m128i);
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let dl = sub_scales(b);
                let p = o.as_mut_ptr();
                for (ib, &s) in dl.iter().enumerate() {
                    let vd = _mm512_set1_ps(s);
                    for (half, v) in values(b, ib, table).into_iter().enumerate() {
                        let f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v));
                        // dl · kv[idx], one rounded product as in the scalar code
                        _mm512_storeu_ps(p.add(32 * ib + 16 * half), _mm512_mul_ps(vd, f));
                    }
                }
            }
        }
    }
}
