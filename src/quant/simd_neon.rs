//! AArch64 NEON dequantizers for Q8_0, Q4_0 and Q4_K, chosen when `Isa::Neon` is detected.
//! Same single rounded operations as the scalar code, four lanes at a time.
//!
//! Tested against the scalar code by the normal test suite on aarch64 (here: cross-built and
//! run under qemu-aarch64 with `CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc`
//! and `CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"`).
#![cfg(target_arch = "aarch64")]

use std::arch::aarch64::*;

use super::float::f16_bits_to_f32;
use super::q4_0::BlockQ4_0;
use super::q4_k::BlockQ4K;
use super::q8_0::BlockQ8_0;

/// Eight signed bytes to two f32x4 vectors.
#[target_feature(enable = "neon")]
unsafe fn i8x8_to_f32(v: int8x8_t) -> (float32x4_t, float32x4_t) {
    let w = vmovl_s8(v);
    (
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(w))),
        vcvtq_f32_s32(vmovl_s16(vget_high_s16(w))),
    )
}

/// Eight unsigned bytes minus `offset` to two f32x4 vectors.
#[target_feature(enable = "neon")]
unsafe fn u8x8_to_f32(v: uint8x8_t, offset: i32) -> (float32x4_t, float32x4_t) {
    let w = vmovl_u8(v);
    let off = vdupq_n_s32(offset);
    let lo = vsubq_s32(vreinterpretq_s32_u32(vmovl_u16(vget_low_u16(w))), off);
    let hi = vsubq_s32(vreinterpretq_s32_u32(vmovl_u16(vget_high_u16(w))), off);
    (vcvtq_f32_s32(lo), vcvtq_f32_s32(hi))
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn dequantize_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let d = vdupq_n_f32(f16_bits_to_f32(u16::from_le_bytes(b.d)));
        for k in 0..4 {
            // SAFETY: 8 of the block's 32 code bytes, and 8 of the 32 output floats.
            unsafe {
                let (a, c) = i8x8_to_f32(vld1_s8(b.qs.as_ptr().add(8 * k)));
                vst1q_f32(o.as_mut_ptr().add(8 * k), vmulq_f32(a, d));
                vst1q_f32(o.as_mut_ptr().add(8 * k + 4), vmulq_f32(c, d));
            }
        }
    }
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn dequantize_q4_0(blocks: &[BlockQ4_0], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let d = vdupq_n_f32(f16_bits_to_f32(u16::from_le_bytes(b.d)));
        // SAFETY: 16 code bytes per block; 32 output floats.
        unsafe {
            let raw = vld1q_u8(b.qs.as_ptr());
            let lo = vandq_u8(raw, vdupq_n_u8(0x0F));
            let hi = vshrq_n_u8::<4>(raw);
            for (k, v) in [
                vget_low_u8(lo),
                vget_high_u8(lo),
                vget_low_u8(hi),
                vget_high_u8(hi),
            ]
            .into_iter()
            .enumerate()
            {
                let (a, c) = u8x8_to_f32(v, 8);
                vst1q_f32(o.as_mut_ptr().add(8 * k), vmulq_f32(a, d));
                vst1q_f32(o.as_mut_ptr().add(8 * k + 4), vmulq_f32(c, d));
            }
        }
    }
}

#[target_feature(enable = "neon")]
pub(crate) unsafe fn dequantize_q4_k(blocks: &[BlockQ4K], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
        let s = b.sub_scales();
        for c in 0..4 {
            let (d1, m1) = s[2 * c];
            let (d2, m2) = s[2 * c + 1];
            for h in 0..2 {
                // SAFETY: 16 of the 128 code bytes; 16 + 16 of the 256 output floats.
                unsafe {
                    let raw = vld1q_u8(b.qs.as_ptr().add(32 * c + 16 * h));
                    let lo = vandq_u8(raw, vdupq_n_u8(0x0F));
                    let hi = vshrq_n_u8::<4>(raw);
                    for (part, v, d, m) in [(0usize, lo, d1, m1), (32usize, hi, d2, m2)] {
                        let (vd, vm) = (vdupq_n_f32(d), vdupq_n_f32(m));
                        for (k, half) in [vget_low_u8(v), vget_high_u8(v)].into_iter().enumerate() {
                            let (a, e) = u8x8_to_f32(half, 0);
                            let base = o.as_mut_ptr().add(64 * c + part + 16 * h + 8 * k);
                            // d·q − m as two rounded operations (no fused multiply-subtract)
                            vst1q_f32(base, vsubq_f32(vmulq_f32(vd, a), vm));
                            vst1q_f32(base.add(4), vsubq_f32(vmulq_f32(vd, e), vm));
                        }
                    }
                }
            }
        }
    }
}
