//! Q4_1: 32 weights as 4-bit codes with an f16 scale and an f16 minimum (20 bytes),
//! ggml's `quantize_row_q4_1_ref`.

use super::float::{f16_bits_to_f32, f32_to_f16_bits};
use super::{c_f32_to_i32, BlockFormat, Isa};
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_1 {
    pub d: [u8; 2],
    pub m: [u8; 2],
    pub qs: [u8; 16],
}

const _: () = assert!(size_of::<BlockQ4_1>() == 20);

/// (min, max) scanned from ±FLT_MAX as ggml does.
pub(crate) fn min_max(x: &[f32]) -> (f32, f32) {
    let (mut min, mut max) = (f32::MAX, -f32::MAX);
    for &v in x {
        if v < min {
            min = v;
        }
        if v > max {
            max = v;
        }
    }
    (min, max)
}

impl BlockFormat for BlockQ4_1 {
    const TYPE: GgmlType = GgmlType::Q4_1;
    const ELEMS: usize = 32;

    fn quantize_block(x: &[f32]) -> Self {
        let (min, max) = min_max(x);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let mut qs = [0u8; 16];
        for j in 0..16 {
            let q0 = (c_f32_to_i32((x[j] - min) * id + 0.5) as i8).min(15) as u8;
            let q1 = (c_f32_to_i32((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
            qs[j] = q0 | (q1 << 4);
        }
        BlockQ4_1 {
            d: f32_to_f16_bits(d).to_le_bytes(),
            m: f32_to_f16_bits(min).to_le_bytes(),
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
        for j in 0..16 {
            out[j] = (self.qs[j] & 0xF) as f32 * d + m;
            out[j + 16] = (self.qs[j] >> 4) as f32 * d + m;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::float::f16_bits_to_f32 as h;
    use super::super::float::f32_to_f16_bits;
    use super::super::simd_x86::{quantize_32, Block32, Q32Kind};
    use super::BlockQ4_1;

    #[inline(always)]
    fn parts(b: &BlockQ4_1) -> Block32 {
        Block32 {
            d: h(u16::from_le_bytes(b.d)),
            m: Some(h(u16::from_le_bytes(b.m))),
            qs: b.qs,
            qh: None,
            offset: 0,
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize_avx2(x: &[f32], out: &mut [BlockQ4_1]) {
        // SAFETY: this function's own AVX2 feature is what the kernel needs.
        unsafe { quantize_32(x, out, Q32Kind::Q4_1, make) }
    }

    fn make(d: f32, m: f32, qs: [u8; 16], qh: u32) -> BlockQ4_1 {
        let _ = qh;
        BlockQ4_1 {
            d: f32_to_f16_bits(d).to_le_bytes(),
            m: f32_to_f16_bits(m).to_le_bytes(),
            qs,
        }
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize_avx2(blocks: &[BlockQ4_1], out: &mut [f32]) {
        // SAFETY: this function's own AVX2 feature is what the kernel needs.
        unsafe { super::super::simd_x86::dequant_blocks_32(blocks, out, parts) }
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn dequantize_avx512(blocks: &[BlockQ4_1], out: &mut [f32]) {
        // SAFETY: this function's own AVX-512 features are what the kernel needs.
        unsafe { super::super::simd_avx512::dequant_blocks_32(blocks, out, parts) }
    }
}
