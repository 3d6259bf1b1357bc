//! NF4 (4-bit NormalFloat) with and without double quantization, with bitsandbytes' semantics,
//! as qforge's extension types (spec/NF4.md).
//!
//! - Codes: the 16-value NF4 table; the nibble of `y = x · (1/absmax)` is the number of the 15
//!   midpoint thresholds strictly below `y` (bitsandbytes' CUDA decision tree). The first
//!   element of each pair is stored in the high nibble.
//! - An all-zero block stores absmax 0 and nibbles 0, as bitsandbytes' CUDA kernel does.
//! - Double quantization: offset = mean of the tensor's absmax values (summed in f64, rounded
//!   once), centred values quantized in groups of 256 with the signed 8-bit dynamic map (nearest
//!   by f32 midpoint, exact ties to the even index), and decoded as
//!   `f32(f32(D[q] · nested_absmax) + offset)`: two rounded operations, no FMA.
//!
//! In GGUF, blocks never cross rows (the writer requires `ne[0] % block == 0`), which for such
//! tensors equals bitsandbytes' flat layout.

use super::{Isa, QuantError};
use crate::gguf::GgmlType;

/// The NF4 code values (bit patterns of bitsandbytes' table).
pub const NF4_BITS: [u32; 16] = [
    0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000,
    0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000,
];

/// Midpoints between adjacent NF4 values, as f32 (the literals of bitsandbytes' CUDA tree).
const NF4_THRESHOLD_BITS: [u32; 15] = [
    0xbf591cd8, 0xbf1c5270, 0xbeeb8480, 0xbeadea76, 0xbe703cec, 0xbe0d38bc, 0xbd3a7871, 0x3d22faff,
    0x3df64862, 0x3e5067e0, 0x3e9582d4, 0x3ec753f9, 0x3f006d04, 0x3f248daf, 0x3f5c89da,
];

/// The signed 8-bit dynamic map `create_dynamic_map(signed=True)` as bitsandbytes writes it.
pub const DQ_MAP_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000,
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333,
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666,
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a,
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a,
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000,
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd,
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334,
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a,
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d,
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148,
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148,
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4,
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d,
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b,
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000,
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b,
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d,
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4,
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148,
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148,
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d,
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a,
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334,
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd,
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000,
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a,
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a,
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666,
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333,
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000,
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000,
];

/// Blocks per double-quantization group.
pub const DQ_GROUP: usize = 256;

/// The NF4 values as f32.
pub fn nf4_values() -> [f32; 16] {
    NF4_BITS.map(f32::from_bits)
}

/// The dynamic map as f32.
pub fn dq_map() -> [f32; 256] {
    DQ_MAP_BITS.map(f32::from_bits)
}

/// The 4-bit code of a normalised value: thresholds strictly below `y` (NaN → 0).
#[inline]
pub fn nf4_index(y: f32) -> u8 {
    NF4_THRESHOLD_BITS
        .iter()
        .map(|&t| (f32::from_bits(t) < y) as u8)
        .sum()
}

fn dq_midpoints() -> &'static [f32; 255] {
    static M: std::sync::OnceLock<[f32; 255]> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let d = dq_map();
        std::array::from_fn(|k| (d[k] + d[k + 1]) * 0.5)
    })
}

/// The 8-bit code of a normalised centred absmax: nearest by f32 midpoint, exact ties to the
/// even index (bitsandbytes' CUDA `dQuantize`), NaN → 0.
pub fn dq_index(z: f32) -> u8 {
    let m = dq_midpoints();
    let c = m.partition_point(|&mk| mk < z);
    if c < 255 && m[c] == z {
        // z sits exactly on the midpoint between codes c and c+1.
        return if c % 2 == 0 { c as u8 } else { (c + 1) as u8 };
    }
    c as u8
}

/// Check a block size: a power of two in 32..=4096.
pub fn check_block(block: usize) -> Result<(), QuantError> {
    if block.is_power_of_two() && (32..=4096).contains(&block) {
        Ok(())
    } else {
        Err(QuantError::Unsupported {
            ty: GgmlType::Nf4 { block: 64 },
            op: "use a block size that is not a power of two in 32..=4096 with",
        })
    }
}

fn absmax(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |a, v| a.max(v.abs()))
}

/// Pack the nibbles of one block normalised by `absmax` into `out` (block/2 bytes).
fn pack_block(x: &[f32], absmax: f32, out: &mut [u8]) {
    // One reciprocal per block, then a multiply (bitsandbytes' kernel). absmax = 0 gives
    // 0·inf = NaN and code 0, as on CUDA.
    let r = 1.0 / absmax;
    for (o, pair) in out.iter_mut().zip(x.chunks_exact(2)) {
        *o = (nf4_index(pair[0] * r) << 4) | nf4_index(pair[1] * r);
    }
}

/// NF4 without double quantization: per block, a little-endian f32 absmax then the nibbles.
/// Called through [`super::quantize`] for `GgmlType::Nf4 { block }`.
pub fn quantize_nf4(src: &[f32], block: usize, dst: &mut [u8]) {
    let bytes = 4 + block / 2;
    for (x, out) in src.chunks_exact(block).zip(dst.chunks_exact_mut(bytes)) {
        let a = absmax(x);
        out[..4].copy_from_slice(&a.to_le_bytes());
        pack_block(x, a, &mut out[4..]);
    }
}

/// Per-block absmax of a tensor (the first pass of double quantization).
pub fn block_absmax(src: &[f32], block: usize) -> Vec<f32> {
    src.chunks_exact(block).map(absmax).collect()
}

/// Per-tensor double-quantization state: the mean that was subtracted and the absmax of each
/// group of 256 centred block scales.
#[derive(Clone, Debug, PartialEq)]
pub struct DqState {
    pub offset: f32,
    pub nested_absmax: Vec<f32>,
}

impl DqState {
    /// Elements of the companion F32 tensor that stores this state: offset, then one nested
    /// absmax per group.
    pub fn tensor_len(n_blocks: usize) -> usize {
        1 + n_blocks.div_ceil(DQ_GROUP)
    }

    /// The companion tensor's values.
    pub fn to_values(&self) -> Vec<f32> {
        std::iter::once(self.offset)
            .chain(self.nested_absmax.iter().copied())
            .collect()
    }

    /// Parse a companion tensor for `n_blocks` blocks.
    pub fn from_values(v: &[f32], n_blocks: usize) -> Option<DqState> {
        (v.len() == Self::tensor_len(n_blocks)).then(|| DqState {
            offset: v[0],
            nested_absmax: v[1..].to_vec(),
        })
    }
}

/// Double-quantize a tensor's block absmax values: returns the state and one 8-bit code per
/// block.
pub fn double_quantize(absmax: &[f32]) -> (DqState, Vec<u8>) {
    let mean = absmax.iter().map(|&a| a as f64).sum::<f64>() / absmax.len().max(1) as f64;
    let offset = mean as f32;
    let mut codes = Vec::with_capacity(absmax.len());
    let mut nested = Vec::with_capacity(absmax.len().div_ceil(DQ_GROUP));
    for group in absmax.chunks(DQ_GROUP) {
        let centred: Vec<f32> = group.iter().map(|&a| a - offset).collect();
        let n = centred.iter().fold(0f32, |m, c| m.max(c.abs()));
        let r = 1.0 / n;
        codes.extend(centred.iter().map(|&c| dq_index(c * r)));
        nested.push(n);
    }
    (
        DqState {
            offset,
            nested_absmax: nested,
        },
        codes,
    )
}

/// The block scale a double-quantized block decodes with.
#[inline]
pub fn dq_absmax(code: u8, nested: f32, offset: f32) -> f32 {
    let scaled = f32::from_bits(DQ_MAP_BITS[code as usize]) * nested;
    scaled + offset
}

/// Quantize blocks `first_block..` of a double-quantized tensor: per block, its 8-bit code
/// (from [`double_quantize`] over the whole tensor) then the nibbles, normalised by the
/// block's own absmax.
pub fn quantize_nf4_dq(src: &[f32], block: usize, codes: &[u8], absmax: &[f32], dst: &mut [u8]) {
    let bytes = 1 + block / 2;
    for (((x, out), &code), &a) in src
        .chunks_exact(block)
        .zip(dst.chunks_exact_mut(bytes))
        .zip(codes)
        .zip(absmax)
    {
        out[0] = code;
        pack_block(x, a, &mut out[1..]);
    }
}

#[inline]
pub(crate) fn dequant_block_scalar(nibbles: &[u8], scale: f32, out: &mut [f32]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(nibbles) {
        pair[0] = f32::from_bits(NF4_BITS[(b >> 4) as usize]) * scale;
        pair[1] = f32::from_bits(NF4_BITS[(b & 15) as usize]) * scale;
    }
}

fn dequant_block(isa: Isa, nibbles: &[u8], scale: f32, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the callers pass tiers this CPU supports; lengths are block/2 and block.
        unsafe { super::simd_avx512::nf4_dequant_block(nibbles, scale, out) };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        // SAFETY: the callers pass tiers this CPU supports; lengths are block/2 and block.
        unsafe { x86::dequant_block(nibbles, scale, out) };
        return;
    }
    let _ = isa;
    dequant_block_scalar(nibbles, scale, out);
}

/// Dequantize NF4 (no double quantization). Called through [`super::dequantize`].
pub fn dequantize_nf4(isa: Isa, src: &[u8], block: usize, dst: &mut [f32]) {
    let bytes = 4 + block / 2;
    for (b, out) in src.chunks_exact(bytes).zip(dst.chunks_exact_mut(block)) {
        let a = f32::from_le_bytes(b[..4].try_into().expect("4 bytes"));
        dequant_block(isa, &b[4..], a, out);
    }
}

/// Dequantize NF4 with double quantization. `first_block` is the index (within the tensor) of
/// the first block in `src`, so a tensor can be decoded in row chunks.
pub fn dequantize_nf4_dq(
    isa: Isa,
    src: &[u8],
    block: usize,
    state: &DqState,
    first_block: usize,
    dst: &mut [f32],
) -> Result<(), QuantError> {
    let bytes = 1 + block / 2;
    let n_blocks = src.len() / bytes;
    if !src.len().is_multiple_of(bytes) || dst.len() != n_blocks * block {
        return Err(QuantError::ByteLength {
            ty: GgmlType::Nf4Dq {
                block: block as u32,
            },
            elements: dst.len(),
            expected: dst.len() / block * bytes,
            actual: src.len(),
        });
    }
    for (i, (b, out)) in src
        .chunks_exact(bytes)
        .zip(dst.chunks_exact_mut(block))
        .enumerate()
    {
        let g = (first_block + i) / DQ_GROUP;
        let nested = *state.nested_absmax.get(g).ok_or(QuantError::ByteLength {
            ty: GgmlType::Nf4Dq {
                block: block as u32,
            },
            elements: (first_block + i + 1) * block,
            expected: state.nested_absmax.len() * DQ_GROUP * block,
            actual: src.len(),
        })?;
        dequant_block(isa, &b[1..], dq_absmax(b[0], nested, state.offset), out);
    }
    Ok(())
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::NF4_BITS;
    use std::arch::x86_64::*;

    /// 32 elements (16 bytes) at a time; a scalar tail handles blocks of other sizes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dequant_block(nibbles: &[u8], scale: f32, out: &mut [f32]) {
        // SAFETY (whole body): reads 16 bytes at i < nibbles.len() - 15 and writes 32 floats
        // at 2i < out.len() - 31 (out.len() == 2 · nibbles.len()).
        unsafe {
            let t_lo = _mm256_loadu_ps(NF4_BITS.as_ptr() as *const f32);
            let t_hi = _mm256_loadu_ps(NF4_BITS.as_ptr().add(8) as *const f32);
            let vs = _mm256_set1_ps(scale);
            let m4 = _mm_set1_epi8(0x0F);
            let n = nibbles.len() / 16 * 16;
            let lookup = |idx8: __m128i| -> __m256 {
                let idx = _mm256_cvtepu8_epi32(idx8);
                let lo = _mm256_permutevar8x32_ps(t_lo, idx);
                let hi = _mm256_permutevar8x32_ps(t_hi, idx);
                // bit 3 of the index moved to the sign bit selects the upper half
                let sel = _mm256_castsi256_ps(_mm256_slli_epi32::<28>(idx));
                _mm256_mul_ps(_mm256_blendv_ps(lo, hi, sel), vs)
            };
            let mut i = 0;
            while i < n {
                let raw = _mm_loadu_si128(nibbles.as_ptr().add(i) as *const __m128i);
                let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), m4);
                let lo = _mm_and_si128(raw, m4);
                // element order: high nibble first
                let a = _mm_unpacklo_epi8(hi, lo);
                let b = _mm_unpackhi_epi8(hi, lo);
                let p = out.as_mut_ptr().add(2 * i);
                _mm256_storeu_ps(p, lookup(a));
                _mm256_storeu_ps(p.add(8), lookup(_mm_srli_si128::<8>(a)));
                _mm256_storeu_ps(p.add(16), lookup(b));
                _mm256_storeu_ps(p.add(24), lookup(_mm_srli_si128::<8>(b)));
                i += 16;
            }
            super::dequant_block_scalar(&nibbles[n..], scale, &mut out[2 * n..]);
        }
    }
}
