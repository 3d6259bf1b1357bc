//! AVX-512 (F + BW + VL) kernels, chosen only when the CPU has them (`Isa::Avx512`). Each one
//! does the same single rounded operations as its scalar twin, 16 lanes at a time, and is
//! tested bit-equal to it (tests/quant_simd.rs, tests/quant_golden.rs run every tier).
#![cfg(target_arch = "x86_64")]

use std::arch::x86_64::*;

use super::nf4::NF4_BITS;
use super::q4_0::BlockQ4_0;
use super::q8_0::BlockQ8_0;

/// f16 → f32, whole groups of 16; returns how many elements were converted.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn f16_to_f32(src: &[u8], dst: &mut [f32]) -> usize {
    let n = dst.len().min(src.len() / 2) / 16 * 16;
    for i in (0..n).step_by(16) {
        // SAFETY: i + 16 <= n; 32 source bytes and 16 destination floats are in bounds.
        unsafe {
            let h = _mm256_loadu_si256(src.as_ptr().add(2 * i) as *const __m256i);
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_cvtph_ps(h));
        }
    }
    n
}

/// f32 → f16 (round to nearest even), whole groups of 16; returns how many were converted.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn f32_to_f16(src: &[f32], dst: &mut [u8]) -> usize {
    let n = src.len().min(dst.len() / 2) / 16 * 16;
    for i in (0..n).step_by(16) {
        // SAFETY: bounds as above.
        unsafe {
            let v = _mm512_loadu_ps(src.as_ptr().add(i));
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(v);
            _mm256_storeu_si256(dst.as_mut_ptr().add(2 * i) as *mut __m256i, h);
        }
    }
    n
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn dequantize_q8_0(blocks: &[BlockQ8_0], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        // SAFETY: 32 code bytes per block (two 16-byte loads), 32 output floats.
        unsafe {
            let d = _mm512_set1_ps(super::float::f16_bits_to_f32(u16::from_le_bytes(b.d)));
            for h in 0..2 {
                let q = _mm_loadu_si128(b.qs.as_ptr().add(16 * h) as *const __m128i);
                let f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
                _mm512_storeu_ps(o.as_mut_ptr().add(16 * h), _mm512_mul_ps(f, d));
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn dequantize_q4_0(blocks: &[BlockQ4_0], out: &mut [f32]) {
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        // SAFETY: 16 code bytes per block, 32 output floats.
        unsafe {
            let d = _mm512_set1_ps(super::float::f16_bits_to_f32(u16::from_le_bytes(b.d)));
            let raw = _mm_loadu_si128(b.qs.as_ptr() as *const __m128i);
            let m4 = _mm_set1_epi8(0x0F);
            let eight = _mm512_set1_epi32(8);
            let halves = [
                _mm_and_si128(raw, m4),
                _mm_and_si128(_mm_srli_epi16::<4>(raw), m4),
            ];
            for (h, v) in halves.into_iter().enumerate() {
                let q = _mm512_sub_epi32(_mm512_cvtepu8_epi32(v), eight);
                let y = _mm512_mul_ps(_mm512_cvtepi32_ps(q), d);
                _mm512_storeu_ps(o.as_mut_ptr().add(16 * h), y);
            }
        }
    }
}

/// NF4 nibbles (high nibble first) times `scale`; whole groups of 16 bytes, scalar tail.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn nf4_dequant_block(nibbles: &[u8], scale: f32, out: &mut [f32]) {
    // SAFETY (whole body): reads 16 bytes at i + 16 <= n and writes 32 floats at
    // 2i + 32 <= out.len() (out.len() == 2 · nibbles.len()).
    unsafe {
        let table = _mm512_loadu_ps(NF4_BITS.as_ptr() as *const f32);
        let vs = _mm512_set1_ps(scale);
        let m4 = _mm_set1_epi8(0x0F);
        let n = nibbles.len() / 16 * 16;
        let mut i = 0;
        while i < n {
            let raw = _mm_loadu_si128(nibbles.as_ptr().add(i) as *const __m128i);
            let hi = _mm_and_si128(_mm_srli_epi16::<4>(raw), m4);
            let lo = _mm_and_si128(raw, m4);
            let p = out.as_mut_ptr().add(2 * i);
            for (k, idx) in [_mm_unpacklo_epi8(hi, lo), _mm_unpackhi_epi8(hi, lo)]
                .into_iter()
                .enumerate()
            {
                let v = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(idx), table);
                _mm512_storeu_ps(p.add(16 * k), _mm512_mul_ps(v, vs));
            }
            i += 16;
        }
        super::nf4::dequant_block_scalar(&nibbles[n..], scale, &mut out[2 * n..]);
    }
}

/// bf16 → f32 (a shift), whole groups of 16; returns how many elements were converted.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn bf16_to_f32(src: &[u8], dst: &mut [f32]) -> usize {
    let n = dst.len().min(src.len() / 2) / 16 * 16;
    for i in (0..n).step_by(16) {
        // SAFETY: i + 16 <= n; 32 source bytes and 16 destination floats are in bounds.
        unsafe {
            let h = _mm256_loadu_si256(src.as_ptr().add(2 * i) as *const __m256i);
            let w = _mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h));
            _mm512_storeu_ps(dst.as_mut_ptr().add(i), _mm512_castsi512_ps(w));
        }
    }
    n
}

/// The 16-lane twin of `simd_x86::dequant_blocks_32` (Q4_1, Q5_0, Q5_1 layouts).
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
#[inline]
pub(crate) unsafe fn dequant_blocks_32<B>(
    blocks: &[B],
    out: &mut [f32],
    parts: impl Fn(&B) -> super::simd_x86::Block32,
) {
    let m4 = _mm_set1_epi8(0x0F);
    let one = _mm512_set1_epi32(1);
    let lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
        let p = parts(b);
        // SAFETY: qs is 16 bytes; o holds 32 floats (two 16-lane stores).
        let raw = unsafe { _mm_loadu_si128(p.qs.as_ptr() as *const __m128i) };
        let halves = [
            _mm_and_si128(raw, m4),
            _mm_and_si128(_mm_srli_epi16::<4>(raw), m4),
        ];
        let vd = _mm512_set1_ps(p.d);
        let off = _mm512_set1_epi32(p.offset);
        for (h, g) in halves.into_iter().enumerate() {
            let mut q = _mm512_cvtepu8_epi32(g);
            if let Some(qh) = p.qh {
                let shifts = _mm512_add_epi32(lane, _mm512_set1_epi32(16 * h as i32));
                let bits =
                    _mm512_and_si512(_mm512_srlv_epi32(_mm512_set1_epi32(qh as i32), shifts), one);
                q = _mm512_or_si512(q, _mm512_slli_epi32::<4>(bits));
            }
            q = _mm512_sub_epi32(q, off);
            let mut y = _mm512_mul_ps(_mm512_cvtepi32_ps(q), vd);
            if let Some(m) = p.m {
                y = _mm512_add_ps(y, _mm512_set1_ps(m));
            }
            // SAFETY: see above.
            unsafe { _mm512_storeu_ps(o.as_mut_ptr().add(16 * h), y) };
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn dequantize_iq4_nl(blocks: &[super::iq4_nl::BlockIq4Nl], out: &mut [f32]) {
    let table: [f32; 16] = super::iq4_nl::IQ4NL_VALUES.map(|v| v as f32);
    // SAFETY (whole body): the table has 16 floats; 16 code bytes per block, 32 output floats.
    unsafe {
        let t = _mm512_loadu_ps(table.as_ptr());
        let m4 = _mm_set1_epi8(0x0F);
        for (b, o) in blocks.iter().zip(out.chunks_exact_mut(32)) {
            let d = _mm512_set1_ps(super::float::f16_bits_to_f32(u16::from_le_bytes(b.d)));
            let raw = _mm_loadu_si128(b.qs.as_ptr() as *const __m128i);
            for (h, g) in [
                _mm_and_si128(raw, m4),
                _mm_and_si128(_mm_srli_epi16::<4>(raw), m4),
            ]
            .into_iter()
            .enumerate()
            {
                let v = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(g), t);
                _mm512_storeu_ps(o.as_mut_ptr().add(16 * h), _mm512_mul_ps(d, v));
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn dequantize_q4_k(blocks: &[super::q4_k::BlockQ4K], out: &mut [f32]) {
    let m4 = _mm_set1_epi8(0x0F);
    for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
        let s = b.sub_scales();
        for c in 0..4 {
            for h in 0..2 {
                // SAFETY: 16 of the 128 code bytes; 16 + 16 of the 256 output floats.
                unsafe {
                    let raw = _mm_loadu_si128(b.qs.as_ptr().add(32 * c + 16 * h) as *const __m128i);
                    for (part, g, (d, m)) in [
                        (0usize, _mm_and_si128(raw, m4), s[2 * c]),
                        (
                            32usize,
                            _mm_and_si128(_mm_srli_epi16::<4>(raw), m4),
                            s[2 * c + 1],
                        ),
                    ] {
                        let f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(g));
                        // d·q − m as two rounded operations, like ggml (no FMA).
                        let y =
                            _mm512_sub_ps(_mm512_mul_ps(_mm512_set1_ps(d), f), _mm512_set1_ps(m));
                        _mm512_storeu_ps(o.as_mut_ptr().add(64 * c + part + 16 * h), y);
                    }
                }
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn dequantize_q6_k(blocks: &[super::q6_k::BlockQ6K], out: &mut [f32]) {
    // SAFETY (whole body): per half, ql has 64 bytes and qh 32 (16-byte loads at offsets < 64
    // / < 32); each output chunk holds 256 floats.
    unsafe {
        let c32 = _mm512_set1_epi32(32);
        for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
            let d = super::float::f16_bits_to_f32(u16::from_le_bytes(b.d));
            for h in 0..2 {
                for g in 0..2 {
                    let ql0 = _mm_loadu_si128(b.ql.as_ptr().add(64 * h + 16 * g) as *const __m128i);
                    let ql1 =
                        _mm_loadu_si128(b.ql.as_ptr().add(64 * h + 32 + 16 * g) as *const __m128i);
                    let qh = _mm_loadu_si128(b.qh.as_ptr().add(32 * h + 16 * g) as *const __m128i);
                    let qs = super::simd_x86::q6k_codes(ql0, ql1, qh);
                    for (k, q) in qs.into_iter().enumerate() {
                        let scale = _mm512_set1_ps(d * b.scales[8 * h + g + 2 * k] as f32);
                        let qi = _mm512_sub_epi32(_mm512_cvtepu8_epi32(q), c32);
                        let y = _mm512_mul_ps(scale, _mm512_cvtepi32_ps(qi));
                        _mm512_storeu_ps(o.as_mut_ptr().add(128 * h + 32 * k + 16 * g), y);
                    }
                }
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(crate) unsafe fn dequantize_q5_k(blocks: &[super::q5_k::BlockQ5K], out: &mut [f32]) {
    use super::kquant::scale_min_k4;
    // SAFETY (whole body): qs has 128 bytes and qh 32 (16-byte loads at offsets < 128 / < 32);
    // each output chunk holds 256 floats.
    unsafe {
        let m4 = _mm_set1_epi8(0x0F);
        let sixteen = _mm_set1_epi8(16);
        for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
            let d = super::float::f16_bits_to_f32(u16::from_le_bytes(b.d));
            let dmin = super::float::f16_bits_to_f32(u16::from_le_bytes(b.dmin));
            for c in 0..4 {
                let (sc1, mn1) = scale_min_k4(2 * c, &b.scales);
                let (sc2, mn2) = scale_min_k4(2 * c + 1, &b.scales);
                let u1 = _mm_set1_epi8((1u8 << (2 * c)) as i8);
                let u2 = _mm_set1_epi8((2u8 << (2 * c)) as i8);
                for h in 0..2 {
                    let raw = _mm_loadu_si128(b.qs.as_ptr().add(32 * c + 16 * h) as *const __m128i);
                    let qh = _mm_loadu_si128(b.qh.as_ptr().add(16 * h) as *const __m128i);
                    let bit1 = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(qh, u1), u1), sixteen);
                    let bit2 = _mm_and_si128(_mm_cmpeq_epi8(_mm_and_si128(qh, u2), u2), sixteen);
                    let lo = _mm_add_epi8(_mm_and_si128(raw, m4), bit1);
                    let hi = _mm_add_epi8(_mm_and_si128(_mm_srli_epi16::<4>(raw), m4), bit2);
                    for (part, q, sc, mn) in [(0usize, lo, sc1, mn1), (32usize, hi, sc2, mn2)] {
                        let f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q));
                        // d·q − m as two rounded operations, like ggml (no FMA).
                        let y = _mm512_sub_ps(
                            _mm512_mul_ps(_mm512_set1_ps(d * sc as f32), f),
                            _mm512_set1_ps(dmin * mn as f32),
                        );
                        _mm512_storeu_ps(o.as_mut_ptr().add(64 * c + part + 16 * h), y);
                    }
                }
            }
        }
    }
}
