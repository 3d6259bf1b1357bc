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
}
