//! Q3_K: 16 sub-blocks of 16 weights, 3-bit codes (2 low bits in `qs`, the high bit in
//! `hmask`) with 6-bit signed scales (110 bytes per 256 weights), ggml's `quantize_row_q3_K_ref`.
//!
//! Each sub-block gets a signed scale from `make_q3_quants` (codes −4..=3 refined by
//! coordinate descent under weights x²). The scale with the largest magnitude sets the
//! f16 super-scale `d = fp16(1/iscale)` with `iscale = −32/max_scale`; each sub-block stores
//! the 6-bit code `v = clamp(round(iscale·s), −32, 31) + 32`, packed into 12 bytes (low
//! nibbles in bytes 0..8, top two bits in bytes 8..12). The codes are then re-derived from
//! the stored `d·(v − 32)`; a sub-block whose stored scale is 0 keeps make_q3_quants' codes
//! (raw 0 for an all-zero sub-block). An all-zero block is 110 zero bytes. Dequantization is
//! `(d·(v − 32))·(q − 4)`.
//!
//! With importance weights (`quantize_weighted`, ggml's `quantize_row_q3_K_impl`) the
//! sub-block scales come from `make_qx_quants` (weights `qw·sqrt(σ² + x²)`,
//! `σ² = 2·Σx²/256`) and the scale codes and `d` from a weighted `make_qx_quants` over the
//! sixteen scales; the requantization and packing are shared with the static path.
//!
//! Every float operation is in ggml's order without FMA, so the bytes equal ggml's (the
//! libggml-base of llama-cpp-python 0.3.36, fixtures/quant/kquant) including degenerate
//! input: huge values overflow to inf/NaN exactly as ggml's do.

use super::float::{f16_bits_to_f32, f32_to_f16_bits};
use super::kquant::{make_qx_quants_weighted, nearest_int, GROUP_MAX_EPS};
use super::{BlockFormat, Isa};
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ3K {
    pub hmask: [u8; 32],
    pub qs: [u8; 64],
    pub scales: [u8; 12],
    pub d: [u8; 2],
}

const _: () = assert!(size_of::<BlockQ3K>() == 110);

/// ggml's `make_q3_quants(16, 4, x, L, do_rmse = true)`: a signed scale and codes
/// `L = l + 4` (l in −4..=3), or all-zero codes and scale 0 when max |x| < 1e-15.
fn make_q3_quants(x: &[f32], l_out: &mut [i8]) -> f32 {
    const NMAX: i32 = 4;
    let (mut max, mut amax) = (0f32, 0f32);
    for &v in x {
        let ax = v.abs();
        if ax > amax {
            amax = ax;
            max = v;
        }
    }
    if amax < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let iscale = -(NMAX as f32) / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = nearest_int(iscale * v).clamp(-NMAX, NMAX - 1);
        l_out[i] = l as i8;
        let w = v * v;
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut changed = false;
        for (i, &v) in x.iter().enumerate() {
            let w = v * v;
            let cur = l_out[i] as f32;
            let mut slx = sumlx - w * v * cur;
            if slx > 0.0 {
                let mut sl2 = suml2 - w * cur * cur;
                let new_l = nearest_int(v * sl2 / slx).clamp(-NMAX, NMAX - 1);
                if new_l != l_out[i] as i32 {
                    let nl = new_l as f32;
                    slx += w * v * nl;
                    sl2 += w * nl * nl;
                    if sl2 > 0.0 && slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as i8;
                        sumlx = slx;
                        suml2 = sl2;
                        changed = true;
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    for l in l_out.iter_mut() {
        *l += NMAX as i8;
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Store the 6-bit code `v` of sub-block `j` in ggml's 12-byte packing (`s` starts zeroed):
/// the low nibble in byte `j % 8` (low half for j < 8, high half after), the top two bits
/// in byte `8 + j % 4` at bit `2·(j / 4)`.
#[inline(always)]
fn set_scale_code(j: usize, v: u8, s: &mut [u8; 12]) {
    if j < 8 {
        s[j] = v & 0xF;
    } else {
        s[j - 8] |= (v & 0xF) << 4;
    }
    s[8 + j % 4] |= (v >> 4) << (2 * (j / 4));
}

/// The 6-bit code of sub-block `j` from ggml's 12-byte packing.
#[inline(always)]
fn scale_code(j: usize, s: &[u8; 12]) -> u8 {
    let lo = if j < 8 { s[j] & 0xF } else { s[j - 8] >> 4 };
    lo | (((s[8 + j % 4] >> (2 * (j / 4))) & 3) << 4)
}

/// The packed 6-bit scale codes of the sixteen fitted sub-block scales and the f16
/// super-scale (ggml's second half of `quantize_row_q3_K_ref`, before the requantization).
fn scale_codes(fit: &[f32; 16]) -> ([u8; 12], u16) {
    let (mut max_scale, mut amax) = (0f32, 0f32);
    for &s in fit {
        let a = s.abs();
        if a > amax {
            amax = a;
            max_scale = s;
        }
    }

    let mut scales = [0u8; 12];
    let d = if max_scale != 0.0 {
        let iscale = -32.0 / max_scale;
        for (j, &s) in fit.iter().enumerate() {
            // C keeps nearest_int's result in an int8_t (low byte), then clamps.
            let v = ((nearest_int(iscale * s) as i8).clamp(-32, 31) + 32) as u8;
            set_scale_code(j, v, &mut scales);
        }
        f32_to_f16_bits(1.0 / iscale)
    } else {
        f32_to_f16_bits(0.0)
    };
    (scales, d)
}

impl BlockQ3K {
    /// ggml's `quantize_row_q3_K_ref` for one super-block of 256 weights.
    fn quantize_ref(x: &[f32]) -> Self {
        let x: &[f32; 256] = x.try_into().expect("Q3_K block is 256 weights");
        let mut l = [0i8; 256];
        let mut fit = [0f32; 16];
        for j in 0..16 {
            fit[j] = make_q3_quants(&x[16 * j..16 * j + 16], &mut l[16 * j..16 * j + 16]);
        }
        let (scales, d) = scale_codes(&fit);
        Self::from_fits(x, l, scales, d)
    }

    /// ggml's `quantize_row_q3_K_impl` with importance weights `qw` for one super-block of
    /// 256 weights: each sub-block's signed scale and codes come from
    /// `make_qx_quants(16, 4, …, rmse_type 1)` under `w = qw·sqrt(σ² + x²)` with
    /// `σ² = 2·Σx²/256`, and the sixteen 6-bit scale codes from `make_qx_quants(16, 32, …)`
    /// weighted by the sub-blocks' weight sums.
    pub(crate) fn quantize_weighted(x: &[f32], qw: &[f32]) -> Self {
        let x: &[f32; 256] = x.try_into().expect("Q3_K block is 256 weights");
        let qw: &[f32; 256] = qw.try_into().expect("Q3_K block has 256 importance values");
        let mut sum_x2 = 0f32;
        for &v in x {
            sum_x2 += v * v;
        }
        let sigma2 = 2.0 * sum_x2 / 256.0;
        let mut l = [0i8; 256];
        let mut fit = [0f32; 16];
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
            fit[j] = make_qx_quants_weighted(4, xs, &mut l[r], Some(&w));
        }
        let mut ls = [0i8; 16];
        let d_block = make_qx_quants_weighted(32, &fit, &mut ls, Some(&sw));
        let mut scales = [0u8; 12];
        for (j, &v) in ls.iter().enumerate() {
            set_scale_code(j, v as u8, &mut scales);
        }
        Self::from_fits(x, l, scales, f32_to_f16_bits(d_block))
    }

    /// Re-derive the codes from the stored scales (a sub-block whose stored scale is 0 keeps
    /// its fitted codes `l`, offset by 4), then build hmask and qs.
    fn from_fits(x: &[f32; 256], mut l: [i8; 256], scales: [u8; 12], d: u16) -> Self {
        let df = f16_bits_to_f32(d);
        for j in 0..16 {
            let sc = scale_code(j, &scales) as i32 - 32;
            let dd = df * sc as f32;
            if dd == 0.0 {
                continue;
            }
            for i in 16 * j..16 * j + 16 {
                l[i] = (nearest_int(x[i] / dd).clamp(-4, 3) + 4) as i8;
            }
        }

        Self::pack(l, scales, d)
    }

    /// Pack the final codes (0..=7): the high bit of weight e goes to bit e/32 of
    /// `hmask[e % 32]`, the low two bits of weight `128c + 32k + i` to bits 2k of
    /// `qs[32c + i]`.
    fn pack(mut l: [i8; 256], scales: [u8; 12], d: u16) -> Self {
        let mut hmask = [0u8; 32];
        for (e, q) in l.iter_mut().enumerate() {
            if *q > 3 {
                hmask[e % 32] |= 1 << (e / 32);
                *q -= 4;
            }
        }
        let mut qs = [0u8; 64];
        for c in 0..2 {
            for i in 0..32 {
                let q = |k: usize| l[128 * c + 32 * k + i] as u8;
                qs[32 * c + i] = q(0) | (q(1) << 2) | (q(2) << 4) | (q(3) << 6);
            }
        }
        BlockQ3K {
            hmask,
            qs,
            scales,
            d: d.to_le_bytes(),
        }
    }

    /// ggml's `dequantize_row_q3_K` for one block.
    fn dequantize_scalar(&self, out: &mut [f32]) {
        let d = f16_bits_to_f32(u16::from_le_bytes(self.d));
        let dl: [f32; 16] =
            std::array::from_fn(|j| d * (scale_code(j, &self.scales) as i32 - 32) as f32);
        for (e, y) in out[..256].iter_mut().enumerate() {
            let q2 = ((self.qs[32 * (e / 128) + e % 32] >> (2 * ((e % 128) / 32))) & 3) as i32;
            let high = self.hmask[e % 32] & (1 << (e / 32)) != 0;
            let q = if high { q2 } else { q2 - 4 };
            *y = dl[e / 16] * q as f32;
        }
    }
}

impl BlockFormat for BlockQ3K {
    const TYPE: GgmlType = GgmlType::Q3K;
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

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::super::float::f16_bits_to_f32;
    use super::super::kquant::GROUP_MAX_EPS;
    use super::super::q2_k::x86::{lanes_to_bytes, merge_rows, nearest_int, transpose8};
    use super::{scale_code, scale_codes, BlockQ3K};
    use std::arch::x86_64::*;

    /// `nearest_int(v).clamp(-4, 3)` on 8 lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn nearest_clamped(v: __m256) -> __m256i {
        _mm256_min_epi32(
            _mm256_max_epi32(nearest_int(v), _mm256_set1_epi32(-4)),
            _mm256_set1_epi32(3),
        )
    }

    /// [`BlockQ3K::pack`] with vectors: bit 2 of code `32k + i` goes to bit k of `hmask[i]`,
    /// the low two bits of row k of 32 codes (`l[32k..32k + 32]`) to bits 2(k % 4) of
    /// `qs[32(k / 4)..]`.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pack(l: &[u8; 256], scales: [u8; 12], d: u16) -> BlockQ3K {
        let mut r = [_mm256_setzero_si256(); 8];
        let mut high = [_mm256_setzero_si256(); 8];
        for k in 0..8 {
            // SAFETY: this reads l[32k..32k + 32] for k < 8, inside its 256 bytes.
            r[k] = unsafe { _mm256_loadu_si256(l.as_ptr().add(32 * k) as *const __m256i) };
            high[k] = _mm256_srli_epi16::<2>(r[k]);
        }
        let mut hmask = [0u8; 32];
        let mut qs = [0u8; 64];
        // SAFETY: hmask has 32 bytes and qs 64; the stores write 0..32 and 32c..32c + 32.
        unsafe {
            _mm256_storeu_si256(hmask.as_mut_ptr() as *mut __m256i, merge_rows(&high, 1, 1));
            for c in 0..2 {
                let q = merge_rows(&r[4 * c..4 * c + 4], 3, 2);
                _mm256_storeu_si256(qs.as_mut_ptr().add(32 * c) as *mut __m256i, q);
            }
        }
        BlockQ3K {
            hmask,
            qs,
            scales,
            d: d.to_le_bytes(),
        }
    }

    /// [`super::make_q3_quants`] on `G` groups of eight sub-blocks at once (lane j of group g
    /// is the sub-block of lane j of `xt[g]`): every lane performs exactly the scalar
    /// operations in the scalar order, its branches turned into per-lane blends. The groups
    /// are independent; they are interleaved element by element only so that their serial
    /// chains (each refinement step feeds the next through `sumlx`/`suml2`) overlap. A group's
    /// refinement passes run while any of its lanes still changes (at most five); a pass that
    /// changes nothing in a lane leaves its state as it was, so the extra passes of a lane the
    /// scalar code would have stopped change nothing. Returns the codes `L` (0..=7, or 0
    /// throughout an all-zero sub-block; lane j of `l[g][i]` is code i of that sub-block) and
    /// the scales.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn fit<const G: usize>(xt: &[[__m256; 16]; G]) -> ([[__m256i; 16]; G], [__m256; G]) {
        let sign = _mm256_set1_ps(-0.0);
        let zero = _mm256_setzero_ps();
        let (mut amax, mut max) = ([zero; G], [zero; G]);
        for g in 0..G {
            for &v in &xt[g] {
                let ax = _mm256_andnot_ps(sign, v);
                let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(ax, amax[g]);
                amax[g] = _mm256_blendv_ps(amax[g], ax, gt);
                max[g] = _mm256_blendv_ps(max[g], v, gt);
            }
        }
        // Weights x², and the products w·x the sums use (each the scalar's rounded value).
        let mut w = [[zero; 16]; G];
        let mut wx = [[zero; 16]; G];
        let mut iscale = [zero; G];
        for g in 0..G {
            for i in 0..16 {
                w[g][i] = _mm256_mul_ps(xt[g][i], xt[g][i]);
                wx[g][i] = _mm256_mul_ps(w[g][i], xt[g][i]);
            }
            iscale[g] = _mm256_div_ps(_mm256_set1_ps(-4.0), max[g]);
        }
        let mut lv = [[_mm256_setzero_si256(); 16]; G];
        let (mut sumlx, mut suml2) = ([zero; G], [zero; G]);
        for i in 0..16 {
            for g in 0..G {
                lv[g][i] = nearest_clamped(_mm256_mul_ps(iscale[g], xt[g][i]));
                let lf = _mm256_cvtepi32_ps(lv[g][i]);
                sumlx[g] = _mm256_add_ps(sumlx[g], _mm256_mul_ps(wx[g][i], lf));
                suml2[g] = _mm256_add_ps(suml2[g], _mm256_mul_ps(_mm256_mul_ps(w[g][i], lf), lf));
            }
        }
        // Groups still refining: a group stops after a pass in which none of its lanes
        // changed (its state is then final for all its lanes).
        let mut active = [true; G];
        for _ in 0..5 {
            let mut changed = [_mm256_setzero_si256(); G];
            for i in 0..16 {
                for g in 0..G {
                    if !active[g] {
                        continue;
                    }
                    let (x, w, wx) = (xt[g][i], w[g][i], wx[g][i]);
                    let cur = _mm256_cvtepi32_ps(lv[g][i]);
                    let slx = _mm256_sub_ps(sumlx[g], _mm256_mul_ps(wx, cur));
                    let sl2 = _mm256_sub_ps(suml2[g], _mm256_mul_ps(_mm256_mul_ps(w, cur), cur));
                    let new_l = nearest_clamped(_mm256_div_ps(_mm256_mul_ps(x, sl2), slx));
                    let nl = _mm256_cvtepi32_ps(new_l);
                    let slx2 = _mm256_add_ps(slx, _mm256_mul_ps(wx, nl));
                    let sl22 = _mm256_add_ps(sl2, _mm256_mul_ps(_mm256_mul_ps(w, nl), nl));
                    // slx > 0, new_l != l, sl2' > 0 and slx'²·suml2 > sumlx²·sl2'.
                    let differs = _mm256_xor_si256(
                        _mm256_cmpeq_epi32(new_l, lv[g][i]),
                        _mm256_set1_epi32(-1),
                    );
                    let better = _mm256_and_ps(
                        _mm256_and_ps(
                            _mm256_cmp_ps::<_CMP_GT_OQ>(slx, zero),
                            _mm256_cmp_ps::<_CMP_GT_OQ>(sl22, zero),
                        ),
                        _mm256_cmp_ps::<_CMP_GT_OQ>(
                            _mm256_mul_ps(_mm256_mul_ps(slx2, slx2), suml2[g]),
                            _mm256_mul_ps(_mm256_mul_ps(sumlx[g], sumlx[g]), sl22),
                        ),
                    );
                    let take = _mm256_and_si256(differs, _mm256_castps_si256(better));
                    lv[g][i] = _mm256_blendv_epi8(lv[g][i], new_l, take);
                    let take_f = _mm256_castsi256_ps(take);
                    sumlx[g] = _mm256_blendv_ps(sumlx[g], slx2, take_f);
                    suml2[g] = _mm256_blendv_ps(suml2[g], sl22, take_f);
                    changed[g] = _mm256_or_si256(changed[g], take);
                }
            }
            let mut any = false;
            for g in 0..G {
                active[g] &= _mm256_testz_si256(changed[g], changed[g]) == 0;
                any |= active[g];
            }
            if !any {
                break;
            }
        }
        let four = _mm256_set1_epi32(4);
        let eps = _mm256_set1_ps(GROUP_MAX_EPS);
        let mut scale = [zero; G];
        for g in 0..G {
            // All-zero lanes: codes 0 (not 4) and scale 0, as the scalar early return.
            let all_zero = _mm256_cmp_ps::<_CMP_LT_OQ>(amax[g], eps);
            let az = _mm256_castps_si256(all_zero);
            for li in lv[g].iter_mut() {
                *li = _mm256_andnot_si256(az, _mm256_add_epi32(*li, four));
            }
            let s = _mm256_and_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(suml2[g], zero),
                _mm256_div_ps(sumlx[g], suml2[g]),
            );
            scale[g] = _mm256_andnot_ps(all_zero, s);
        }
        (lv, scale)
    }

    /// `N` consecutive super-blocks (`x` holds 256·N values) with `G = 2N` groups of eight
    /// sub-blocks fitted together ([`fit`]); the scale codes are the scalar [`scale_codes`],
    /// and the requantization from the stored scales runs on the transposed sub-blocks (lane
    /// j computes exactly the scalar `x / dd` of its sub-block).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn quantize_n<const N: usize, const G: usize>(x: &[f32], out: &mut [BlockQ3K]) {
        assert!(G == 2 * N && x.len() == 256 * N && out.len() == N);
        let mut xt = [[_mm256_setzero_ps(); 16]; G];
        for (g, xg) in xt.iter_mut().enumerate() {
            transpose8(&x[128 * g..], xg);
        }
        let (lv, s) = fit::<G>(&xt);
        for (n, b) in out.iter_mut().enumerate() {
            let mut fit = [0f32; 16];
            // SAFETY: fit holds 16 f32, two stores of 8.
            unsafe {
                _mm256_storeu_ps(fit.as_mut_ptr(), s[2 * n]);
                _mm256_storeu_ps(fit.as_mut_ptr().add(8), s[2 * n + 1]);
            }
            let (scales, d) = scale_codes(&fit);
            let df = f16_bits_to_f32(d);
            let dd: [f32; 16] =
                std::array::from_fn(|j| df * (scale_code(j, &scales) as i32 - 32) as f32);

            let mut l = [0u8; 256];
            for h in 0..2 {
                let g = 2 * n + h;
                // SAFETY: dd holds 16 f32; this reads 8h..8h + 8.
                let ddv = unsafe { _mm256_loadu_ps(dd.as_ptr().add(8 * h)) };
                // A sub-block whose stored scale is 0 keeps its fitted codes.
                let fitted =
                    _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(ddv, _mm256_setzero_ps()));
                let four = _mm256_set1_epi32(4);
                let mut q = [_mm256_setzero_si256(); 16];
                for i in 0..16 {
                    let v = nearest_clamped(_mm256_div_ps(xt[g][i], ddv));
                    q[i] = _mm256_blendv_epi8(_mm256_add_epi32(v, four), lv[g][i], fitted);
                }
                lanes_to_bytes(&q, &mut l[128 * h..]);
            }
            *b = pack(&l, scales, d);
        }
    }

    /// ggml's `quantize_row_q3_K_ref`, byte for byte, two super-blocks at a time (four
    /// interleaved groups of eight sub-block fits), then a last single one.
    #[target_feature(enable = "avx2")]
    pub unsafe fn quantize(x: &[f32], out: &mut [BlockQ3K]) {
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

    /// The sixteen sub-block scales `d·(v − 32)`, each one rounded product as in the scalar
    /// dequantizer.
    #[inline(always)]
    fn sub_scales(b: &BlockQ3K) -> [f32; 16] {
        let d = f16_bits_to_f32(u16::from_le_bytes(b.d));
        std::array::from_fn(|j| d * (scale_code(j, &b.scales) as i32 - 32) as f32)
    }

    /// The signed 3-bit codes (−4..=3, as i8) of the 16 elements `128c + 32k + 16h + (0..16)`
    /// for k = 0..4: the low two bits `(qs[32c + 16h + j] >> 2k) & 3` from `raw`, minus 4
    /// unless bit `4c + k` of `hmask[16h + j]` (in `hm`) is set.
    #[inline(always)]
    fn codes(raw: __m128i, hm: __m128i, c: usize) -> [__m128i; 4] {
        // SAFETY: register-only SSE2 operations, available on every x86-64 CPU.
        unsafe {
            let m3 = _mm_set1_epi8(3);
            let four = _mm_set1_epi8(4);
            let low = [
                _mm_and_si128(raw, m3),
                _mm_and_si128(_mm_srli_epi16::<2>(raw), m3),
                _mm_and_si128(_mm_srli_epi16::<4>(raw), m3),
                _mm_and_si128(_mm_srli_epi16::<6>(raw), m3),
            ];
            let mut out = low;
            for (k, (q, lo)) in out.iter_mut().zip(low).enumerate() {
                let bit = _mm_set1_epi8((1u8 << (4 * c + k)) as i8);
                let set = _mm_cmpeq_epi8(_mm_and_si128(hm, bit), bit);
                *q = _mm_sub_epi8(lo, _mm_andnot_si128(set, four));
            }
            out
        }
    }

    /// Element `e = 128c + 32k + 16h + j` (j < 16) belongs to sub-block `8c + 2k + h`; its
    /// code comes from `qs[32c + 16h + j]` and `hmask[16h + j]` (see [`codes`]).
    #[target_feature(enable = "avx2")]
    pub unsafe fn dequantize(blocks: &[BlockQ3K], out: &mut [f32]) {
        // SAFETY (whole body): qs has 64 bytes and hmask 32 (16-byte loads at 32c + 16h < 64
        // and 16h < 32); each output chunk holds 256 floats and every store writes 8 of them
        // at 128c + 32k + 16h + 8e + (0..8) < 256.
        unsafe {
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let dl = sub_scales(b);
                let p = o.as_mut_ptr();
                for h in 0..2 {
                    let hm = _mm_loadu_si128(b.hmask.as_ptr().add(16 * h) as *const __m128i);
                    for c in 0..2 {
                        let raw =
                            _mm_loadu_si128(b.qs.as_ptr().add(32 * c + 16 * h) as *const __m128i);
                        for (k, q) in codes(raw, hm, c).into_iter().enumerate() {
                            let vd = _mm256_set1_ps(dl[8 * c + 2 * k + h]);
                            for (e, v) in [q, _mm_srli_si128::<8>(q)].into_iter().enumerate() {
                                let f = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v));
                                _mm256_storeu_ps(
                                    p.add(128 * c + 32 * k + 16 * h + 8 * e),
                                    _mm256_mul_ps(vd, f),
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`dequantize`] with 16-lane vectors: one store per run of 16.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub unsafe fn dequantize_avx512(blocks: &[BlockQ3K], out: &mut [f32]) {
        // SAFETY (whole body): qs has 64 bytes and hmask 32 (16-byte loads at 32c + 16h < 64
        // and 16h < 32); each output chunk holds 256 floats and every store writes 16 of them
        // at 128c + 32k + 16h + (0..16) < 256.
        unsafe {
            for (b, o) in blocks.iter().zip(out.chunks_exact_mut(256)) {
                let dl = sub_scales(b);
                let p = o.as_mut_ptr();
                for h in 0..2 {
                    let hm = _mm_loadu_si128(b.hmask.as_ptr().add(16 * h) as *const __m128i);
                    for c in 0..2 {
                        let raw =
                            _mm_loadu_si128(b.qs.as_ptr().add(32 * c + 16 * h) as *const __m128i);
                        for (k, q) in codes(raw, hm, c).into_iter().enumerate() {
                            let vd = _mm512_set1_ps(dl[8 * c + 2 * k + h]);
                            let f = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(q));
                            _mm512_storeu_ps(
                                p.add(128 * c + 32 * k + 16 * h),
                                _mm512_mul_ps(vd, f),
                            );
                        }
                    }
                }
            }
        }
    }

    #[cfg(test)]
    mod tests {
        /// Each lane of [`super::fit`] (four interleaved groups, as the kernel runs it)
        /// equals the scalar `make_q3_quants` of its sub-block: the scale bit for bit and
        /// every code (the final bytes hide most of the fit, since the codes are re-derived
        /// from the stored 6-bit scales).
        #[test]
        fn fit_equals_scalar_make_q3_quants() {
            if !is_x86_feature_detected!("avx2") {
                return;
            }
            let x = crate::quant::q2_k::test_subblocks(3, 8 * 6000);
            for (c, xs) in x.chunks_exact(512).enumerate() {
                // SAFETY: AVX2 was detected above; xs has 512 values.
                let (lv, s) = unsafe { fit_lanes(xs) };
                for k in 0..32 {
                    let sub = &xs[16 * k..16 * k + 16];
                    let mut l = [0i8; 16];
                    let want = super::super::make_q3_quants(sub, &mut l);
                    let got: [i8; 16] = std::array::from_fn(|i| lv[k / 8][i][k % 8] as i8);
                    let what = format!("chunk {c} sub-block {k}: {sub:?}");
                    assert_eq!(s[k].to_bits(), want.to_bits(), "{what}");
                    assert_eq!(got, l, "{what}");
                }
            }
        }

        /// The fits of the 32 sub-blocks of `xs` (512 values): codes by group, element and
        /// lane, and the scales.
        #[target_feature(enable = "avx2")]
        unsafe fn fit_lanes(xs: &[f32]) -> ([[[i32; 8]; 16]; 4], [f32; 32]) {
            use std::arch::x86_64::*;
            let mut xt = [[_mm256_setzero_ps(); 16]; 4];
            for (g, xg) in xt.iter_mut().enumerate() {
                super::transpose8(&xs[128 * g..128 * g + 128], xg);
            }
            let (lv, s) = super::fit::<4>(&xt);
            let mut lanes = [[[0i32; 8]; 16]; 4];
            let mut sc = [0f32; 32];
            // SAFETY: the stores are of local arrays of 8 elements each.
            unsafe {
                for g in 0..4 {
                    for i in 0..16 {
                        _mm256_storeu_si256(lanes[g][i].as_mut_ptr() as *mut __m256i, lv[g][i]);
                    }
                    _mm256_storeu_ps(sc.as_mut_ptr().add(8 * g), s[g]);
                }
            }
            (lanes, sc)
        }
    }
}
