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
}
