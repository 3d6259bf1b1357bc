//! Q2_K: 16 sub-blocks of 16 weights, 2-bit codes with 4-bit scales and mins (84 bytes per
//! 256 weights), ggml's `quantize_row_q2_K_ref`.
//!
//! Each sub-block is fitted as `x ≈ s·q − m` (q in 0..=3) by `make_qkx2_quants` with the
//! mean-absolute-deviation error (`use_mad`), weighted by |x|. The sixteen scales and mins are
//! then stored as 4-bit indices under two f16 super-scales (`d = max_s/15`,
//! `dmin = max_m/15`), and the codes are re-derived from the stored values; a sub-block whose
//! stored scale is 0 keeps its fitted codes. An all-zero block is 84 zero bytes.
//! Dequantization is `(d·sc)·q − (dmin·m)`, the two products first, unfused.
//!
//! With importance weights (`quantize_weighted`, ggml's `quantize_row_q2_K_impl`) the
//! sub-block fit is `make_qkx3_quants` (squared error, weights `qw·sqrt(σ² + x²)`,
//! `σ² = Σx²/256`) and the 4-bit scale and min codes come from `make_qp_quants`; the
//! requantization and packing are shared with the static path.
//!
//! Every float operation is in ggml's order without FMA, so the bytes equal ggml's (the
//! libggml-base of llama-cpp-python 0.3.36, fixtures/quant/kquant) including degenerate
//! input: huge values overflow to inf/NaN exactly as ggml's do.

use super::float::{f16_bits_to_f32, f32_to_f16_bits};
use super::kquant::{make_qkx2_quants, make_qp_quants, nearest_int};
use super::{BlockFormat, Isa};
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ2K {
    pub scales: [u8; 16],
    pub qs: [u8; 64],
    pub d: [u8; 2],
    pub dmin: [u8; 2],
}

const _: () = assert!(size_of::<BlockQ2K>() == 84);

/// ggml's `make_qkx2_quants` with `use_mad = true` for one 16-weight sub-block, 2-bit codes
/// (nmax 3), `rmin = −0.5`, `rdelta = 0.1`, `nstep = 15`: fit `x ≈ scale·L − the_min` with
/// error `Σ w·|diff|`. Fills `l` and returns (scale, the_min).
fn fit_subblock(x: &[f32; 16], w: &[f32; 16], l: &mut [u8]) -> (f32, f32) {
    const NMAX: i32 = 3;
    const RMIN: f32 = -0.5;
    const RDELTA: f32 = 0.1;
    const NSTEP: i32 = 15;
    let nmax = NMAX as f32;

    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..16 {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        sum_w += w[i];
        sum_x += w[i] * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l.fill(0);
        return (0.0, -min);
    }

    let iscale = nmax / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..16 {
        let q = nearest_int(iscale * (x[i] - min)).clamp(0, NMAX);
        l[i] = q as u8;
        let diff = scale * q as f32 + min - x[i];
        best_error += w[i] * diff.abs();
    }

    let mut laux = [0u8; 16];
    for is in 0..=NSTEP {
        // `min` is the best fit's so far, as in ggml (it changes the grid of later steps).
        let iscale = (RMIN + RDELTA * is as f32 + nmax) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..16 {
            let q = nearest_int(iscale * (x[i] - min)).clamp(0, NMAX);
            laux[i] = q as u8;
            let wl = w[i] * q as f32;
            sum_l += wl;
            sum_l2 += wl * q as f32;
            sum_xl += wl * x[i];
        }
        let det = sum_w * sum_l2 - sum_l * sum_l;
        if det > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / det;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / det;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..16 {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += w[i] * diff.abs();
            }
            if cur_error < best_error {
                l[..16].copy_from_slice(&laux);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

impl BlockQ2K {
    /// ggml's `quantize_row_q2_K_ref` for one super-block of 256 weights.
    fn quantize_ref(x: &[f32]) -> Self {
        let x: &[f32; 256] = x.try_into().expect("Q2_K block is 256 weights");
        let mut l = [0u8; 256];
        let mut fit_scales = [0f32; 16];
        let mut fit_mins = [0f32; 16];
        let (mut max_scale, mut max_min) = (0f32, 0f32);
        for j in 0..16 {
            let xs: &[f32; 16] = x[16 * j..16 * j + 16].try_into().unwrap();
            let w: [f32; 16] = std::array::from_fn(|i| xs[i].abs());
            let (s, m) = fit_subblock(xs, &w, &mut l[16 * j..16 * j + 16]);
            fit_scales[j] = s;
            fit_mins[j] = m;
            if s > max_scale {
                max_scale = s;
            }
            if m > max_min {
                max_min = m;
            }
        }

        // 4-bit indices: C stores `int` results into `uint8_t`, i.e. keeps the low byte.
        let mut scales = [0u8; 16];
        let d = if max_scale > 0.0 {
            let iscale = 15.0 / max_scale;
            for j in 0..16 {
                scales[j] = nearest_int(iscale * fit_scales[j]) as u8;
            }
            f32_to_f16_bits(max_scale / 15.0)
        } else {
            f32_to_f16_bits(0.0)
        };
        let dmin = if max_min > 0.0 {
            let iscale = 15.0 / max_min;
            for j in 0..16 {
                scales[j] |= (nearest_int(iscale * fit_mins[j]) << 4) as u8;
            }
            f32_to_f16_bits(max_min / 15.0)
        } else {
            f32_to_f16_bits(0.0)
        };

        Self::from_fits(x, l, scales, d, dmin)
    }

    /// ggml's `quantize_row_q2_K_impl` (importance weights `qw`) for one super-block of 256
    /// weights: each sub-block is fitted by `make_qkx3_quants(16, 3, …, −0.9, 0.05, 36,
    /// use_mad = false)` under `w = qw·sqrt(σ² + x²)` with `σ² = Σx²/256` (no factor 2), and
    /// the sixteen scales and mins get 4-bit codes from `make_qp_quants(15, …)` weighted by
    /// the sub-blocks' weight sums.
    pub(crate) fn quantize_weighted(x: &[f32], qw: &[f32]) -> Self {
        let x: &[f32; 256] = x.try_into().expect("Q2_K block is 256 weights");
        let qw: &[f32; 256] = qw.try_into().expect("Q2_K block has 256 importance values");
        let mut sum_x2 = 0f32;
        for &v in x {
            sum_x2 += v * v;
        }
        let sigma2 = sum_x2 / 256.0;
        let mut l = [0u8; 256];
        let mut fit_scales = [0f32; 16];
        let mut fit_mins = [0f32; 16];
        let mut sw = [0f32; 16];
        let mut w = [0f32; 16];
        for j in 0..16 {
            let r = 16 * j..16 * j + 16;
            let xs = &x[r.clone()];
            for (k, wk) in w.iter_mut().enumerate() {
                *wk = qw[16 * j + k] * (sigma2 + xs[k] * xs[k]).sqrt();
            }
            let mut sumw = 0f32;
            for &wk in &w {
                sumw += wk;
            }
            sw[j] = sumw;
            // make_qkx3_quants(16, 3, …, −0.9, 0.05, 36, use_mad = false)
            let (s, m) = make_qkx2_quants(3, xs, &w, &mut l[r], -0.9, 0.05, 36);
            fit_scales[j] = s;
            fit_mins[j] = m;
        }
        let mut ls = [0u8; 16];
        let mut lm = [0u8; 16];
        let dm = make_qp_quants(15, &fit_scales, &mut ls, &sw);
        let mm = make_qp_quants(15, &fit_mins, &mut lm, &sw);
        let d = f32_to_f16_bits(dm);
        let dmin = f32_to_f16_bits(mm);
        // C stores `Ls | (Lm << 4)` into a `uint8_t` (the low byte).
        let scales: [u8; 16] = std::array::from_fn(|j| ls[j] | (lm[j] << 4));
        Self::from_fits(x, l, scales, d, dmin)
    }

    /// Re-derive the codes from the stored scales, mins and super-scales (a sub-block whose
    /// stored scale is 0 keeps its fitted codes `l`), then pack the block.
    fn from_fits(x: &[f32; 256], mut l: [u8; 256], scales: [u8; 16], d: u16, dmin: u16) -> Self {
        let df = f16_bits_to_f32(d);
        let dminf = f16_bits_to_f32(dmin);
        for ((&sc, lj), xj) in scales
            .iter()
            .zip(l.chunks_exact_mut(16))
            .zip(x.chunks_exact(16))
        {
            let dd = df * (sc & 0xF) as f32;
            if dd == 0.0 {
                continue;
            }
            let dm = dminf * (sc >> 4) as f32;
            for (q, &v) in lj.iter_mut().zip(xj) {
                *q = nearest_int((v + dm) / dd).clamp(0, 3) as u8;
            }
        }

        let mut qs = [0u8; 64];
        for c in 0..2 {
            for i in 0..32 {
                let q = |k: usize| l[128 * c + 32 * k + i];
                qs[32 * c + i] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
            }
        }
        BlockQ2K {
            scales,
            qs,
            d: d.to_le_bytes(),
            dmin: dmin.to_le_bytes(),
        }
    }

    /// ggml's `dequantize_row_q2_K` for one block.
    fn dequantize_scalar(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        let dmin = f16_bits_to_f32(u16::from_le_bytes(self.dmin));
        for (e, y) in out[..256].iter_mut().enumerate() {
            let sc = self.scales[e / 16];
            let dl = d * (sc & 0xF) as f32;
            let ml = dmin * (sc >> 4) as f32;
            let q = (self.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3;
            *y = dl * q as f32 - ml;
        }
    }
}

impl BlockFormat for BlockQ2K {
    const TYPE: GgmlType = GgmlType::Q2K;
    const ELEMS: usize = 256;

    fn quantize_block(x: &[f32]) -> Self {
        Self::quantize_ref(x)
    }

    fn dequantize_block(&self, out: &mut [f32]) {
        self.dequantize_scalar(out)
    }

    fn dequantize_blocks(isa: Isa, blocks: &[Self], out: &mut [f32]) {
        dequantize_with_kernels!(isa, blocks, out;
            avx512: x86::dequantize_avx512,
            avx2: x86::dequantize,
        )
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::float::f16_bits_to_f32;
    use super::BlockQ2K;
    use std::arch::x86_64::*;

    /// The sixteen sub-block scales `d·(sc & 15)` and mins `dmin·(sc >> 4)`, each one rounded
    /// product exactly as the scalar dequantizer forms it.
    #[inline(always)]
    fn sub_scales(b: &BlockQ2K) -> ([f32; 16], [f32; 16]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(b.d));
        let dmin = f16_bits_to_f32(u16::from_le_bytes(b.dmin));
        (
            std::array::from_fn(|j| d * (b.scales[j] & 0xF) as f32),
            std::array::from_fn(|j| dmin * (b.scales[j] >> 4) as f32),
        )
    }

    /// The 2-bit codes of 16 `qs` bytes at the four shifts 0, 2, 4, 6 (byte i of result k is
    /// `(qs[i] >> 2k) & 3`).
    #[inline(always)]
    fn codes(raw: __m128i) -> [__m128i; 4] {
        // SAFETY: register-only SSE2 operations, available on every x86-64 CPU.
        unsafe {
            let m3 = _mm_set1_epi8(3);
            [
                _mm_and_si128(raw, m3),
                _mm_and_si128(_mm_srli_epi16::<2>(raw), m3),
                _mm_and_si128(_mm_srli_epi16::<4>(raw), m3),
                _mm_and_si128(_mm_srli_epi16::<6>(raw), m3),
            ]
        }
    }

    /// Element `e = 128c + 32k + 16h + j` (j < 16) is code `(qs[32c + 16h + j] >> 2k) & 3` of
    /// sub-block `8c + 2k + h`; each 16-byte load of `qs` feeds four such runs of 16.
    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize(blocks: &[BlockQ2K], out: &mut [f32]) {
        // SAFETY (whole body): qs has 64 bytes (16-byte loads at 32c + 16h < 64); each output
        // chunk holds 256 floats and every store writes 8 of them at 128c + 32k + 16h + 8e
        // + (0..8) < 256.
        unsafe {
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let (dl, ml) = sub_scales(b);
                let p = o.as_mut_ptr();
                for c in 0..2 {
                    for h in 0..2 {
                        let raw =
                            _mm_loadu_si128(b.qs.as_ptr().add(32 * c + 16 * h) as *const __m128i);
                        for (k, q) in codes(raw).into_iter().enumerate() {
                            let j = 8 * c + 2 * k + h;
                            let (vd, vm) = (_mm256_set1_ps(dl[j]), _mm256_set1_ps(ml[j]));
                            for (e, v) in [q, _mm_srli_si128::<8>(q)].into_iter().enumerate() {
                                let f = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
                                // dl·q − ml as two rounded operations, like ggml (no FMA).
                                let y = _mm256_sub_ps(_mm256_mul_ps(vd, f), vm);
                                _mm256_storeu_ps(p.add(128 * c + 32 * k + 16 * h + 8 * e), y);
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`dequantize`] with 16-lane vectors: one store per run of 16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn dequantize_avx512(blocks: &[BlockQ2K], out: &mut [f32]) {
        // SAFETY (whole body): qs has 64 bytes (16-byte loads at 32c + 16h < 64); each output
        // chunk holds 256 floats and every store writes 16 of them at 128c + 32k + 16h
        // + (0..16) < 256.
        unsafe {
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let (dl, ml) = sub_scales(b);
                let p = o.as_mut_ptr();
                for c in 0..2 {
                    for h in 0..2 {
                        let raw =
                            _mm_loadu_si128(b.qs.as_ptr().add(32 * c + 16 * h) as *const __m128i);
                        for (k, q) in codes(raw).into_iter().enumerate() {
                            let j = 8 * c + 2 * k + h;
                            let f = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(q));
                            // dl·q − ml as two rounded operations, like ggml (no FMA).
                            let y = _mm512_sub_ps(
                                _mm512_mul_ps(_mm512_set1_ps(dl[j]), f),
                                _mm512_set1_ps(ml[j]),
                            );
                            _mm512_storeu_ps(p.add(128 * c + 32 * k + 16 * h), y);
                        }
                    }
                }
            }
        }
    }
}
