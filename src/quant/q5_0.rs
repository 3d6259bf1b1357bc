//! Q5_0: 32 weights as 5-bit codes around 16 with one f16 scale (22 bytes),
//! ggml's `quantize_row_q5_0_ref`. Bit j of `qh` is bit 4 of element j.

use super::float::{f16_bits_to_f32, f32_to_f16_bits};
use super::q4_0::signed_absmax;
use super::{c_f32_to_i32, BlockFormat, Isa};
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ5_0 {
    pub d: [u8; 2],
    /// High bits, a little-endian u32.
    pub qh: [u8; 4],
    pub qs: [u8; 16],
}

const _: () = assert!(size_of::<BlockQ5_0>() == 22);

impl BlockFormat for BlockQ5_0 {
    const TYPE: GgmlType = GgmlType::Q5_0;
    const ELEMS: usize = 32;

    fn quantize_block(x: &[f32]) -> Self {
        let max = signed_absmax(x);
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        let mut qh = 0u32;
        for j in 0..16 {
            let q0 = (c_f32_to_i32(x[j] * id + 16.5) as i8).min(31) as u8 as u32;
            let q1 = (c_f32_to_i32(x[j + 16] * id + 16.5) as i8).min(31) as u8 as u32;
            qs[j] = ((q0 & 0xF) | ((q1 & 0xF) << 4)) as u8;
            qh |= ((q0 & 0x10) >> 4) << j;
            qh |= ((q1 & 0x10) >> 4) << (j + 16);
        }
        BlockQ5_0 {
            d: f32_to_f16_bits(d).to_le_bytes(),
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
        let qh = u32::from_le_bytes(self.qh);
        for j in 0..16 {
            let h0 = ((qh >> j) << 4) & 0x10;
            let h1 = (qh >> (j + 12)) & 0x10;
            out[j] = (((self.qs[j] & 0xF) as u32 | h0) as i32 - 16) as f32 * d;
            out[j + 16] = (((self.qs[j] >> 4) as u32 | h1) as i32 - 16) as f32 * d;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::float::f16_bits_to_f32 as h;
    use super::super::float::f32_to_f16_bits;
    use super::super::simd_x86::{quantize_32, Block32, Q32Kind};
    use super::BlockQ5_0;

    #[inline(always)]
    fn parts(b: &BlockQ5_0) -> Block32 {
        Block32 {
            d: h(u16::from_le_bytes(b.d)),
            m: None,
            qs: b.qs,
            qh: Some(u32::from_le_bytes(b.qh)),
            offset: 16,
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_avx2(x: &[f32], out: &mut [BlockQ5_0]) {
        // SAFETY: this function's own AVX2 feature is what the kernel needs.
        unsafe { quantize_32(x, out, Q32Kind::Q5_0, make) }
    }

    fn make(d: f32, m: f32, qs: [u8; 16], qh: u32) -> BlockQ5_0 {
        let _ = m;
        BlockQ5_0 {
            d: f32_to_f16_bits(d).to_le_bytes(),
            qh: qh.to_le_bytes(),
            qs,
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize_avx2(blocks: &[BlockQ5_0], out: &mut [f32]) {
        // SAFETY: this function's own AVX2 feature is what the kernel needs.
        unsafe { super::super::simd_x86::dequant_blocks_32(blocks, out, parts) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn dequantize_avx512(blocks: &[BlockQ5_0], out: &mut [f32]) {
        // SAFETY: this function's own AVX-512 features are what the kernel needs.
        unsafe { super::super::simd_avx512::dequant_blocks_32(blocks, out, parts) }
    }
}
