//! Routines shared by ggml's K-quants: `nearest_int`, `make_qkx2_quants`, `make_qx_quants`
//! and the 6-bit scale/min packing. Float operations are in ggml's order, unfused.

/// ggml's threshold under which a group counts as all zero.
pub(crate) const GROUP_MAX_EPS: f32 = 1e-15;

/// Round half to even via the 1.5·2^23 trick, exactly as ggml (including its behaviour for
/// out-of-range inputs, which ggml only asserts against in debug builds).
#[inline(always)]
pub(crate) fn nearest_int(f: f32) -> i32 {
    let v = f + 12582912.0;
    (v.to_bits() as i32 & 0x007f_ffff) - 0x0040_0000
}

/// ggml's `make_qkx2_quants`: fit `x ≈ scale·L − min` (L in 0..=nmax) under weights `w`,
/// searching `nstep + 1` candidate scales. Returns (scale, the_min ≥ 0).
#[allow(clippy::too_many_arguments)]
pub(crate) fn make_qkx2_quants(
    nmax: i32,
    x: &[f32],
    w: &[f32],
    l_out: &mut [u8],
    rmin: f32,
    rdelta: f32,
    nstep: i32,
) -> (f32, f32) {
    let n = x.len();
    let mut min = x[0];
    let mut max = x[0];
    let mut sum_w = w[0];
    let mut sum_x = sum_w * x[0];
    for i in 1..n {
        if x[i] < min {
            min = x[i];
        }
        if x[i] > max {
            max = x[i];
        }
        let wi = w[i];
        sum_w += wi;
        sum_x += wi * x[i];
    }
    if min > 0.0 {
        min = 0.0;
    }
    if max == min {
        l_out.fill(0);
        return (0.0, -min);
    }
    let mut iscale = nmax as f32 / (max - min);
    let mut scale = 1.0 / iscale;
    let mut best_error = 0f32;
    for i in 0..n {
        let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
        l_out[i] = l as u8;
        let diff = scale * l as f32 + min - x[i];
        best_error += w[i] * (diff * diff);
    }
    if nstep < 1 {
        return (scale, -min);
    }
    let mut laux = [0u8; 32];
    for is in 0..=nstep {
        iscale = (rmin + rdelta * is as f32 + nmax as f32) / (max - min);
        let (mut sum_l, mut sum_l2, mut sum_xl) = (0f32, 0f32, 0f32);
        for i in 0..n {
            let l = nearest_int(iscale * (x[i] - min)).clamp(0, nmax);
            laux[i] = l as u8;
            let wl = w[i] * l as f32;
            sum_l += wl;
            sum_l2 += wl * l as f32;
            sum_xl += wl * x[i];
        }
        let d = sum_w * sum_l2 - sum_l * sum_l;
        if d > 0.0 {
            let mut this_scale = (sum_w * sum_xl - sum_x * sum_l) / d;
            let mut this_min = (sum_l2 * sum_x - sum_l * sum_xl) / d;
            if this_min > 0.0 {
                this_min = 0.0;
                this_scale = sum_xl / sum_l2;
            }
            let mut cur_error = 0f32;
            for i in 0..n {
                let diff = this_scale * laux[i] as f32 + this_min - x[i];
                cur_error += w[i] * (diff * diff);
            }
            if cur_error < best_error {
                l_out[..n].copy_from_slice(&laux[..n]);
                best_error = cur_error;
                scale = this_scale;
                min = this_min;
            }
        }
    }
    (scale, -min)
}

/// ggml's `make_qx_quants` with `rmse_type = 1` and no importance weights: a signed scale
/// for codes `L` in 0..2·nmax (stored offset by nmax).
pub(crate) fn make_qx_quants(nmax: i32, x: &[f32], l_out: &mut [i8]) -> f32 {
    make_qx_quants_weighted(nmax, x, l_out, None)
}

/// ggml's `make_qx_quants` with `rmse_type = 1`: the weight of value i is `qw[i]` when given,
/// else `x[i]²`.
pub(crate) fn make_qx_quants_weighted(
    nmax: i32,
    x: &[f32],
    l_out: &mut [i8],
    qw: Option<&[f32]>,
) -> f32 {
    let weight = |i: usize, v: f32| qw.map_or(v * v, |q| q[i]);
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
    let nmaxf = nmax as f32;
    let mut iscale = -nmaxf / max;
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for (i, &v) in x.iter().enumerate() {
        let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
        l_out[i] = (l + nmax) as i8;
        let w = weight(i, v);
        sumlx += w * v * l as f32;
        suml2 += w * l as f32 * l as f32;
    }
    let mut scale = if suml2 != 0.0 { sumlx / suml2 } else { 0.0 };
    let mut best = scale * sumlx;
    for is in -9..=9 {
        if is == 0 {
            continue;
        }
        iscale = -(nmaxf + 0.1 * is as f32) / max;
        sumlx = 0.0;
        suml2 = 0.0;
        for (i, &v) in x.iter().enumerate() {
            let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
            let w = weight(i, v);
            sumlx += w * v * l as f32;
            suml2 += w * l as f32 * l as f32;
        }
        if suml2 > 0.0 && sumlx * sumlx > best * suml2 {
            for (i, &v) in x.iter().enumerate() {
                let l = nearest_int(iscale * v).clamp(-nmax, nmax - 1);
                l_out[i] = (nmax + l) as i8;
            }
            scale = sumlx / suml2;
            best = scale * sumlx;
        }
    }
    scale
}

/// ggml's `make_qp_quants`: codes `L` in 0..=nmax for non-negative `x` under weights `w`
/// (the super-block fit of scale and min vectors in the weighted K-quants). Returns the scale.
pub(crate) fn make_qp_quants(nmax: i32, x: &[f32], l_out: &mut [u8], w: &[f32]) -> f32 {
    let mut max = 0f32;
    for &v in x {
        max = if max > v { max } else { v };
    }
    if max < GROUP_MAX_EPS {
        l_out.fill(0);
        return 0.0;
    }
    let mut iscale = nmax as f32 / max;
    for (l, &v) in l_out.iter_mut().zip(x) {
        *l = nearest_int(iscale * v) as u8;
    }
    let scale = 1.0 / iscale;
    let mut best_mse = 0f32;
    for i in 0..x.len() {
        let diff = x[i] - scale * l_out[i] as f32;
        best_mse += w[i] * diff * diff;
    }
    for is in -4..=4 {
        if is == 0 {
            continue;
        }
        let iscale_is = (0.1 * is as f32 + nmax as f32) / max;
        let scale_is = 1.0 / iscale_is;
        let mut mse = 0f32;
        for i in 0..x.len() {
            let l = nearest_int(iscale_is * x[i]).min(nmax);
            let diff = x[i] - scale_is * l as f32;
            mse += w[i] * diff * diff;
        }
        if mse < best_mse {
            best_mse = mse;
            iscale = iscale_is;
        }
    }
    let (mut sumlx, mut suml2) = (0f32, 0f32);
    for i in 0..x.len() {
        let l = nearest_int(iscale * x[i]).min(nmax);
        l_out[i] = l as u8;
        sumlx += w[i] * x[i] * l as f32;
        suml2 += w[i] * l as f32 * l as f32;
    }
    for _ in 0..5 {
        let mut n_changed = 0;
        for i in 0..x.len() {
            let li = l_out[i] as f32;
            let mut slx = sumlx - w[i] * x[i] * li;
            let mut sl2 = suml2 - w[i] * li * li;
            if slx > 0.0 && sl2 > 0.0 {
                let new_l = nearest_int(x[i] * sl2 / slx).min(nmax);
                if new_l != l_out[i] as i32 {
                    slx += w[i] * x[i] * new_l as f32;
                    sl2 += w[i] * new_l as f32 * new_l as f32;
                    if slx * slx * suml2 > sumlx * sumlx * sl2 {
                        l_out[i] = new_l as u8;
                        sumlx = slx;
                        suml2 = sl2;
                        n_changed += 1;
                    }
                }
            }
        }
        if n_changed == 0 {
            break;
        }
    }
    if suml2 > 0.0 {
        sumlx / suml2
    } else {
        0.0
    }
}

/// Pack eight 6-bit scales and mins into ggml's 12-byte layout.
pub(crate) fn pack_scale_min_k4(ls: &[u8; 8], lm: &[u8; 8]) -> [u8; 12] {
    let mut s = [0u8; 12];
    for j in 0..8 {
        if j < 4 {
            s[j] = ls[j];
            s[j + 4] = lm[j];
        } else {
            s[j + 4] = (ls[j] & 0xF) | ((lm[j] & 0xF) << 4);
            s[j - 4] |= (ls[j] >> 4) << 6;
            s[j] |= (lm[j] >> 4) << 6;
        }
    }
    s
}

/// ggml's `get_scale_min_k4`: scale and min of sub-block `j`.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Parameters of the per-sub-block fit of Q4_K (`nmax` 15) and Q5_K (`nmax` 31).
#[derive(Clone, Copy)]
pub(crate) struct KFit {
    pub nmax: i32,
    pub rmin: f32,
    pub nstep: i32,
}

pub(crate) const Q4K_FIT: KFit = KFit {
    nmax: 15,
    rmin: -1.0,
    nstep: 20,
};
pub(crate) const Q5K_FIT: KFit = KFit {
    nmax: 31,
    rmin: -0.5,
    nstep: 15,
};

/// The scalar fit of the eight 32-element sub-blocks: weights `av_x + |x|`, then
/// `make_qkx2_quants` on each. Fills `l` and returns (scales, mins).
pub(crate) fn fit_subblocks_scalar(
    x: &[f32],
    fit: KFit,
    l: &mut [u8; 256],
) -> ([f32; 8], [f32; 8]) {
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        let mut sum_x2 = 0f32;
        for &v in xs {
            sum_x2 += v * v;
        }
        let av_x = (sum_x2 / 32.0).sqrt();
        for (w, &v) in weights.iter_mut().zip(xs) {
            *w = av_x + v.abs();
        }
        let (s, m) = make_qkx2_quants(
            fit.nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            fit.rmin,
            0.1,
            fit.nstep,
        );
        scales[j] = s;
        mins[j] = m;
    }
    (scales, mins)
}

/// Shared second half of Q4_K / Q5_K, given the sub-block fits: 6-bit scales, super-scales,
/// and the codes re-derived from the stored (rounded) scales. Returns (d, dmin, scales, L).
pub(crate) fn finish_k_superblock(
    x: &[f32],
    nmax: i32,
    scales: &[f32; 8],
    mins: &[f32; 8],
    mut l: [u8; 256],
) -> (u16, u16, [u8; 12], [u8; 256]) {
    let (mut max_scale, mut max_min) = (0f32, 0f32);
    for j in 0..8 {
        if scales[j] > max_scale {
            max_scale = scales[j];
        }
        if mins[j] > max_min {
            max_min = mins[j];
        }
    }
    let inv_scale = if max_scale > 0.0 {
        63.0 / max_scale
    } else {
        0.0
    };
    let inv_min = if max_min > 0.0 { 63.0 / max_min } else { 0.0 };
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    for j in 0..8 {
        // uint8_t ls = nearest_int(...): truncation to u8, then MIN(63, ls).
        ls[j] = (nearest_int(inv_scale * scales[j]) as u8).min(63);
        lm[j] = (nearest_int(inv_min * mins[j]) as u8).min(63);
    }
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = super::float::f32_to_f16_bits(max_scale / 63.0);
    let dmin = super::float::f32_to_f16_bits(max_min / 63.0);
    requantize_k(x, nmax, &packed, d, dmin, &mut l);
    (d, dmin, packed, l)
}

/// The codes of a Q4_K / Q5_K super-block re-derived from its stored (rounded) scales and
/// mins; a sub-block whose scale decodes to 0 keeps the codes of its fit.
pub(crate) fn requantize_k(
    x: &[f32],
    nmax: i32,
    packed: &[u8; 12],
    d: u16,
    dmin: u16,
    l: &mut [u8; 256],
) {
    let df = super::float::f16_bits_to_f32(d);
    let dminf = super::float::f16_bits_to_f32(dmin);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, packed);
        let dd = df * sc as f32;
        if dd == 0.0 {
            continue;
        }
        let dm = dminf * m as f32;
        for ii in 0..32 {
            l[32 * j + ii] = nearest_int((x[32 * j + ii] + dm) / dd).clamp(0, nmax) as u8;
        }
    }
}

/// Q4_K / Q5_K super-block with the scalar fit (ggml's reference).
pub(crate) fn quantize_k_superblock(x: &[f32], fit: KFit) -> (u16, u16, [u8; 12], [u8; 256]) {
    let mut l = [0u8; 256];
    let (scales, mins) = fit_subblocks_scalar(x, fit, &mut l);
    finish_k_superblock(x, fit.nmax, &scales, &mins, l)
}

/// Quantize consecutive Q4_K / Q5_K super-blocks with the fastest fit this `isa` has (every
/// fit gives ggml's bytes); `make` packs one super-block's (d, dmin, scales, L).
pub(crate) fn quantize_k_blocks<B>(
    isa: super::Isa,
    x: &[f32],
    fit: KFit,
    out: &mut [B],
    make: impl Fn((u16, u16, [u8; 12], [u8; 256])) -> B,
) {
    let n = out.len().min(x.len() / 256);
    #[allow(unused_mut)] // only x86-64 has a two-super-block kernel
    let mut i = 0;
    #[cfg(target_arch = "x86_64")]
    if isa == super::Isa::Avx512 {
        while i + 2 <= n {
            let pair = &x[256 * i..256 * (i + 2)];
            // SAFETY: the dispatch only passes tiers this CPU supports; pair has 512 values.
            let (scales, mins, ls) = unsafe { x86_512::fit_subblocks_pair(pair, fit) };
            for k in 0..2 {
                let xs = &pair[256 * k..256 * (k + 1)];
                out[i + k] = make(finish_k_superblock(
                    xs, fit.nmax, &scales[k], &mins[k], ls[k],
                ));
            }
            i += 2;
        }
    }
    for j in i..n {
        out[j] = make(quantize_k_superblock_with(
            isa,
            &x[256 * j..256 * (j + 1)],
            fit,
        ));
    }
}

/// Q4_K / Q5_K super-block using the fastest fit this `isa` has (all fits give ggml's bytes).
pub(crate) fn quantize_k_superblock_with(
    isa: super::Isa,
    x: &[f32],
    fit: KFit,
) -> (u16, u16, [u8; 12], [u8; 256]) {
    let mut l = [0u8; 256];
    #[cfg(target_arch = "x86_64")]
    let (scales, mins) = if matches!(isa, super::Isa::Avx2 | super::Isa::Avx512) {
        // SAFETY: the dispatch only passes tiers this CPU supports.
        unsafe { x86::fit_subblocks(x, fit, &mut l) }
    } else {
        fit_subblocks_scalar(x, fit, &mut l)
    };
    #[cfg(target_arch = "aarch64")]
    let (scales, mins) = if isa == super::Isa::Neon {
        // SAFETY: the dispatch only passes tiers this CPU supports.
        unsafe { neon::fit_subblocks(x, fit, &mut l) }
    } else {
        fit_subblocks_scalar(x, fit, &mut l)
    };
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let (scales, mins) = {
        let _ = isa;
        fit_subblocks_scalar(x, fit, &mut l)
    };
    finish_k_superblock(x, fit.nmax, &scales, &mins, l)
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::KFit;
    use std::arch::aarch64::*;

    /// `nearest_int` on 4 lanes: the same 1.5·2^23 addition and bit extraction.
    #[inline(always)]
    unsafe fn nearest_int(v: float32x4_t) -> int32x4_t {
        // SAFETY: register-only NEON operations; the caller has NEON.
        unsafe {
            let t = vreinterpretq_s32_f32(vaddq_f32(v, vdupq_n_f32(12582912.0)));
            vsubq_s32(
                vandq_s32(t, vdupq_n_s32(0x007f_ffff)),
                vdupq_n_s32(0x0040_0000),
            )
        }
    }

    /// The fits of sub-blocks `base..base + 4` at once, lane j doing exactly the scalar
    /// `make_qkx2_quants` operations in order (Rust never contracts NEON multiply and add
    /// into FMA, and min/max use the scalar's `x < min` selects rather than IEEE fmin, so the
    /// first of ±0 is kept as in C).
    #[inline(always)]
    unsafe fn fit4(
        x: &[f32],
        base: usize,
        fit: KFit,
        l: &mut [u8; 256],
        scales: &mut [f32; 8],
        mins: &mut [f32; 8],
    ) {
        // SAFETY (whole body): the indices below are in bounds (x has 256 values and base
        // is 0 or 4, so lanes are sub-blocks < 8); the rest is register arithmetic and
        // stores into local 4-lane arrays or 4 of the 8 entries of scales / mins.
        unsafe {
            let zero = vdupq_n_f32(0.0);
            let nmax_i = vdupq_n_s32(fit.nmax);
            let zero_i = vdupq_n_s32(0);
            let xt: [float32x4_t; 32] = std::array::from_fn(|i| {
                let lanes: [f32; 4] = std::array::from_fn(|j| x[32 * (base + j) + i]);
                vld1q_f32(lanes.as_ptr())
            });
            let mut sum_x2 = zero;
            for v in &xt {
                sum_x2 = vaddq_f32(sum_x2, vmulq_f32(*v, *v));
            }
            let av_x = vsqrtq_f32(vdivq_f32(sum_x2, vdupq_n_f32(32.0)));
            let w: [float32x4_t; 32] = std::array::from_fn(|i| vaddq_f32(av_x, vabsq_f32(xt[i])));

            let mut min = xt[0];
            let mut max = xt[0];
            let mut sum_w = w[0];
            let mut sum_x = vmulq_f32(sum_w, xt[0]);
            for i in 1..32 {
                min = vbslq_f32(vcltq_f32(xt[i], min), xt[i], min);
                max = vbslq_f32(vcgtq_f32(xt[i], max), xt[i], max);
                sum_w = vaddq_f32(sum_w, w[i]);
                sum_x = vaddq_f32(sum_x, vmulq_f32(w[i], xt[i]));
            }
            min = vbslq_f32(vcgtq_f32(min, zero), zero, min);
            let degenerate = vceqq_f32(max, min);

            let quant = |iscale: float32x4_t, min: float32x4_t, i: usize| -> int32x4_t {
                let q = nearest_int(vmulq_f32(iscale, vsubq_f32(xt[i], min)));
                vminq_s32(vmaxq_s32(q, zero_i), nmax_i)
            };
            let mut iscale = vdivq_f32(vdupq_n_f32(fit.nmax as f32), vsubq_f32(max, min));
            let mut scale = vdivq_f32(vdupq_n_f32(1.0), iscale);
            let mut lv = [zero_i; 32];
            let mut best = zero;
            for i in 0..32 {
                lv[i] = quant(iscale, min, i);
                let diff = vsubq_f32(
                    vaddq_f32(vmulq_f32(scale, vcvtq_f32_s32(lv[i])), min),
                    xt[i],
                );
                best = vaddq_f32(best, vmulq_f32(w[i], vmulq_f32(diff, diff)));
            }
            let mut laux = [zero_i; 32];
            for is in 0..=fit.nstep {
                let num = fit.rmin + 0.1 * is as f32 + fit.nmax as f32;
                // (max − min) with the current best min, as ggml
                iscale = vdivq_f32(vdupq_n_f32(num), vsubq_f32(max, min));
                let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
                for i in 0..32 {
                    laux[i] = quant(iscale, min, i);
                    let lf = vcvtq_f32_s32(laux[i]);
                    let wl = vmulq_f32(w[i], lf);
                    sum_l = vaddq_f32(sum_l, wl);
                    sum_l2 = vaddq_f32(sum_l2, vmulq_f32(wl, lf));
                    sum_xl = vaddq_f32(sum_xl, vmulq_f32(wl, xt[i]));
                }
                let d = vsubq_f32(vmulq_f32(sum_w, sum_l2), vmulq_f32(sum_l, sum_l));
                let valid = vcgtq_f32(d, zero);
                let mut this_scale = vdivq_f32(
                    vsubq_f32(vmulq_f32(sum_w, sum_xl), vmulq_f32(sum_x, sum_l)),
                    d,
                );
                let mut this_min = vdivq_f32(
                    vsubq_f32(vmulq_f32(sum_l2, sum_x), vmulq_f32(sum_l, sum_xl)),
                    d,
                );
                let pos = vcgtq_f32(this_min, zero);
                this_min = vbslq_f32(pos, zero, this_min);
                this_scale = vbslq_f32(pos, vdivq_f32(sum_xl, sum_l2), this_scale);
                let mut cur = zero;
                for i in 0..32 {
                    let diff = vsubq_f32(
                        vaddq_f32(vmulq_f32(this_scale, vcvtq_f32_s32(laux[i])), this_min),
                        xt[i],
                    );
                    cur = vaddq_f32(cur, vmulq_f32(w[i], vmulq_f32(diff, diff)));
                }
                let better = vbicq_u32(vandq_u32(valid, vcltq_f32(cur, best)), degenerate);
                for i in 0..32 {
                    lv[i] = vbslq_s32(better, laux[i], lv[i]);
                }
                best = vbslq_f32(better, cur, best);
                scale = vbslq_f32(better, this_scale, scale);
                min = vbslq_f32(better, this_min, min);
            }
            // degenerate lanes: L = 0, scale 0, the_min = -min (their min never changed)
            scale = vbslq_f32(degenerate, zero, scale);
            let mut lanes = [[0i32; 4]; 32];
            for i in 0..32 {
                vst1q_s32(lanes[i].as_mut_ptr(), vbslq_s32(degenerate, zero_i, lv[i]));
            }
            for (i, row) in lanes.iter().enumerate() {
                for (j, &q) in row.iter().enumerate() {
                    l[32 * (base + j) + i] = q as u8;
                }
            }
            vst1q_f32(scales.as_mut_ptr().add(base), scale);
            vst1q_f32(mins.as_mut_ptr().add(base), vnegq_f32(min));
        }
    }

    /// `make_qx_quants(16, nmax, …, rmse_type = 1, NULL)` for the 16-element sub-blocks
    /// `base..base + 4` of a Q6_K super-block (lane j = sub-block base + j), each lane in the
    /// scalar order of operations. Writes their scales and codes (offset by nmax).
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn make_qx_quants_x4(
        x: &[f32],
        base: usize,
        nmax: i32,
        l: &mut [i8; 256],
        scales: &mut [f32; 16],
    ) {
        assert!(x.len() >= 256 && base <= 12);
        // SAFETY (whole body): lanes are sub-blocks base..base+4 ≤ 16 of the 256 values;
        // everything else is register arithmetic and stores into local 4-lane arrays or 4 of
        // the 16 entries of `scales`.
        unsafe {
            let zero = vdupq_n_f32(0.0);
            let xt: [float32x4_t; 16] = std::array::from_fn(|i| {
                let lanes: [f32; 4] = std::array::from_fn(|j| x[16 * (base + j) + i]);
                vld1q_f32(lanes.as_ptr())
            });
            let (mut amax, mut max) = (zero, zero);
            for v in &xt {
                let ax = vabsq_f32(*v);
                let gt = vcgtq_f32(ax, amax);
                amax = vbslq_f32(gt, ax, amax);
                max = vbslq_f32(gt, *v, max);
            }
            let all_zero = vcltq_f32(amax, vdupq_n_f32(super::GROUP_MAX_EPS));
            let nmax_f = nmax as f32;
            let lo = vdupq_n_s32(-nmax);
            let hi = vdupq_n_s32(nmax - 1);
            let w: [float32x4_t; 16] = std::array::from_fn(|i| vmulq_f32(xt[i], xt[i]));
            let quant = |iscale: float32x4_t, i: usize| -> int32x4_t {
                vminq_s32(vmaxq_s32(nearest_int(vmulq_f32(iscale, xt[i])), lo), hi)
            };
            let sums = |iscale: float32x4_t| -> (float32x4_t, float32x4_t) {
                let (mut sumlx, mut suml2) = (zero, zero);
                for i in 0..16 {
                    let lf = vcvtq_f32_s32(quant(iscale, i));
                    sumlx = vaddq_f32(sumlx, vmulq_f32(vmulq_f32(w[i], xt[i]), lf));
                    suml2 = vaddq_f32(suml2, vmulq_f32(vmulq_f32(w[i], lf), lf));
                }
                (sumlx, suml2)
            };
            let iscale0 = vdivq_f32(vdupq_n_f32(-nmax_f), max);
            let mut lv: [int32x4_t; 16] = std::array::from_fn(|i| quant(iscale0, i));
            let (sumlx, suml2) = sums(iscale0);
            // `suml2 ? sumlx/suml2 : 0` (a NaN suml2 counts as non-zero, as in C)
            let is_zero = vceqq_f32(suml2, zero);
            let mut scale = vbslq_f32(is_zero, zero, vdivq_f32(sumlx, suml2));
            let mut best = vmulq_f32(scale, sumlx);
            for is in -9i32..=9 {
                if is == 0 {
                    continue;
                }
                let iscale = vdivq_f32(vdupq_n_f32(-(nmax_f + 0.1 * is as f32)), max);
                let (sumlx, suml2) = sums(iscale);
                let better = vandq_u32(
                    vcgtq_f32(suml2, zero),
                    vcgtq_f32(vmulq_f32(sumlx, sumlx), vmulq_f32(best, suml2)),
                );
                for (i, li) in lv.iter_mut().enumerate() {
                    *li = vbslq_s32(better, quant(iscale, i), *li);
                }
                let s = vdivq_f32(sumlx, suml2);
                scale = vbslq_f32(better, s, scale);
                best = vbslq_f32(better, vmulq_f32(s, sumlx), best);
            }
            // all-zero lanes: L = 0 (not nmax) and scale 0, as ggml returns early
            let off = vdupq_n_s32(nmax);
            let mut lanes = [[0i32; 4]; 16];
            for i in 0..16 {
                let q = vbslq_s32(all_zero, vdupq_n_s32(0), vaddq_s32(lv[i], off));
                vst1q_s32(lanes[i].as_mut_ptr(), q);
            }
            for (i, row) in lanes.iter().enumerate() {
                for (j, &q) in row.iter().enumerate() {
                    l[16 * (base + j) + i] = q as i8;
                }
            }
            vst1q_f32(
                scales.as_mut_ptr().add(base),
                vbslq_f32(all_zero, zero, scale),
            );
        }
    }

    /// The eight sub-block fits of a Q4_K/Q5_K super-block, four lanes at a time.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn fit_subblocks(
        x: &[f32],
        fit: KFit,
        l: &mut [u8; 256],
    ) -> ([f32; 8], [f32; 8]) {
        assert!(x.len() >= 256);
        let mut scales = [0f32; 8];
        let mut mins = [0f32; 8];
        for base in [0, 4] {
            // SAFETY: NEON is enabled here; x has 256 values.
            unsafe { fit4(x, base, fit, l, &mut scales, &mut mins) };
        }
        (scales, mins)
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::KFit;
    use std::arch::x86_64::*;

    /// `nearest_int` on 8 lanes: the same 1.5·2^23 addition and bit extraction.
    #[inline(always)]
    unsafe fn nearest_int(v: __m256) -> __m256i {
        // SAFETY: register-only AVX2 operations; the caller has AVX2.
        unsafe {
            let t = _mm256_add_ps(v, _mm256_set1_ps(12582912.0));
            _mm256_sub_epi32(
                _mm256_and_si256(_mm256_castps_si256(t), _mm256_set1_epi32(0x007f_ffff)),
                _mm256_set1_epi32(0x0040_0000),
            )
        }
    }

    /// The eight sub-block fits of a Q4_K/Q5_K super-block at once: lane j is sub-block j, and
    /// every lane performs exactly the scalar `make_qkx2_quants` operations in the same order
    /// (sums are accumulated element by element within a lane), so results are bit-identical.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn fit_subblocks(
        x: &[f32],
        fit: KFit,
        l: &mut [u8; 256],
    ) -> ([f32; 8], [f32; 8]) {
        assert!(x.len() >= 256);
        // SAFETY (whole body): gathers read x[32j + i] for j < 8, i < 32 (x has 256 values);
        // everything else is register arithmetic and stores into local arrays.
        unsafe {
            let sign = _mm256_set1_ps(-0.0);
            let zero = _mm256_setzero_ps();
            let nmax_i = _mm256_set1_epi32(fit.nmax);
            let zero_i = _mm256_setzero_si256();
            let lane_base = _mm256_setr_epi32(0, 32, 64, 96, 128, 160, 192, 224);
            let mut xt = [zero; 32];
            for (i, v) in xt.iter_mut().enumerate() {
                let idx = _mm256_add_epi32(lane_base, _mm256_set1_epi32(i as i32));
                *v = _mm256_i32gather_ps::<4>(x.as_ptr(), idx);
            }
            // weights: av_x + |x| with av_x = sqrtf(sum_x2 / 32)
            let mut sum_x2 = zero;
            for v in &xt {
                sum_x2 = _mm256_add_ps(sum_x2, _mm256_mul_ps(*v, *v));
            }
            let av_x = _mm256_sqrt_ps(_mm256_div_ps(sum_x2, _mm256_set1_ps(32.0)));
            let w: [__m256; 32] =
                std::array::from_fn(|i| _mm256_add_ps(av_x, _mm256_andnot_ps(sign, xt[i])));

            let mut min = xt[0];
            let mut max = xt[0];
            let mut sum_w = w[0];
            let mut sum_x = _mm256_mul_ps(sum_w, xt[0]);
            for i in 1..32 {
                // `if (x < min) min = x` is exactly minps(x, min); likewise for max.
                min = _mm256_min_ps(xt[i], min);
                max = _mm256_max_ps(xt[i], max);
                sum_w = _mm256_add_ps(sum_w, w[i]);
                sum_x = _mm256_add_ps(sum_x, _mm256_mul_ps(w[i], xt[i]));
            }
            let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(min, zero);
            min = _mm256_andnot_ps(pos, min);
            let degenerate = _mm256_cmp_ps::<_CMP_EQ_OQ>(max, min);
            let nmax_f = _mm256_set1_ps(fit.nmax as f32);

            let quant = |iscale: __m256, min: __m256, i: usize| -> __m256i {
                let q = nearest_int(_mm256_mul_ps(iscale, _mm256_sub_ps(xt[i], min)));
                _mm256_min_epi32(_mm256_max_epi32(q, zero_i), nmax_i)
            };
            let mut iscale = _mm256_div_ps(nmax_f, _mm256_sub_ps(max, min));
            let mut scale = _mm256_div_ps(_mm256_set1_ps(1.0), iscale);
            let mut lv = [zero_i; 32];
            let mut best = zero;
            for i in 0..32 {
                lv[i] = quant(iscale, min, i);
                let diff = _mm256_sub_ps(
                    _mm256_add_ps(_mm256_mul_ps(scale, _mm256_cvtepi32_ps(lv[i])), min),
                    xt[i],
                );
                best = _mm256_add_ps(best, _mm256_mul_ps(w[i], _mm256_mul_ps(diff, diff)));
            }
            let mut laux = [zero_i; 32];
            for is in 0..=fit.nstep {
                let num = fit.rmin + 0.1 * is as f32 + fit.nmax as f32;
                iscale = _mm256_div_ps(_mm256_set1_ps(num), _mm256_sub_ps(max, min));
                let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
                for i in 0..32 {
                    laux[i] = quant(iscale, min, i);
                    let lf = _mm256_cvtepi32_ps(laux[i]);
                    let wl = _mm256_mul_ps(w[i], lf);
                    sum_l = _mm256_add_ps(sum_l, wl);
                    sum_l2 = _mm256_add_ps(sum_l2, _mm256_mul_ps(wl, lf));
                    sum_xl = _mm256_add_ps(sum_xl, _mm256_mul_ps(wl, xt[i]));
                }
                let d = _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_l2), _mm256_mul_ps(sum_l, sum_l));
                let valid = _mm256_cmp_ps::<_CMP_GT_OQ>(d, zero);
                let mut this_scale = _mm256_div_ps(
                    _mm256_sub_ps(_mm256_mul_ps(sum_w, sum_xl), _mm256_mul_ps(sum_x, sum_l)),
                    d,
                );
                let mut this_min = _mm256_div_ps(
                    _mm256_sub_ps(_mm256_mul_ps(sum_l2, sum_x), _mm256_mul_ps(sum_l, sum_xl)),
                    d,
                );
                let pos = _mm256_cmp_ps::<_CMP_GT_OQ>(this_min, zero);
                this_min = _mm256_andnot_ps(pos, this_min);
                this_scale = _mm256_blendv_ps(this_scale, _mm256_div_ps(sum_xl, sum_l2), pos);
                let mut cur = zero;
                for i in 0..32 {
                    let diff = _mm256_sub_ps(
                        _mm256_add_ps(
                            _mm256_mul_ps(this_scale, _mm256_cvtepi32_ps(laux[i])),
                            this_min,
                        ),
                        xt[i],
                    );
                    cur = _mm256_add_ps(cur, _mm256_mul_ps(w[i], _mm256_mul_ps(diff, diff)));
                }
                let better = _mm256_andnot_ps(
                    degenerate,
                    _mm256_and_ps(valid, _mm256_cmp_ps::<_CMP_LT_OQ>(cur, best)),
                );
                let better_i = _mm256_castps_si256(better);
                for i in 0..32 {
                    lv[i] = _mm256_blendv_epi8(lv[i], laux[i], better_i);
                }
                best = _mm256_blendv_ps(best, cur, better);
                scale = _mm256_blendv_ps(scale, this_scale, better);
                min = _mm256_blendv_ps(min, this_min, better);
            }
            // degenerate lanes: L = 0, scale 0, the_min = -min (their min never changed)
            scale = _mm256_andnot_ps(degenerate, scale);
            let keep = _mm256_castps_si256(degenerate);
            let mut lanes = [[0i32; 8]; 32];
            for i in 0..32 {
                let li = _mm256_andnot_si256(keep, lv[i]);
                _mm256_storeu_si256(lanes[i].as_mut_ptr() as *mut __m256i, li);
            }
            for (i, row) in lanes.iter().enumerate() {
                for (j, &q) in row.iter().enumerate() {
                    l[32 * j + i] = q as u8;
                }
            }
            let mut scales = [0f32; 8];
            let mut mins = [0f32; 8];
            _mm256_storeu_ps(scales.as_mut_ptr(), scale);
            _mm256_storeu_ps(mins.as_mut_ptr(), _mm256_xor_ps(min, sign));
            (scales, mins)
        }
    }

    /// `make_qx_quants(16, nmax, …, rmse_type = 1, NULL)` on eight 16-element sub-blocks at
    /// once (lane j = sub-block j of `x`), each lane in the scalar order of operations.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn make_qx_quants_x8(x: &[f32], nmax: i32, l: &mut [i8]) -> [f32; 8] {
        assert!(x.len() >= 128 && l.len() >= 128);
        // SAFETY (whole body): gathers read x[16j + i] for j < 8, i < 16; the rest is
        // register arithmetic and stores into local arrays.
        unsafe {
            let sign = _mm256_set1_ps(-0.0);
            let zero = _mm256_setzero_ps();
            let lane_base = _mm256_setr_epi32(0, 16, 32, 48, 64, 80, 96, 112);
            let xt: [__m256; 16] = std::array::from_fn(|i| {
                _mm256_i32gather_ps::<4>(
                    x.as_ptr(),
                    _mm256_add_epi32(lane_base, _mm256_set1_epi32(i as i32)),
                )
            });
            let (mut amax, mut max) = (zero, zero);
            for v in &xt {
                let ax = _mm256_andnot_ps(sign, *v);
                let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(ax, amax);
                amax = _mm256_blendv_ps(amax, ax, gt);
                max = _mm256_blendv_ps(max, *v, gt);
            }
            let all_zero = _mm256_cmp_ps::<_CMP_LT_OQ>(amax, _mm256_set1_ps(super::GROUP_MAX_EPS));
            let nmax_f = nmax as f32;
            let lo = _mm256_set1_epi32(-nmax);
            let hi = _mm256_set1_epi32(nmax - 1);
            let w: [__m256; 16] = std::array::from_fn(|i| _mm256_mul_ps(xt[i], xt[i]));
            let quant = |iscale: __m256, i: usize| -> __m256i {
                let q = nearest_int(_mm256_mul_ps(iscale, xt[i]));
                _mm256_min_epi32(_mm256_max_epi32(q, lo), hi)
            };
            let sums = |iscale: __m256| -> (__m256, __m256) {
                let (mut sumlx, mut suml2) = (zero, zero);
                for i in 0..16 {
                    let lf = _mm256_cvtepi32_ps(quant(iscale, i));
                    sumlx = _mm256_add_ps(sumlx, _mm256_mul_ps(_mm256_mul_ps(w[i], xt[i]), lf));
                    suml2 = _mm256_add_ps(suml2, _mm256_mul_ps(_mm256_mul_ps(w[i], lf), lf));
                }
                (sumlx, suml2)
            };
            let mut iscale = _mm256_div_ps(_mm256_set1_ps(-nmax_f), max);
            let mut lv: [__m256i; 16] = std::array::from_fn(|i| quant(iscale, i));
            let (sumlx, suml2) = sums(iscale);
            let nonzero = _mm256_cmp_ps::<_CMP_NEQ_UQ>(suml2, zero);
            let mut scale = _mm256_and_ps(nonzero, _mm256_div_ps(sumlx, suml2));
            let mut best = _mm256_mul_ps(scale, sumlx);
            for is in -9i32..=9 {
                if is == 0 {
                    continue;
                }
                let num = -(nmax_f + 0.1 * is as f32);
                iscale = _mm256_div_ps(_mm256_set1_ps(num), max);
                let (sumlx, suml2) = sums(iscale);
                let better = _mm256_and_ps(
                    _mm256_cmp_ps::<_CMP_GT_OQ>(suml2, zero),
                    _mm256_cmp_ps::<_CMP_GT_OQ>(
                        _mm256_mul_ps(sumlx, sumlx),
                        _mm256_mul_ps(best, suml2),
                    ),
                );
                let bi = _mm256_castps_si256(better);
                for (i, li) in lv.iter_mut().enumerate() {
                    *li = _mm256_blendv_epi8(*li, quant(iscale, i), bi);
                }
                let s = _mm256_div_ps(sumlx, suml2);
                scale = _mm256_blendv_ps(scale, s, better);
                best = _mm256_blendv_ps(best, _mm256_mul_ps(s, sumlx), better);
            }
            // all-zero lanes: L = 0 (not nmax) and scale 0, as ggml returns early
            let az = _mm256_castps_si256(all_zero);
            let off = _mm256_set1_epi32(nmax);
            let mut lanes = [[0i32; 8]; 16];
            for i in 0..16 {
                let q = _mm256_andnot_si256(az, _mm256_add_epi32(lv[i], off));
                _mm256_storeu_si256(lanes[i].as_mut_ptr() as *mut __m256i, q);
            }
            for (i, row) in lanes.iter().enumerate() {
                for (j, &q) in row.iter().enumerate() {
                    l[16 * j + i] = q as i8;
                }
            }
            let mut out = [0f32; 8];
            _mm256_storeu_ps(out.as_mut_ptr(), _mm256_andnot_ps(all_zero, scale));
            out
        }
    }
}

/// ggml's `make_qx_quants(16, 32, …, rmse_type = 1)` for the sixteen sub-blocks of a Q6_K
/// super-block: the signed scales, and the codes (offset by 32) in `l`.
pub(crate) fn fit_q6k_subblocks(isa: super::Isa, x: &[f32], l: &mut [i8; 256]) -> [f32; 16] {
    #[cfg(target_arch = "x86_64")]
    if isa == super::Isa::Avx512 {
        // SAFETY: the dispatch only passes tiers this CPU supports; x has 256 values.
        return unsafe { x86_512::make_qx_quants_x16(x, 32, l) };
    }
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, super::Isa::Avx2 | super::Isa::Avx512) {
        let mut s = [0f32; 16];
        for h in 0..2 {
            // SAFETY: the dispatch only passes tiers this CPU supports; x has 256 values.
            let part = unsafe {
                x86::make_qx_quants_x8(
                    &x[128 * h..128 * h + 128],
                    32,
                    &mut l[128 * h..128 * h + 128],
                )
            };
            s[8 * h..8 * h + 8].copy_from_slice(&part);
        }
        return s;
    }
    #[cfg(target_arch = "aarch64")]
    if isa == super::Isa::Neon {
        let mut s = [0f32; 16];
        for base in [0, 4, 8, 12] {
            // SAFETY: the dispatch only passes tiers this CPU supports; x has 256 values.
            unsafe { neon::make_qx_quants_x4(x, base, 32, l, &mut s) };
        }
        return s;
    }
    let _ = isa;
    std::array::from_fn(|ib| {
        make_qx_quants(32, &x[16 * ib..16 * ib + 16], &mut l[16 * ib..16 * ib + 16])
    })
}

#[cfg(target_arch = "x86_64")]
mod x86_512 {
    use super::KFit;
    use std::arch::x86_64::*;

    #[inline(always)]
    unsafe fn nearest_int(v: __m512) -> __m512i {
        // SAFETY: register-only AVX-512 operations; the caller has AVX-512.
        unsafe {
            let t = _mm512_add_ps(v, _mm512_set1_ps(12582912.0));
            _mm512_sub_epi32(
                _mm512_and_si512(_mm512_castps_si512(t), _mm512_set1_epi32(0x007f_ffff)),
                _mm512_set1_epi32(0x0040_0000),
            )
        }
    }

    /// The sub-block fits of two consecutive Q4_K/Q5_K super-blocks at once: lane j is
    /// sub-block j of the 512 values, each lane doing the scalar `make_qkx2_quants`
    /// operations in order (the AVX-512 twin of `x86::fit_subblocks`).
    #[allow(clippy::type_complexity)]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn fit_subblocks_pair(
        x: &[f32],
        fit: KFit,
    ) -> ([[f32; 8]; 2], [[f32; 8]; 2], [[u8; 256]; 2]) {
        assert!(x.len() >= 512);
        let sign = _mm512_set1_ps(-0.0);
        let zero = _mm512_setzero_ps();
        let nmax_i = _mm512_set1_epi32(fit.nmax);
        let zero_i = _mm512_setzero_si512();
        let base = _mm512_setr_epi32(
            0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448, 480,
        );
        // SAFETY: the gathers read x[32j + i] for j < 16, i < 32 (x has 512 values).
        let xt: [__m512; 32] = std::array::from_fn(|i| unsafe {
            _mm512_i32gather_ps::<4>(
                _mm512_add_epi32(base, _mm512_set1_epi32(i as i32)),
                x.as_ptr(),
            )
        });
        let mut sum_x2 = zero;
        for v in &xt {
            sum_x2 = _mm512_add_ps(sum_x2, _mm512_mul_ps(*v, *v));
        }
        let av_x = _mm512_sqrt_ps(_mm512_div_ps(sum_x2, _mm512_set1_ps(32.0)));
        let w: [__m512; 32] =
            std::array::from_fn(|i| _mm512_add_ps(av_x, _mm512_andnot_ps(sign, xt[i])));
        let mut min = xt[0];
        let mut max = xt[0];
        let mut sum_w = w[0];
        let mut sum_x = _mm512_mul_ps(sum_w, xt[0]);
        for i in 1..32 {
            min = _mm512_min_ps(xt[i], min);
            max = _mm512_max_ps(xt[i], max);
            sum_w = _mm512_add_ps(sum_w, w[i]);
            sum_x = _mm512_add_ps(sum_x, _mm512_mul_ps(w[i], xt[i]));
        }
        min = _mm512_mask_mov_ps(min, _mm512_cmp_ps_mask::<_CMP_GT_OQ>(min, zero), zero);
        let degenerate = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(max, min);
        let quant = |iscale: __m512, min: __m512, i: usize| -> __m512i {
            // SAFETY: register-only AVX-512 operations.
            let q = unsafe { nearest_int(_mm512_mul_ps(iscale, _mm512_sub_ps(xt[i], min))) };
            _mm512_min_epi32(_mm512_max_epi32(q, zero_i), nmax_i)
        };
        let mut iscale = _mm512_div_ps(_mm512_set1_ps(fit.nmax as f32), _mm512_sub_ps(max, min));
        let mut scale = _mm512_div_ps(_mm512_set1_ps(1.0), iscale);
        let mut lv = [zero_i; 32];
        let mut best = zero;
        for i in 0..32 {
            lv[i] = quant(iscale, min, i);
            let diff = _mm512_sub_ps(
                _mm512_add_ps(_mm512_mul_ps(scale, _mm512_cvtepi32_ps(lv[i])), min),
                xt[i],
            );
            best = _mm512_add_ps(best, _mm512_mul_ps(w[i], _mm512_mul_ps(diff, diff)));
        }
        let mut laux = [zero_i; 32];
        for is in 0..=fit.nstep {
            let num = fit.rmin + 0.1 * is as f32 + fit.nmax as f32;
            iscale = _mm512_div_ps(_mm512_set1_ps(num), _mm512_sub_ps(max, min));
            let (mut sum_l, mut sum_l2, mut sum_xl) = (zero, zero, zero);
            for i in 0..32 {
                laux[i] = quant(iscale, min, i);
                let lf = _mm512_cvtepi32_ps(laux[i]);
                let wl = _mm512_mul_ps(w[i], lf);
                sum_l = _mm512_add_ps(sum_l, wl);
                sum_l2 = _mm512_add_ps(sum_l2, _mm512_mul_ps(wl, lf));
                sum_xl = _mm512_add_ps(sum_xl, _mm512_mul_ps(wl, xt[i]));
            }
            let d = _mm512_sub_ps(_mm512_mul_ps(sum_w, sum_l2), _mm512_mul_ps(sum_l, sum_l));
            let valid = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(d, zero);
            let mut this_scale = _mm512_div_ps(
                _mm512_sub_ps(_mm512_mul_ps(sum_w, sum_xl), _mm512_mul_ps(sum_x, sum_l)),
                d,
            );
            let mut this_min = _mm512_div_ps(
                _mm512_sub_ps(_mm512_mul_ps(sum_l2, sum_x), _mm512_mul_ps(sum_l, sum_xl)),
                d,
            );
            let pos = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(this_min, zero);
            this_min = _mm512_mask_mov_ps(this_min, pos, zero);
            this_scale = _mm512_mask_mov_ps(this_scale, pos, _mm512_div_ps(sum_xl, sum_l2));
            let mut cur = zero;
            for i in 0..32 {
                let diff = _mm512_sub_ps(
                    _mm512_add_ps(
                        _mm512_mul_ps(this_scale, _mm512_cvtepi32_ps(laux[i])),
                        this_min,
                    ),
                    xt[i],
                );
                cur = _mm512_add_ps(cur, _mm512_mul_ps(w[i], _mm512_mul_ps(diff, diff)));
            }
            let better = valid & _mm512_cmp_ps_mask::<_CMP_LT_OQ>(cur, best) & !degenerate;
            for i in 0..32 {
                lv[i] = _mm512_mask_blend_epi32(better, lv[i], laux[i]);
            }
            best = _mm512_mask_blend_ps(better, best, cur);
            scale = _mm512_mask_blend_ps(better, scale, this_scale);
            min = _mm512_mask_blend_ps(better, min, this_min);
        }
        scale = _mm512_maskz_mov_ps(!degenerate, scale);
        let mut lanes = [[0i32; 16]; 32];
        for i in 0..32 {
            let li = _mm512_maskz_mov_epi32(!degenerate, lv[i]);
            // SAFETY: lanes[i] holds 16 i32.
            unsafe { _mm512_storeu_si512(lanes[i].as_mut_ptr() as *mut __m512i, li) };
        }
        let mut ls = [[0u8; 256]; 2];
        for (i, row) in lanes.iter().enumerate() {
            for (j, &q) in row.iter().enumerate() {
                ls[j / 8][32 * (j % 8) + i] = q as u8;
            }
        }
        let mut s16 = [0f32; 16];
        let mut m16 = [0f32; 16];
        // SAFETY: both arrays hold 16 f32.
        unsafe {
            _mm512_storeu_ps(s16.as_mut_ptr(), scale);
            _mm512_storeu_ps(m16.as_mut_ptr(), _mm512_xor_ps(min, sign));
        }
        let split = |a: [f32; 16]| -> [[f32; 8]; 2] {
            [
                std::array::from_fn(|k| a[k]),
                std::array::from_fn(|k| a[8 + k]),
            ]
        };
        (split(s16), split(m16), ls)
    }

    /// `make_qx_quants(16, nmax, …, rmse_type = 1, NULL)` for all sixteen 16-element
    /// sub-blocks of a Q6_K super-block at once (lane j = sub-block j), each lane in the scalar
    /// order of operations. The AVX-512 twin of the 8-lane AVX2 version.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn make_qx_quants_x16(x: &[f32], nmax: i32, l: &mut [i8; 256]) -> [f32; 16] {
        assert!(x.len() >= 256);
        let sign = _mm512_set1_ps(-0.0);
        let zero = _mm512_setzero_ps();
        let base = _mm512_setr_epi32(
            0, 16, 32, 48, 64, 80, 96, 112, 128, 144, 160, 176, 192, 208, 224, 240,
        );
        // SAFETY: the gathers read x[16j + i] for j, i < 16 (x has 256 values).
        let xt: [__m512; 16] = std::array::from_fn(|i| unsafe {
            _mm512_i32gather_ps::<4>(
                _mm512_add_epi32(base, _mm512_set1_epi32(i as i32)),
                x.as_ptr(),
            )
        });
        let (mut amax, mut max) = (zero, zero);
        for v in &xt {
            let ax = _mm512_andnot_ps(sign, *v);
            let gt = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(ax, amax);
            amax = _mm512_mask_blend_ps(gt, amax, ax);
            max = _mm512_mask_blend_ps(gt, max, *v);
        }
        let all_zero = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(amax, _mm512_set1_ps(super::GROUP_MAX_EPS));
        let nmax_f = nmax as f32;
        let lo = _mm512_set1_epi32(-nmax);
        let hi = _mm512_set1_epi32(nmax - 1);
        let w: [__m512; 16] = std::array::from_fn(|i| _mm512_mul_ps(xt[i], xt[i]));
        let quant = |iscale: __m512, i: usize| -> __m512i {
            let t = _mm512_add_ps(_mm512_mul_ps(iscale, xt[i]), _mm512_set1_ps(12582912.0));
            let q = _mm512_sub_epi32(
                _mm512_and_si512(_mm512_castps_si512(t), _mm512_set1_epi32(0x007f_ffff)),
                _mm512_set1_epi32(0x0040_0000),
            );
            _mm512_min_epi32(_mm512_max_epi32(q, lo), hi)
        };
        let sums = |iscale: __m512| -> (__m512, __m512) {
            let (mut sumlx, mut suml2) = (zero, zero);
            for i in 0..16 {
                let lf = _mm512_cvtepi32_ps(quant(iscale, i));
                sumlx = _mm512_add_ps(sumlx, _mm512_mul_ps(_mm512_mul_ps(w[i], xt[i]), lf));
                suml2 = _mm512_add_ps(suml2, _mm512_mul_ps(_mm512_mul_ps(w[i], lf), lf));
            }
            (sumlx, suml2)
        };
        let iscale0 = _mm512_div_ps(_mm512_set1_ps(-nmax_f), max);
        let mut lv: [__m512i; 16] = std::array::from_fn(|i| quant(iscale0, i));
        let (sumlx, suml2) = sums(iscale0);
        let nonzero = _mm512_cmp_ps_mask::<_CMP_NEQ_UQ>(suml2, zero);
        let mut scale = _mm512_maskz_mov_ps(nonzero, _mm512_div_ps(sumlx, suml2));
        let mut best = _mm512_mul_ps(scale, sumlx);
        for is in -9i32..=9 {
            if is == 0 {
                continue;
            }
            let iscale = _mm512_div_ps(_mm512_set1_ps(-(nmax_f + 0.1 * is as f32)), max);
            let (sumlx, suml2) = sums(iscale);
            let better = _mm512_cmp_ps_mask::<_CMP_GT_OQ>(suml2, zero)
                & _mm512_cmp_ps_mask::<_CMP_GT_OQ>(
                    _mm512_mul_ps(sumlx, sumlx),
                    _mm512_mul_ps(best, suml2),
                );
            for (i, li) in lv.iter_mut().enumerate() {
                *li = _mm512_mask_blend_epi32(better, *li, quant(iscale, i));
            }
            let s = _mm512_div_ps(sumlx, suml2);
            scale = _mm512_mask_blend_ps(better, scale, s);
            best = _mm512_mask_blend_ps(better, best, _mm512_mul_ps(s, sumlx));
        }
        let keep = !all_zero;
        let off = _mm512_set1_epi32(nmax);
        let mut lanes = [[0i32; 16]; 16];
        for i in 0..16 {
            let q = _mm512_maskz_mov_epi32(keep, _mm512_add_epi32(lv[i], off));
            // SAFETY: lanes[i] holds 16 i32.
            unsafe { _mm512_storeu_si512(lanes[i].as_mut_ptr() as *mut __m512i, q) };
        }
        for (i, row) in lanes.iter().enumerate() {
            for (j, &q) in row.iter().enumerate() {
                l[16 * j + i] = q as i8;
            }
        }
        let mut out = [0f32; 16];
        // SAFETY: out holds 16 f32.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), _mm512_maskz_mov_ps(keep, scale)) };
        out
    }
}
