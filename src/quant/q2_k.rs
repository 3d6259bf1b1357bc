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

/// The 4-bit scale and min codes of the sixteen fitted sub-blocks (`scales[j] = sc | m << 4`)
/// and the f16 super-scales `d = max_s/15`, `dmin = max_m/15` (ggml's second half of
/// `quantize_row_q2_K_ref`, before the requantization).
fn scale_codes(fit_scales: &[f32; 16], fit_mins: &[f32; 16]) -> ([u8; 16], u16, u16) {
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..16 {
        if fit_scales[j] > max_scale {
            max_scale = fit_scales[j];
        }
        if fit_mins[j] > max_min {
            max_min = fit_mins[j];
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
    (scales, d, dmin)
}

impl BlockQ2K {
    /// ggml's `quantize_row_q2_K_ref` for one super-block of 256 weights.
    fn quantize_ref(x: &[f32]) -> Self {
        let x: &[f32; 256] = x.try_into().expect("Q2_K block is 256 weights");
        let mut l = [0u8; 256];
        let mut fit_scales = [0f32; 16];
        let mut fit_mins = [0f32; 16];
        for j in 0..16 {
            let xs: &[f32; 16] = x[16 * j..16 * j + 16].try_into().unwrap();
            let w: [f32; 16] = std::array::from_fn(|i| xs[i].abs());
            let (s, m) = fit_subblock(xs, &w, &mut l[16 * j..16 * j + 16]);
            fit_scales[j] = s;
            fit_mins[j] = m;
        }
        let (scales, d, dmin) = scale_codes(&fit_scales, &fit_mins);
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

        Self::pack(&l, scales, d, dmin)
    }

    /// Pack the final codes (0..=3) with the scale bytes and super-scales: code
    /// `128c + 32k + i` (i < 32) goes to bits 2k of `qs[32c + i]`.
    fn pack(l: &[u8; 256], scales: [u8; 16], d: u16, dmin: u16) -> Self {
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

    fn quantize_blocks(isa: Isa, x: &[f32], out: &mut [Self]) {
        quantize_with_avx2_kernel!(isa, x, out; x86::quantize)
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

/// Sub-blocks of many shapes for the fit tests: Gaussian, uniform, heavy-tailed, integer
/// and half-integer grids, one-signed, sparse, constant, tiny, huge, and exact ties of the
/// Q2_K search grid.
#[cfg(test)]
pub(crate) fn test_subblocks(seed: u64, count: usize) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut x = Vec::with_capacity(16 * count);
    for n in 0..count {
        let scale = 10f32.powf(rng.gen_range(-8.0f32..8.0));
        let shift = rng.gen_range(-2.0f32..2.0);
        let m = rng.gen_range(1..=9);
        // Kind 12: max = p2·(rmin + rdelta·step + nmax) of a Q2_K search step, a zero, and
        // multiples of p2/2, so that this step's iscale·(x − min) lands exactly on ties.
        let step = rng.gen_range(0..16);
        let num = -0.5f32 + 0.1f32 * step as f32 + 3.0f32;
        let p2 = 2f32.powi(rng.gen_range(-12..12));
        let (at_max, at_zero) = (rng.gen_range(0..16), rng.gen_range(0..16));
        for k in 0..16 {
            let g: f32 = rng.sample(StandardNormal);
            let u: f32 = rng.gen_range(-1.0f32..1.0);
            let v = match n % 13 {
                0 => g * scale,
                1 => u,
                2 => u * scale,
                3 => g * g * g,
                4 => rng.gen_range(-m..=m) as f32,
                5 => rng.gen_range(-m..=m) as f32 * 0.5 + 0.25,
                6 => (g + shift) * scale,
                7 => g.abs() * scale,
                8 => [0.0, -0.0, g][rng.gen_range(0..3)],
                9 => [1.0, -1.0, 2.0, 0.0][n % 4] * scale,
                10 => g * 1e-15,
                11 => u * f32::MAX,
                _ if k == at_max => num * p2,
                _ if k == at_zero => 0.0,
                _ => rng.gen_range(0..=5) as f32 * 0.5 * p2,
            };
            x.push(v);
        }
    }
    x
}

#[cfg(target_arch = "x86_64")]
pub(super) mod x86 {
    use super::super::float::f16_bits_to_f32;
    use super::{scale_codes, BlockQ2K};
    use std::arch::x86_64::*;

    /// `nearest_int` on 8 lanes: the same 1.5·2^23 addition and bit extraction.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(in crate::quant) fn nearest_int(v: __m256) -> __m256i {
        let t = _mm256_add_ps(v, _mm256_set1_ps(12582912.0));
        _mm256_sub_epi32(
            _mm256_and_si256(_mm256_castps_si256(t), _mm256_set1_epi32(0x007f_ffff)),
            _mm256_set1_epi32(0x0040_0000),
        )
    }

    /// `q.clamp(0, 3)` on 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn clamp03(q: __m256i) -> __m256i {
        _mm256_min_epi32(
            _mm256_max_epi32(q, _mm256_setzero_si256()),
            _mm256_set1_epi32(3),
        )
    }

    /// Eight 16-value sub-blocks (the first 128 values of `x`) transposed into `xt`: lane j of
    /// vector i is `x[16j + i]`. Two 8x8 transposes (elements 0..8 and 8..16) of unaligned
    /// row loads, by unpack, shuffle and 128-bit permute; the values move bit for bit.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(in crate::quant) fn transpose8(x: &[f32], xt: &mut [__m256; 16]) {
        assert!(x.len() >= 128);
        for half in 0..2 {
            let mut r = [_mm256_setzero_ps(); 8];
            for (j, rj) in r.iter_mut().enumerate() {
                // SAFETY: this reads x[16j + 8·half..][..8], inside the 128 values checked
                // above.
                *rj = unsafe { _mm256_loadu_ps(x.as_ptr().add(16 * j + 8 * half)) };
            }
            // t: pairs of rows interleaved; s[q + 4p]: element q (half 0) / q + 4 (half 1) of
            // rows 4p..4p + 4.
            let t = [
                _mm256_unpacklo_ps(r[0], r[1]),
                _mm256_unpackhi_ps(r[0], r[1]),
                _mm256_unpacklo_ps(r[2], r[3]),
                _mm256_unpackhi_ps(r[2], r[3]),
                _mm256_unpacklo_ps(r[4], r[5]),
                _mm256_unpackhi_ps(r[4], r[5]),
                _mm256_unpacklo_ps(r[6], r[7]),
                _mm256_unpackhi_ps(r[6], r[7]),
            ];
            let s = [
                _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
                _mm256_shuffle_ps::<0x44>(t[4], t[6]),
                _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
                _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
            ];
            for q in 0..4 {
                xt[8 * half + q] = _mm256_permute2f128_ps::<0x20>(s[q], s[q + 4]);
                xt[8 * half + q + 4] = _mm256_permute2f128_ps::<0x31>(s[q], s[q + 4]);
            }
        }
    }

    /// The inverse of [`transpose8`] for codes: `out[16j + i]` = lane j of `v[i]` as a byte
    /// (every lane holds 0..=127). Packs four elements of the eight sub-blocks per register,
    /// then regroups bytes and dwords into the eight 16-byte rows.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(in crate::quant) fn lanes_to_bytes(v: &[__m256i; 16], out: &mut [u8]) {
        assert!(out.len() >= 128);
        // After the packs, half H of group g holds byte 4e + jj = code 4g + e of sub-block
        // 4H + jj; the shuffle makes dword jj of half H those four codes of sub-block 4H + jj.
        let shuf = _mm256_setr_epi8(
            0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6,
            10, 14, 3, 7, 11, 15,
        );
        let mut t = [_mm256_setzero_si256(); 4];
        for (g, tg) in t.iter_mut().enumerate() {
            let a = _mm256_packs_epi32(v[4 * g], v[4 * g + 1]);
            let b = _mm256_packs_epi32(v[4 * g + 2], v[4 * g + 3]);
            *tg = _mm256_shuffle_epi8(_mm256_packs_epi16(a, b), shuf);
        }
        // 4x4 dword transpose per half: r[jj] half H is the row of sub-block 4H + jj.
        let a0 = _mm256_unpacklo_epi32(t[0], t[1]);
        let a1 = _mm256_unpackhi_epi32(t[0], t[1]);
        let b0 = _mm256_unpacklo_epi32(t[2], t[3]);
        let b1 = _mm256_unpackhi_epi32(t[2], t[3]);
        let r = [
            _mm256_unpacklo_epi64(a0, b0),
            _mm256_unpackhi_epi64(a0, b0),
            _mm256_unpacklo_epi64(a1, b1),
            _mm256_unpackhi_epi64(a1, b1),
        ];
        let rows = [
            _mm256_permute2x128_si256::<0x20>(r[0], r[1]),
            _mm256_permute2x128_si256::<0x20>(r[2], r[3]),
            _mm256_permute2x128_si256::<0x31>(r[0], r[1]),
            _mm256_permute2x128_si256::<0x31>(r[2], r[3]),
        ];
        for (k, row) in rows.into_iter().enumerate() {
            // SAFETY: out has at least 128 bytes (checked above); this writes 32k..32k + 32.
            unsafe { _mm256_storeu_si256(out.as_mut_ptr().add(32 * k) as *mut __m256i, row) };
        }
    }

    /// Bytes `r[k]` OR-ed together after shifting row k left by `step·k` bits (every byte of
    /// `r[k]`, masked by `mask`, stays inside its byte).
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(in crate::quant) fn merge_rows(r: &[__m256i], mask: i8, step: i32) -> __m256i {
        let m = _mm256_set1_epi8(mask);
        let mut acc = _mm256_setzero_si256();
        for (k, &row) in r.iter().enumerate() {
            let shift = _mm_cvtsi32_si128(step * k as i32);
            acc = _mm256_or_si256(acc, _mm256_sll_epi16(_mm256_and_si256(row, m), shift));
        }
        acc
    }

    /// [`super::fit_subblock`] with weights |x| on `G` groups of eight sub-blocks at once
    /// (lane j of group g is the sub-block of lane j of `xt[g]`): every lane performs exactly
    /// the scalar operations in the scalar order, its branches turned into per-lane blends.
    /// The groups are independent; they are interleaved element by element only so that their
    /// serial chains (sums, errors, and each step's `min` feeding the next step's grid)
    /// overlap. Returns the codes (lane j of `l[g][i]` is code i of that sub-block), the
    /// scales and the mins (`the_min = −min`).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn fit<const G: usize>(
        xt: &[[__m256; 16]; G],
    ) -> ([[__m256i; 16]; G], [__m256; G], [__m256; G]) {
        let sign = _mm256_set1_ps(-0.0);
        let zero = _mm256_setzero_ps();
        let mut w = [[zero; 16]; G];
        let mut min = [zero; G];
        let mut max = [zero; G];
        let mut sum_w = [zero; G];
        let mut sum_x = [zero; G];
        for g in 0..G {
            for i in 0..16 {
                w[g][i] = _mm256_andnot_ps(sign, xt[g][i]);
            }
            min[g] = xt[g][0];
            max[g] = xt[g][0];
            sum_w[g] = w[g][0];
            sum_x[g] = _mm256_mul_ps(sum_w[g], xt[g][0]);
        }
        for i in 1..16 {
            for g in 0..G {
                // `if (x < min) min = x` is exactly minps(x, min) (NaN and ±0 included);
                // likewise for max.
                min[g] = _mm256_min_ps(xt[g][i], min[g]);
                max[g] = _mm256_max_ps(xt[g][i], max[g]);
                sum_w[g] = _mm256_add_ps(sum_w[g], w[g][i]);
                sum_x[g] = _mm256_add_ps(sum_x[g], _mm256_mul_ps(w[g][i], xt[g][i]));
            }
        }
        let mut degenerate = [zero; G];
        for g in 0..G {
            min[g] = _mm256_andnot_ps(_mm256_cmp_ps::<_CMP_GT_OQ>(min[g], zero), min[g]);
            degenerate[g] = _mm256_cmp_ps::<_CMP_EQ_OQ>(max[g], min[g]);
        }
        let quant = |iscale: __m256, min: __m256, x: __m256| -> __m256i {
            clamp03(nearest_int(_mm256_mul_ps(iscale, _mm256_sub_ps(x, min))))
        };
        // One term w·|scale·L + min − x| of the error sum.
        let err = |scale: __m256, min: __m256, l: __m256i, x: __m256, w: __m256| -> __m256 {
            let diff = _mm256_sub_ps(
                _mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(l)), min),
                x,
            );
            _mm256_mul_ps(w, _mm256_andnot_ps(sign, diff))
        };

        let mut scale = [zero; G];
        let mut lv = [[_mm256_setzero_si256(); 16]; G];
        let mut best = [zero; G];
        let mut iscale = [zero; G];
        for g in 0..G {
            iscale[g] = _mm256_div_ps(_mm256_set1_ps(3.0), _mm256_sub_ps(max[g], min[g]));
            scale[g] = _mm256_div_ps(_mm256_set1_ps(1.0), iscale[g]);
        }
        for i in 0..16 {
            for g in 0..G {
                lv[g][i] = quant(iscale[g], min[g], xt[g][i]);
                let e = err(scale[g], min[g], lv[g][i], xt[g][i], w[g][i]);
                best[g] = _mm256_add_ps(best[g], e);
            }
        }
        let mut laux = [[_mm256_setzero_si256(); 16]; G];
        for is in 0..=15 {
            // (rmin + rdelta·is + nmax) in f32, as the scalar code forms it.
            let num = _mm256_set1_ps(-0.5f32 + 0.1f32 * is as f32 + 3.0f32);
            for g in 0..G {
                iscale[g] = _mm256_div_ps(num, _mm256_sub_ps(max[g], min[g]));
            }
            let (mut sum_l, mut sum_l2, mut sum_xl) = ([zero; G], [zero; G], [zero; G]);
            for i in 0..16 {
                for g in 0..G {
                    laux[g][i] = quant(iscale[g], min[g], xt[g][i]);
                    let lf = _mm256_cvtepi32_ps(laux[g][i]);
                    let wl = _mm256_mul_ps(w[g][i], lf);
                    sum_l[g] = _mm256_add_ps(sum_l[g], wl);
                    sum_l2[g] = _mm256_add_ps(sum_l2[g], _mm256_mul_ps(wl, lf));
                    sum_xl[g] = _mm256_add_ps(sum_xl[g], _mm256_mul_ps(wl, xt[g][i]));
                }
            }
            let mut valid = [zero; G];
            let mut this_scale = [zero; G];
            let mut this_min = [zero; G];
            for g in 0..G {
                let (sum_w, sum_x) = (sum_w[g], sum_x[g]);
                let det = _mm256_sub_ps(
                    _mm256_mul_ps(sum_w, sum_l2[g]),
                    _mm256_mul_ps(sum_l[g], sum_l[g]),
                );
                valid[g] = _mm256_cmp_ps::<_CMP_GT_OQ>(det, zero);
                let s = _mm256_div_ps(
                    _mm256_sub_ps(
                        _mm256_mul_ps(sum_w, sum_xl[g]),
                        _mm256_mul_ps(sum_x, sum_l[g]),
                    ),
                    det,
                );
                let m = _mm256_div_ps(
                    _mm256_sub_ps(
                        _mm256_mul_ps(sum_l2[g], sum_x),
                        _mm256_mul_ps(sum_l[g], sum_xl[g]),
                    ),
                    det,
                );
                let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(m, zero);
                this_min[g] = _mm256_andnot_ps(pos, m);
                this_scale[g] = _mm256_blendv_ps(s, _mm256_div_ps(sum_xl[g], sum_l2[g]), pos);
            }
            let mut cur = [zero; G];
            for i in 0..16 {
                for g in 0..G {
                    let e = err(this_scale[g], this_min[g], laux[g][i], xt[g][i], w[g][i]);
                    cur[g] = _mm256_add_ps(cur[g], e);
                }
            }
            for g in 0..G {
                let better = _mm256_andnot_ps(
                    degenerate[g],
                    _mm256_and_ps(valid[g], _mm256_cmp_ps::<_CMP_LT_OQ>(cur[g], best[g])),
                );
                let better_i = _mm256_castps_si256(better);
                for i in 0..16 {
                    lv[g][i] = _mm256_blendv_epi8(lv[g][i], laux[g][i], better_i);
                }
                best[g] = _mm256_blendv_ps(best[g], cur[g], better);
                scale[g] = _mm256_blendv_ps(scale[g], this_scale[g], better);
                min[g] = _mm256_blendv_ps(min[g], this_min[g], better);
            }
        }
        // Degenerate lanes (max == min): codes 0, scale 0, the_min = −min (their min never
        // changed), as the scalar early return.
        let mut the_min = [zero; G];
        for g in 0..G {
            let keep = _mm256_castps_si256(degenerate[g]);
            for li in lv[g].iter_mut() {
                *li = _mm256_andnot_si256(keep, *li);
            }
            scale[g] = _mm256_andnot_ps(degenerate[g], scale[g]);
            the_min[g] = _mm256_xor_ps(min[g], sign);
        }
        (lv, scale, the_min)
    }

    /// [`BlockQ2K::pack`] with vectors: row k of 32 codes (`l[32k..32k + 32]`) goes to bits
    /// 2(k % 4) of `qs[32(k / 4)..]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pack(l: &[u8; 256], scales: [u8; 16], d: u16, dmin: u16) -> BlockQ2K {
        let mut r = [_mm256_setzero_si256(); 8];
        for (k, rk) in r.iter_mut().enumerate() {
            // SAFETY: this reads l[32k..32k + 32] for k < 8, inside its 256 bytes.
            *rk = unsafe { _mm256_loadu_si256(l.as_ptr().add(32 * k) as *const __m256i) };
        }
        let mut qs = [0u8; 64];
        for c in 0..2 {
            let q = merge_rows(&r[4 * c..4 * c + 4], 3, 2);
            // SAFETY: qs has 64 bytes; this writes 32c..32c + 32.
            unsafe { _mm256_storeu_si256(qs.as_mut_ptr().add(32 * c) as *mut __m256i, q) };
        }
        BlockQ2K {
            scales,
            qs,
            d: d.to_le_bytes(),
            dmin: dmin.to_le_bytes(),
        }
    }

    /// `N` consecutive super-blocks (`x` holds 256·N values) with `G = 2N` groups of eight
    /// sub-blocks fitted together ([`fit`]); the scale codes are the scalar [`scale_codes`],
    /// and the requantization from the stored scales runs on the transposed sub-blocks (lane
    /// j computes exactly the scalar `(x + dm) / dd` of its sub-block).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn quantize_n<const N: usize, const G: usize>(x: &[f32], out: &mut [BlockQ2K]) {
        assert!(G == 2 * N && x.len() == 256 * N && out.len() == N);
        let mut xt = [[_mm256_setzero_ps(); 16]; G];
        for (g, xg) in xt.iter_mut().enumerate() {
            transpose8(&x[128 * g..], xg);
        }
        let (lv, s, m) = fit::<G>(&xt);
        for (n, b) in out.iter_mut().enumerate() {
            let mut fit_scales = [0f32; 16];
            let mut fit_mins = [0f32; 16];
            // SAFETY: both arrays hold 16 f32, two stores of 8 each.
            unsafe {
                for h in 0..2 {
                    _mm256_storeu_ps(fit_scales.as_mut_ptr().add(8 * h), s[2 * n + h]);
                    _mm256_storeu_ps(fit_mins.as_mut_ptr().add(8 * h), m[2 * n + h]);
                }
            }
            let (scales, d, dmin) = scale_codes(&fit_scales, &fit_mins);
            let df = f16_bits_to_f32(d);
            let dminf = f16_bits_to_f32(dmin);
            let dd: [f32; 16] = std::array::from_fn(|j| df * (scales[j] & 0xF) as f32);
            let dm: [f32; 16] = std::array::from_fn(|j| dminf * (scales[j] >> 4) as f32);

            let mut l = [0u8; 256];
            for h in 0..2 {
                let g = 2 * n + h;
                // SAFETY: dd and dm hold 16 f32; these read 8h..8h + 8.
                let (ddv, dmv) = unsafe {
                    (
                        _mm256_loadu_ps(dd.as_ptr().add(8 * h)),
                        _mm256_loadu_ps(dm.as_ptr().add(8 * h)),
                    )
                };
                // A sub-block whose stored scale is 0 keeps its fitted codes.
                let fitted =
                    _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(ddv, _mm256_setzero_ps()));
                let mut q = [_mm256_setzero_si256(); 16];
                for i in 0..16 {
                    let v = _mm256_div_ps(_mm256_add_ps(xt[g][i], dmv), ddv);
                    q[i] = _mm256_blendv_epi8(clamp03(nearest_int(v)), lv[g][i], fitted);
                }
                lanes_to_bytes(&q, &mut l[128 * h..]);
            }
            *b = pack(&l, scales, d, dmin);
        }
    }

    /// ggml's `quantize_row_q2_K_ref`, byte for byte, two super-blocks at a time (four
    /// interleaved groups of eight sub-block fits), then a last single one. The bytes equal
    /// the scalar reference's for all finite input (the only input the public entry points
    /// pass on); with NaN input, a code derived from a NaN may take either NaN's payload where
    /// two meet, as the compiler orders a commutative operation in either version.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize(x: &[f32], out: &mut [BlockQ2K]) {
        let n = out.len().min(x.len() / 256);
        let mut b = 0;
        while b + 2 <= n {
            quantize_n::<2, 4>(&x[256 * b..256 * (b + 2)], &mut out[b..b + 2]);
            b += 2;
        }
        if b < n {
            quantize_n::<1, 2>(&x[256 * b..256 * (b + 1)], &mut out[b..b + 1]);
        }
    }

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

    #[cfg(test)]
    mod tests {
        /// Each lane of [`super::fit`] (four interleaved groups, as the kernel runs it)
        /// equals the scalar `fit_subblock` (weights |x|) of its sub-block: scale and min bit
        /// for bit and every code (the final bytes hide most of the fit, since the codes are
        /// re-derived from the stored 4-bit scales and mins).
        #[test]
        fn fit_equals_scalar_fit_subblock() {
            if !is_x86_feature_detected!("avx2") {
                return;
            }
            let x = super::super::test_subblocks(2, 8 * 6000);
            for (c, xs) in x.chunks_exact(512).enumerate() {
                // SAFETY: AVX2 was detected above; xs has 512 values.
                let (lv, s, m) = unsafe { fit_lanes(xs) };
                for k in 0..32 {
                    let sub: &[f32; 16] = xs[16 * k..16 * k + 16].try_into().unwrap();
                    let w: [f32; 16] = std::array::from_fn(|i| sub[i].abs());
                    let mut l = [0u8; 16];
                    let (ws, wm) = super::super::fit_subblock(sub, &w, &mut l);
                    let got: [u8; 16] = std::array::from_fn(|i| lv[k / 8][i][k % 8] as u8);
                    let what = format!("chunk {c} sub-block {k}: {sub:?}");
                    assert_eq!(s[k].to_bits(), ws.to_bits(), "scale {what}");
                    assert_eq!(m[k].to_bits(), wm.to_bits(), "min {what}");
                    assert_eq!(got, l, "{what}");
                }
            }
        }

        /// The fits of the 32 sub-blocks of `xs` (512 values): codes by group, element and
        /// lane, the scales and the mins.
        #[allow(clippy::type_complexity)]
        #[target_feature(enable = "avx2")]
        unsafe fn fit_lanes(xs: &[f32]) -> ([[[i32; 8]; 16]; 4], [f32; 32], [f32; 32]) {
            use std::arch::x86_64::*;
            let mut xt = [[_mm256_setzero_ps(); 16]; 4];
            for (g, xg) in xt.iter_mut().enumerate() {
                super::transpose8(&xs[128 * g..128 * g + 128], xg);
            }
            let (lv, s, m) = super::fit::<4>(&xt);
            let mut lanes = [[[0i32; 8]; 16]; 4];
            let (mut sc, mut mn) = ([0f32; 32], [0f32; 32]);
            // SAFETY: the stores are of local arrays of 8 elements each.
            unsafe {
                for g in 0..4 {
                    for i in 0..16 {
                        _mm256_storeu_si256(lanes[g][i].as_mut_ptr() as *mut __m256i, lv[g][i]);
                    }
                    _mm256_storeu_ps(sc.as_mut_ptr().add(8 * g), s[g]);
                    _mm256_storeu_ps(mn.as_mut_ptr().add(8 * g), m[g]);
                }
            }
            (lanes, sc, mn)
        }
    }
}
