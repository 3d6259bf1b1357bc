//! Q5_1: 32 weights as 5-bit codes with an f16 scale and an f16 minimum (24 bytes),
//! ggml's `quantize_row_q5_1_ref`.

use super::float::{f16_bits_to_f32, f32_to_f16_bits};
use super::q4_1::min_max;
use super::{c_f32_to_i32, BlockFormat, Isa};
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

const _: () = assert!(size_of::<BlockQ5_1>() == 24);

impl BlockFormat for BlockQ5_1 {
    const TYPE: GgmlType = GgmlType::Q5_1;
    const ELEMS: usize = 32;

    fn quantize_block(x: &[f32]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 31.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        let mut qh = 0u32;
        for j in 0..16 {
            // (uint8_t)(x + 0.5f) with no clamp: the largest reachable code is 31.
            let q0 = c_f32_to_i32((x[j] - min) * id + 0.5) as u8 as u32;
            let q1 = c_f32_to_i32((x[j + 16] - min) * id + 0.5) as u8 as u32;
            qs[j] = ((q0 & 0xF) | ((q1 & 0xF) << 4)) as u8;
            qh |= ((q0 & 0x10) >> 4) << j;
            qh |= ((q1 & 0x10) >> 4) << (j + 16);
        }
        BlockQ5_1 {
            d: f32_to_f16_bits(d).to_le_bytes(),
            m: f32_to_f16_bits(min).to_le_bytes(),
            qh: qh.to_le_bytes(),
            qs,
        }
    }

    fn quantize_blocks(isa: Isa, x: &[f32], out: &mut [Self]) {
        quantize_with_avx2_kernel!(isa, x, out; x86::quantize_avx2)
    }

    fn dequantize_blocks(isa: Isa, blocks: &[Self], out: &mut [f32]) {
        dequantize_with_kernels!(isa, blocks, out;
            avx512: x86::dequantize_avx512,
            avx2: x86::dequantize_avx2,
        )
    }

    fn dequantize_block(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        let m = f16_bits_to_f32(u16::from_le_bytes(self.m));
        let qh = u32::from_le_bytes(self.qh);
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            out[j] = ((self.qs[j] & 0xF) as u32 | h0) as f32 * d + m;
            out[j + 16] = ((self.qs[j] >> 4) as u32 | h1) as f32 * d + m;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::float::f16_bits_to_f32 as h;
    use super::super::float::f32_to_f16_bits;
    use super::super::simd_x86::{quantize_32, Block32, Q32Kind};
    use super::BlockQ5_1;

    #[inline(always)]
    fn parts(b: &BlockQ5_1) -> Block32 {
        Block32 {
            d: h(u16::from_le_bytes(b.d)),
            m: Some(h(u16::from_le_bytes(b.m))),
            qs: b.qs,
            qh: Some(u32::from_le_bytes(b.qh)),
            offset: 0,
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_avx2(x: &[f32], out: &mut [BlockQ5_1]) {
        // SAFETY: this function's own AVX2 feature is what the kernel needs.
        unsafe { quantize_32(x, out, Q32Kind::Q5_1, make) }
    }

    fn make(d: f32, m: f32, qs: [u8; 16], qh: u32) -> BlockQ5_1 {
        BlockQ5_1 {
            d: f32_to_f16_bits(d).to_le_bytes(),
            m: f32_to_f16_bits(m).to_le_bytes(),
            qh: qh.to_le_bytes(),
            qs,
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize_avx2(blocks: &[BlockQ5_1], out: &mut [f32]) {
        // SAFETY: this function's own AVX2 feature is what the kernel needs.
        unsafe { super::super::simd_x86::dequant_blocks_32(blocks, out, parts) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn dequantize_avx512(blocks: &[BlockQ5_1], out: &mut [f32]) {
        // SAFETY: this function's own AVX-512 features are what the kernel needs.
        unsafe { super::super::simd_avx512::dequant_blocks_32(blocks, out, parts) }
    }
}
