//! IQ4_NL: 32 weights as indices into llama.cpp's fixed non-linear 16-level table with one f16
//! scale (18 bytes). Quantized like `quantize_iq4_nl` (what llama-quantize calls): a weighted
//! least-squares scale refined over 15 candidate scales (`ntry = 7`).

use super::float::{f16_bits_to_f32, f32_to_f16_bits};
use super::kquant::GROUP_MAX_EPS;
use super::BlockFormat;
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

    fn dequantize_block(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        for j in 0..16 {
            out[j] = d * IQ4NL_VALUES[(self.qs[j] & 0xF) as usize] as f32;
            out[j + 16] = d * IQ4NL_VALUES[(self.qs[j] >> 4) as usize] as f32;
        }
    }
}
