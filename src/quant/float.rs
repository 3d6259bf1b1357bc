//! Plain float types: f32 ↔ f16 (IEEE round-to-nearest-even, overflow to ±inf, subnormals
//! kept, as ggml) and f32 ↔ bf16 (ggml's rounding with NaN quieting), over little-endian
//! byte buffers. f16 conversion uses F16C / AVX-512 / NEON where the CPU has them; those
//! instructions round exactly like the scalar code.

use super::Isa;

/// ggml's f32 → bf16: NaN is quieted keeping the sign, everything else rounds to nearest even.
#[inline]
pub fn f32_to_bf16_bits(x: f32) -> u16 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return ((bits >> 16) | 64) as u16;
    }
    ((bits + (0x7fff + ((bits >> 16) & 1))) >> 16) as u16
}

#[inline]
pub fn bf16_bits_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// f32 → f16 bits, round to nearest even (ggml's `GGML_FP32_TO_FP16`).
#[inline]
pub fn f32_to_f16_bits(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

#[inline]
pub fn f16_bits_to_f32(h: u16) -> f32 {
    half::f16::from_bits(h).to_f32()
}

pub fn f32_to_le_bytes(src: &[f32], dst: &mut [u8]) {
    for (d, s) in dst.chunks_exact_mut(4).zip(src) {
        d.copy_from_slice(&s.to_le_bytes());
    }
}

pub fn le_bytes_to_f32(src: &[u8], dst: &mut [f32]) {
    for (d, s) in dst.iter_mut().zip(src.chunks_exact(4)) {
        *d = f32::from_le_bytes(s.try_into().expect("4 bytes"));
    }
}

pub fn f32_to_bf16_bytes(src: &[f32], dst: &mut [u8]) {
    for (d, &s) in dst.chunks_exact_mut(2).zip(src) {
        d.copy_from_slice(&f32_to_bf16_bits(s).to_le_bytes());
    }
}

pub fn f32_to_f16_bytes(isa: Isa, src: &[f32], dst: &mut [u8]) {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the dispatch only passes tiers this CPU supports.
        done = unsafe { super::simd_avx512::f32_to_f16(src, dst) };
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        // SAFETY: Avx2 tier implies F16C and AVX (checked by Isa::or_scalar in the dispatch).
        done += unsafe { x86::f32_to_f16(&src[done..], &mut dst[2 * done..]) };
    }
    let _ = isa;
    for (d, &s) in dst[done * 2..].chunks_exact_mut(2).zip(&src[done..]) {
        d.copy_from_slice(&f32_to_f16_bits(s).to_le_bytes());
    }
}

pub fn f16_bytes_to_f32(isa: Isa, src: &[u8], dst: &mut [f32]) {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the dispatch only passes tiers this CPU supports.
        done = unsafe { super::simd_avx512::f16_to_f32(src, dst) };
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        // SAFETY: Avx2 tier implies F16C and AVX.
        done += unsafe { x86::f16_to_f32(&src[2 * done..], &mut dst[done..]) };
    }
    let _ = isa;
    for (d, s) in dst[done..].iter_mut().zip(src[done * 2..].chunks_exact(2)) {
        *d = f16_bits_to_f32(u16::from_le_bytes([s[0], s[1]]));
    }
}

pub fn bf16_bytes_to_f32(isa: Isa, src: &[u8], dst: &mut [f32]) {
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))]
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // SAFETY: the dispatch only passes tiers this CPU supports.
        done = unsafe { super::simd_avx512::bf16_to_f32(src, dst) };
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        // SAFETY: Avx2 tier checked.
        done += unsafe { x86::bf16_to_f32(&src[2 * done..], &mut dst[done..]) };
    }
    let _ = isa;
    for (d, s) in dst[done..].iter_mut().zip(src[done * 2..].chunks_exact(2)) {
        *d = bf16_bits_to_f32(u16::from_le_bytes([s[0], s[1]]));
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Converts whole groups of 8; returns how many elements were done.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f32_to_f16(src: &[f32], dst: &mut [u8]) -> usize {
        let n = src.len().min(dst.len() / 2) / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: i + 8 <= n <= src.len() and 2*(i+8) <= dst.len(); unaligned ops.
            unsafe {
                let v = _mm256_loadu_ps(src.as_ptr().add(i));
                let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(v);
                _mm_storeu_si128(dst.as_mut_ptr().add(2 * i) as *mut __m128i, h);
            }
        }
        n
    }

    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn f16_to_f32(src: &[u8], dst: &mut [f32]) -> usize {
        let n = dst.len().min(src.len() / 2) / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: bounds as above.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i);
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_cvtph_ps(h));
            }
        }
        n
    }

    #[target_feature(enable = "avx2")]
    pub unsafe fn bf16_to_f32(src: &[u8], dst: &mut [f32]) -> usize {
        let n = dst.len().min(src.len() / 2) / 8 * 8;
        for i in (0..n).step_by(8) {
            // SAFETY: bounds as above.
            unsafe {
                let h = _mm_loadu_si128(src.as_ptr().add(2 * i) as *const __m128i);
                let w = _mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h));
                _mm256_storeu_ps(dst.as_mut_ptr().add(i), _mm256_castsi256_ps(w));
            }
        }
        n
    }
}

/// Index of the first NaN or infinity among little-endian floats stored as `bytes`, in
/// elements, for F32, F16 and BF16 (other types: `None`). Runs at memory speed: whole 64-bit
/// words are tested for an all-ones exponent in any lane without branches (a form the
/// compiler vectorises), and only a block that holds a bad value is searched element by
/// element. A trailing partial element is ignored.
pub fn first_non_finite_bytes(ty: crate::gguf::GgmlType, bytes: &[u8]) -> Option<usize> {
    use crate::gguf::GgmlType;
    // Per lane: the exponent mask, and the lane's top bit. A lane is bad when its exponent
    // bits are all ones; `(exp ^ mask) + (top - 1)` carries into the top bit exactly when the
    // lane is good (the masked value is below `top`, so nothing carries into the next lane).
    let (size, mask, top): (usize, u64, u64) = match ty {
        GgmlType::F16 => (2, 0x7c00_7c00_7c00_7c00, 0x8000_8000_8000_8000),
        GgmlType::Bf16 => (2, 0x7f80_7f80_7f80_7f80, 0x8000_8000_8000_8000),
        GgmlType::F32 => (4, 0x7f80_0000_7f80_0000, 0x8000_0000_8000_0000),
        _ => return None,
    };
    let ones = if size == 2 {
        0x0001_0001_0001_0001u64
    } else {
        0x0000_0001_0000_0001u64
    };
    let lane_is_bad = |lane: &[u8]| -> bool {
        let v = if size == 2 {
            u16::from_le_bytes([lane[0], lane[1]]) as u64
        } else {
            u32::from_le_bytes([lane[0], lane[1], lane[2], lane[3]]) as u64
        };
        v & (mask & (u64::MAX >> (64 - 8 * size))) == mask & (u64::MAX >> (64 - 8 * size))
    };
    const BLOCK: usize = 4096;
    let usable = bytes.len() / size * size;
    for (b, block) in bytes[..usable].chunks(BLOCK).enumerate() {
        let words = block.chunks_exact(8);
        let tail = words.remainder();
        let all_good = words.fold(top, |acc, w| {
            let w = u64::from_le_bytes(w.try_into().expect("8 bytes"));
            acc & (((w & mask) ^ mask).wrapping_add(top - ones))
        }) & top
            == top;
        if !all_good || tail.chunks_exact(size).any(lane_is_bad) {
            let i = block
                .chunks_exact(size)
                .position(lane_is_bad)
                .expect("a bad lane in this block");
            return Some((b * BLOCK + i * size) / size);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_ggml() {
        assert_eq!(f32_to_bf16_bits(1.0), 0x3f80);
        // exact tie 1 + 2^-8: round to even (down)
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        // tie with odd lower bit rounds up
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        // NaN quieted with sign kept
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0xff80_0001)), 0xffc0);
        // subnormal not flushed
        assert_eq!(f32_to_bf16_bits(f32::from_bits(0x0001_0000)), 0x0001);
    }

    #[test]
    fn f16_simd_equals_scalar_on_every_pattern() {
        for isa in Isa::available() {
            let src: Vec<u8> = (0..=u16::MAX).flat_map(|h| h.to_le_bytes()).collect();
            let mut a = vec![0f32; 65536];
            let mut b = vec![0f32; 65536];
            f16_bytes_to_f32(Isa::Scalar, &src, &mut a);
            f16_bytes_to_f32(isa, &src, &mut b);
            for i in 0..65536 {
                assert_eq!(a[i].to_bits(), b[i].to_bits(), "{isa:?} f16 {i:#x}");
            }
            let mut c = vec![0f32; 65536];
            let mut d = vec![0f32; 65536];
            bf16_bytes_to_f32(Isa::Scalar, &src, &mut c);
            bf16_bytes_to_f32(isa, &src, &mut d);
            assert!(c.iter().zip(&d).all(|(x, y)| x.to_bits() == y.to_bits()));
            // f32 -> f16 on values around every f16 (ties, midpoints, overflow, subnormals)
            let mut vals = Vec::new();
            for h in (0..=u16::MAX).step_by(7) {
                let x = f16_bits_to_f32(h);
                if x.is_nan() {
                    continue;
                }
                let b = x.to_bits();
                vals.extend([
                    x,
                    f32::from_bits(b + 1),
                    f32::from_bits(b.wrapping_sub(1)),
                    f32::from_bits(b + 0x1000),
                ]);
            }
            vals.extend([65504.0, 65520.0, 65519.99, 1e-8, -6.0e-8, 3e38]);
            let mut e = vec![0u8; vals.len() * 2];
            let mut f = vec![0u8; vals.len() * 2];
            f32_to_f16_bytes(Isa::Scalar, &vals, &mut e);
            f32_to_f16_bytes(isa, &vals, &mut f);
            assert_eq!(e, f, "{isa:?}");
        }
    }

    #[test]
    fn first_non_finite_bytes_finds_every_special_at_every_position() {
        use crate::gguf::GgmlType;
        // (type, element size, encodings of +inf, -inf, a quiet NaN, a NaN with payload)
        let cases: [(GgmlType, usize, [u32; 4]); 3] = [
            (GgmlType::F16, 2, [0x7c00, 0xfc00, 0x7e00, 0x7c01]),
            (GgmlType::Bf16, 2, [0x7f80, 0xff80, 0x7fc0, 0x7f81]),
            (
                GgmlType::F32,
                4,
                [0x7f80_0000, 0xff80_0000, 0x7fc0_0000, 0x7f80_0001],
            ),
        ];
        // finite values whose exponents are nearly all ones: the largest normals, and
        // numbers with every non-exponent bit set
        let near: [(GgmlType, [u32; 3]); 3] = [
            (GgmlType::F16, [0x7bff, 0xfbff, 0x03ff]),
            (GgmlType::Bf16, [0x7f7f, 0xff7f, 0x807f]),
            (GgmlType::F32, [0x7f7f_ffff, 0xff7f_ffff, 0x807f_ffff]),
        ];
        for ((ty, size, bad), (_, good)) in cases.iter().zip(near.iter()) {
            let n = 4096 / size * 2 + 37; // two blocks and a ragged tail
            let put = |buf: &mut [u8], i: usize, v: u32| {
                buf[i * size..(i + 1) * size].copy_from_slice(&v.to_le_bytes()[..*size]);
            };
            let mut clean = vec![0u8; n * size];
            for i in 0..n {
                put(&mut clean, i, good[i % good.len()]);
            }
            assert_eq!(first_non_finite_bytes(*ty, &clean), None, "{ty:?}");
            for pos in [0, 1, 3, 4, 511, 2047, 2048, n - 40, n - 1] {
                for &b in bad {
                    let mut buf = clean.clone();
                    put(&mut buf, pos, b);
                    // a second bad value later never hides the first
                    if pos + 5 < n {
                        put(&mut buf, pos + 5, bad[0]);
                    }
                    assert_eq!(
                        first_non_finite_bytes(*ty, &buf),
                        Some(pos),
                        "{ty:?} {b:#x} at {pos}"
                    );
                }
            }
        }
        assert_eq!(first_non_finite_bytes(GgmlType::Q8_0, &[0xff; 64]), None);
    }
}
