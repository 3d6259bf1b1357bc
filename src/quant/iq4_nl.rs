//! IQ4_NL: 32 weights as indices into llama.cpp's fixed non-linear 16-level table with one f16
//! scale (18 bytes). Quantized like `quantize_iq4_nl` (what llama-quantize calls): a weighted
//! least-squares scale refined over 15 candidate scales (`ntry = 7`).

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

impl BlockFormat for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::Iq4Nl;
    const ELEMS: usize = 32;

    fn quantize_block(x: &[f32]) -> Self {
        let v = &IQ4NL_VALUES;
        let mut weight = [0f32; 32];
        for (w, &xi) in weight.iter_mut().zip(x) {
            *w = xi * xi;
        }
        let (mut amax, mut max) = (0f32, 0f32);
        for &xi in x {
            if xi.abs() > amax {
                amax = xi.abs();
                max = xi;
            }
        }
        let scale = if amax < GROUP_MAX_EPS {
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
        };
        let dh = f32_to_f16_bits(scale);
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

    fn dequantize_block(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        for j in 0..16 {
            out[j] = d * IQ4NL_VALUES[(self.qs[j] & 0xF) as usize] as f32;
            out[j + 16] = d * IQ4NL_VALUES[(self.qs[j] >> 4) as usize] as f32;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BlockIq4Nl, IQ4NL_VALUES};
    use std::arch::x86_64::*;

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
