//! Block quantization: one module per format, each with a `#[repr(C)]` block type, ggml's (or
//! bitsandbytes') scalar reference quantizer, a scalar dequantizer, and SIMD kernels chosen at
//! run time.
//!
//! The public entry points are [`quantize`] and [`dequantize`], which work on raw byte
//! buffers of any ggml type qforge writes, and their `_with` twins that take an explicit
//! [`Isa`] so tests can run every kernel against the scalar reference.
//!
//! This module does no I/O.

/// The body of a `dequantize_blocks` override: run the kernel of the best tier that has one
/// (AVX-512, then AVX2, or NEON), else the scalar per-block code. Each kernel is an
/// `unsafe fn(&[Self], &mut [f32])` compiled for its tier's target features; the dispatch
/// has already checked that `isa` is available on this CPU.
macro_rules! dequantize_with_kernels {
    ($isa:ident, $blocks:ident, $out:ident; $(avx512: $avx512:path,)? $(avx2: $avx2:path,)? $(neon: $neon:path,)?) => {{
        $(
            #[cfg(target_arch = "x86_64")]
            if $isa == $crate::quant::Isa::Avx512 {
                // SAFETY: only tiers this CPU supports reach a kernel.
                unsafe { $avx512($blocks, $out) };
                return;
            }
        )?
        $(
            #[cfg(target_arch = "x86_64")]
            if matches!($isa, $crate::quant::Isa::Avx2 | $crate::quant::Isa::Avx512) {
                // SAFETY: only tiers this CPU supports reach a kernel.
                unsafe { $avx2($blocks, $out) };
                return;
            }
        )?
        $(
            #[cfg(target_arch = "aarch64")]
            if $isa == $crate::quant::Isa::Neon {
                // SAFETY: only tiers this CPU supports reach a kernel.
                unsafe { $neon($blocks, $out) };
                return;
            }
        )?
        let _ = $isa;
        for (b, o) in $blocks.iter().zip($out.chunks_exact_mut(Self::ELEMS)) {
            b.dequantize_block(o);
        }
    }};
}

/// The body of a `quantize_blocks` override with an AVX2 kernel (used on AVX-512 CPUs too),
/// else the scalar reference per block. The kernel must give exactly the scalar bytes.
macro_rules! quantize_with_avx2_kernel {
    ($isa:ident, $x:ident, $out:ident; $avx2:path) => {{
        #[cfg(target_arch = "x86_64")]
        if matches!($isa, $crate::quant::Isa::Avx2 | $crate::quant::Isa::Avx512) {
            // SAFETY: only tiers this CPU supports reach a kernel.
            unsafe { $avx2($x, $out) };
            return;
        }
        let _ = $isa;
        for (b, c) in $out.iter_mut().zip($x.chunks_exact(Self::ELEMS)) {
            *b = Self::quantize_block(c);
        }
    }};
}

pub mod float;
pub mod iq4_nl;
pub mod iq4_xs;
mod isa;
mod kquant;
pub mod nf4;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
#[cfg(target_arch = "x86_64")]
mod simd_avx512;
#[cfg(target_arch = "aarch64")]
mod simd_neon;
#[cfg(target_arch = "x86_64")]
mod simd_x86;
pub mod weighted;

pub use isa::{active_isa, Isa};

use crate::gguf::GgmlType;

/// Errors from the quantization entry points. Callers add the tensor name.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum QuantError {
    /// The element count is not a whole number of blocks.
    #[error("{ty} needs a multiple of {block} elements per row, got {len}")]
    NotBlockMultiple {
        ty: GgmlType,
        block: usize,
        len: usize,
    },
    /// The byte buffer does not match the element count.
    #[error("{ty}: {elements} elements take {expected} bytes, but the buffer has {actual}")]
    ByteLength {
        ty: GgmlType,
        elements: usize,
        expected: usize,
        actual: usize,
    },
    /// ggml refuses NaN and infinity in weights; so do we.
    #[error("non-finite value {value} at element {index}")]
    NonFinite { index: usize, value: f32 },
    /// A type qforge reads or writes only through another API (or not at all).
    #[error("qforge cannot {op} {ty} with this function")]
    Unsupported { ty: GgmlType, op: &'static str },
}

/// A ggml-style block format: `ELEMS` weights stored in `size_of::<Self>()` bytes.
///
/// Implementors are `#[repr(C)]` structs made only of byte arrays (alignment 1), so a byte
/// buffer of the right length can be viewed as a slice of blocks without copying.
pub trait BlockFormat: bytemuck::Pod + Send + Sync {
    /// The ggml type this block belongs to.
    const TYPE: GgmlType;
    /// Weights per block.
    const ELEMS: usize;

    /// The reference quantizer for one block (`x.len() == ELEMS`), bit-exact with ggml's
    /// `quantize_row_*_ref` (or the routine llama-quantize calls for this type).
    fn quantize_block(x: &[f32]) -> Self;

    /// The scalar dequantizer for one block (`out.len() == ELEMS`).
    fn dequantize_block(&self, out: &mut [f32]);

    /// Quantize `out.len()` consecutive blocks. Formats override this with SIMD kernels; any
    /// override must produce exactly the bytes of [`BlockFormat::quantize_block`].
    fn quantize_blocks(isa: Isa, x: &[f32], out: &mut [Self]) {
        let _ = isa;
        for (block, chunk) in out.iter_mut().zip(x.chunks_exact(Self::ELEMS)) {
            *block = Self::quantize_block(chunk);
        }
    }

    /// Dequantize consecutive blocks. Formats override this with SIMD kernels that must equal
    /// [`BlockFormat::dequantize_block`] bit for bit.
    fn dequantize_blocks(isa: Isa, blocks: &[Self], out: &mut [f32]) {
        let _ = isa;
        for (block, chunk) in blocks.iter().zip(out.chunks_exact_mut(Self::ELEMS)) {
            block.dequantize_block(chunk);
        }
    }
}

/// C's float → int conversion as x86 compilers emit it (`cvttss2si`): truncation toward zero,
/// and `i32::MIN` for NaN and out-of-range values. ggml's `(int8_t)(x)` casts then keep the
/// low byte. Matching this keeps degenerate blocks (e.g. subnormal scales whose reciprocal is
/// infinite) byte-identical to ggml.
#[inline(always)]
pub(crate) fn c_f32_to_i32(x: f32) -> i32 {
    if x.is_nan() || !(-2147483648.0..2147483648.0).contains(&x) {
        i32::MIN
    } else {
        x as i32
    }
}

/// Index and value of the first NaN or infinity in `x`, if any.
pub fn first_non_finite(x: &[f32]) -> Option<(usize, f32)> {
    // Checking 8 lanes at a time keeps this cheap next to quantization; the exact
    // index is found only when a chunk contains a bad value.
    let mut base = 0;
    for chunk in x.chunks(64) {
        // all-ones exponent = infinity or NaN; an OR over the chunk vectorises
        let any_bad = chunk.iter().fold(0u32, |acc, v| {
            acc | u32::from(v.to_bits() & 0x7f80_0000 == 0x7f80_0000)
        });
        if any_bad != 0 {
            let i = chunk.iter().position(|v| !v.is_finite()).unwrap_or(0);
            return Some((base + i, chunk[i]));
        }
        base += chunk.len();
    }
    None
}

pub(crate) fn check_lengths(ty: GgmlType, elements: usize, bytes: usize) -> Result<(), QuantError> {
    let block = ty.block_size() as usize;
    if !elements.is_multiple_of(block) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            block,
            len: elements,
        });
    }
    let expected = elements / block * ty.type_size() as usize;
    if bytes != expected {
        return Err(QuantError::ByteLength {
            ty,
            elements,
            expected,
            actual: bytes,
        });
    }
    Ok(())
}

pub(crate) fn quantize_as<B: BlockFormat>(isa: Isa, src: &[f32], dst: &mut [u8]) {
    let blocks: &mut [B] = bytemuck::cast_slice_mut(dst);
    B::quantize_blocks(isa, src, blocks);
}

fn dequantize_as<B: BlockFormat>(isa: Isa, src: &[u8], dst: &mut [f32]) {
    let blocks: &[B] = bytemuck::cast_slice(src);
    B::dequantize_blocks(isa, blocks, dst);
}

/// Quantize (or convert) `src` to `ty`, writing exactly `ty.bytes_for(src.len())` bytes.
///
/// Uses the fastest kernel this CPU supports; the output does not depend on which.
/// NaN or infinity anywhere in `src` is an error, as in ggml.
pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    quantize_with(active_isa(), ty, src, dst)
}

/// [`quantize`] with an explicit instruction set (falls back to scalar code where `isa`
/// has no kernel for `ty`). `isa` must be available on this CPU ([`Isa::is_available`]);
/// an unavailable one is treated as [`Isa::Scalar`].
pub fn quantize_with(
    isa: Isa,
    ty: GgmlType,
    src: &[f32],
    dst: &mut [u8],
) -> Result<(), QuantError> {
    check_lengths(ty, src.len(), dst.len())?;
    if let Some((index, value)) = first_non_finite(src) {
        return Err(QuantError::NonFinite { index, value });
    }
    quantize_impl(isa.or_scalar(), ty, src, dst)
}

fn quantize_impl(isa: Isa, ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    check_lengths(ty, src.len(), dst.len())?;
    match ty {
        GgmlType::F32 => float::f32_to_le_bytes(src, dst),
        GgmlType::F16 => float::f32_to_f16_bytes(isa, src, dst),
        GgmlType::Bf16 => float::f32_to_bf16_bytes(src, dst),
        GgmlType::Q8_0 => quantize_as::<q8_0::BlockQ8_0>(isa, src, dst),
        GgmlType::Q4_0 => quantize_as::<q4_0::BlockQ4_0>(isa, src, dst),
        GgmlType::Q4_1 => quantize_as::<q4_1::BlockQ4_1>(isa, src, dst),
        GgmlType::Q5_0 => quantize_as::<q5_0::BlockQ5_0>(isa, src, dst),
        GgmlType::Q5_1 => quantize_as::<q5_1::BlockQ5_1>(isa, src, dst),
        GgmlType::Q2K => quantize_as::<q2_k::BlockQ2K>(isa, src, dst),
        GgmlType::Q3K => quantize_as::<q3_k::BlockQ3K>(isa, src, dst),
        GgmlType::Q4K => quantize_as::<q4_k::BlockQ4K>(isa, src, dst),
        GgmlType::Q5K => quantize_as::<q5_k::BlockQ5K>(isa, src, dst),
        GgmlType::Q6K => quantize_as::<q6_k::BlockQ6K>(isa, src, dst),
        GgmlType::Iq4Nl => quantize_as::<iq4_nl::BlockIq4Nl>(isa, src, dst),
        GgmlType::Iq4Xs => quantize_as::<iq4_xs::BlockIq4Xs>(isa, src, dst),
        GgmlType::Nf4 { block } => nf4::quantize_nf4(src, block as usize, dst),
        other => {
            return Err(QuantError::Unsupported {
                ty: other,
                op: "quantize to",
            })
        }
    }
    Ok(())
}

/// [`quantize`] for input the caller has already checked with [`first_non_finite`] (the
/// converter checks every chunk once as it reads it). Lengths are still checked; non-finite
/// input gives deterministic bytes rather than an error.
pub fn quantize_prechecked(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    quantize_impl(active_isa().or_scalar(), ty, src, dst)
}

/// Dequantize `src` (raw bytes of type `ty`) into `dst`, whose length is the element count.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    dequantize_with(active_isa(), ty, src, dst)
}

/// [`dequantize`] with an explicit instruction set (see [`quantize_with`]).
pub fn dequantize_with(
    isa: Isa,
    ty: GgmlType,
    src: &[u8],
    dst: &mut [f32],
) -> Result<(), QuantError> {
    let isa = isa.or_scalar();
    check_lengths(ty, dst.len(), src.len())?;
    match ty {
        GgmlType::F32 => float::le_bytes_to_f32(src, dst),
        GgmlType::F16 => float::f16_bytes_to_f32(isa, src, dst),
        GgmlType::Bf16 => float::bf16_bytes_to_f32(isa, src, dst),
        GgmlType::Q8_0 => dequantize_as::<q8_0::BlockQ8_0>(isa, src, dst),
        GgmlType::Q4_0 => dequantize_as::<q4_0::BlockQ4_0>(isa, src, dst),
        GgmlType::Q4_1 => dequantize_as::<q4_1::BlockQ4_1>(isa, src, dst),
        GgmlType::Q5_0 => dequantize_as::<q5_0::BlockQ5_0>(isa, src, dst),
        GgmlType::Q5_1 => dequantize_as::<q5_1::BlockQ5_1>(isa, src, dst),
        GgmlType::Q2K => dequantize_as::<q2_k::BlockQ2K>(isa, src, dst),
        GgmlType::Q3K => dequantize_as::<q3_k::BlockQ3K>(isa, src, dst),
        GgmlType::Q4K => dequantize_as::<q4_k::BlockQ4K>(isa, src, dst),
        GgmlType::Q5K => dequantize_as::<q5_k::BlockQ5K>(isa, src, dst),
        GgmlType::Q6K => dequantize_as::<q6_k::BlockQ6K>(isa, src, dst),
        GgmlType::Iq4Nl => dequantize_as::<iq4_nl::BlockIq4Nl>(isa, src, dst),
        GgmlType::Iq4Xs => dequantize_as::<iq4_xs::BlockIq4Xs>(isa, src, dst),
        GgmlType::Nf4 { block } => nf4::dequantize_nf4(isa, src, block as usize, dst),
        other => {
            return Err(QuantError::Unsupported {
                ty: other,
                op: "dequantize",
            })
        }
    }
    Ok(())
}
