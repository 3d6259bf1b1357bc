//! Importance-weighted quantization: ggml's `quantize_row_*_impl` paths, which llama-quantize
//! takes for a tensor that has an importance-matrix (imatrix) entry. One importance value per
//! column weighs the fit of every row; the bytes are ggml's for the same input and weights.
//!
//! The weights each type's fit uses (ggml's formulas, in its float order):
//! - Q4_K / Q5_K: `qw·sqrt(σ² + x²)` with `σ² = 2·Σx²/256` per super-block, sub-block fits by
//!   `make_qkx3_quants`, the scale and min vectors by `make_qp_quants` (no `max/63`);
//! - Q6_K: the raw importance in `make_qx_quants`;
//! - Q4_0 / Q5_0 / Q4_1 / Q5_1: `qw·sqrt(σ² + x²)` with `σ² = Σx²/n` over the whole row,
//!   codes straight from the fit (no requantization with the f16 scale);
//! - IQ4_NL / IQ4_XS: `qw·sqrt(σ² + x²)` with `σ² = 2·Σx²/n` over the block / super-block;
//! - Q8_0 ignores the weights (as ggml does).

use super::float::f32_to_f16_bits;
use super::kquant::{
    make_qkx2_quants, make_qp_quants, make_qx_quants_weighted, pack_scale_min_k4, requantize_k,
};
use super::{
    iq4_nl, iq4_xs, q2_k, q3_k, q4_0, q4_1, q4_k, q5_0, q5_1, q5_k, q6_k, q8_0, QuantError,
};
use crate::gguf::GgmlType;

/// Whether `ty` has a weighted path (Q8_0 counts: it takes and ignores the weights).
pub fn takes_importance(ty: GgmlType) -> bool {
    matches!(
        ty,
        GgmlType::Q4_0
            | GgmlType::Q4_1
            | GgmlType::Q5_0
            | GgmlType::Q5_1
            | GgmlType::Q8_0
            | GgmlType::Q2K
            | GgmlType::Q3K
            | GgmlType::Q4K
            | GgmlType::Q5K
            | GgmlType::Q6K
            | GgmlType::Iq4Nl
            | GgmlType::Iq4Xs
    )
}

/// Quantize whole rows of `importance.len()` values each with ggml's weighted quantizer for
/// `ty` (what `ggml_quantize_chunk` does with an imatrix). `src` must be finite.
pub fn quantize_weighted(
    ty: GgmlType,
    src: &[f32],
    importance: &[f32],
    dst: &mut [u8],
) -> Result<(), QuantError> {
    let n = importance.len();
    if n == 0 || !src.len().is_multiple_of(n) || !(n as u64).is_multiple_of(ty.block_size()) {
        return Err(QuantError::Unsupported {
            ty,
            op: "quantize rows of this length with importance weights to",
        });
    }
    super::check_lengths(ty, src.len(), dst.len())?;
    let row_bytes = dst.len() / (src.len() / n).max(1);
    for (x, out) in src.chunks_exact(n).zip(dst.chunks_exact_mut(row_bytes)) {
        quantize_row(ty, x, importance, out)?;
    }
    Ok(())
}

fn blocks<B: bytemuck::Pod>(out: &mut [u8]) -> &mut [B] {
    bytemuck::cast_slice_mut(out)
}

fn quantize_row(ty: GgmlType, x: &[f32], qw: &[f32], out: &mut [u8]) -> Result<(), QuantError> {
    match ty {
        GgmlType::Q8_0 => super::quantize_as::<q8_0::BlockQ8_0>(super::Isa::Scalar, x, out),
        GgmlType::Q4K | GgmlType::Q5K => {
            let nmax = if ty == GgmlType::Q4K { 15 } else { 31 };
            for (i, (xs, ws)) in x.chunks_exact(256).zip(qw.chunks_exact(256)).enumerate() {
                let (d, dmin, scales, l) = k_superblock(xs, ws, nmax);
                if ty == GgmlType::Q4K {
                    blocks::<q4_k::BlockQ4K>(out)[i] =
                        q4_k::BlockQ4K::from_parts(d, dmin, scales, l);
                } else {
                    blocks::<q5_k::BlockQ5K>(out)[i] =
                        q5_k::BlockQ5K::from_parts(d, dmin, scales, l);
                }
            }
        }
        GgmlType::Q2K => {
            let b = blocks::<q2_k::BlockQ2K>(out);
            for (i, (xs, ws)) in x.chunks_exact(256).zip(qw.chunks_exact(256)).enumerate() {
                b[i] = q2_k::BlockQ2K::quantize_weighted(xs, ws);
            }
        }
        GgmlType::Q3K => {
            let b = blocks::<q3_k::BlockQ3K>(out);
            for (i, (xs, ws)) in x.chunks_exact(256).zip(qw.chunks_exact(256)).enumerate() {
                b[i] = q3_k::BlockQ3K::quantize_weighted(xs, ws);
            }
        }
        GgmlType::Q6K => {
            let b = blocks::<q6_k::BlockQ6K>(out);
            for (i, (xs, ws)) in x.chunks_exact(256).zip(qw.chunks_exact(256)).enumerate() {
                b[i] = q6_k::BlockQ6K::quantize_weighted(xs, ws);
            }
        }
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q4_1 | GgmlType::Q5_1 => {
            legacy_row(ty, x, qw, out)
        }
        GgmlType::Iq4Nl => {
            let b = blocks::<iq4_nl::BlockIq4Nl>(out);
            let mut w = [0f32; 32];
            for (i, (xs, ws)) in x.chunks_exact(32).zip(qw.chunks_exact(32)).enumerate() {
                iq4_weights(xs, ws, &mut w);
                b[i] = iq4_nl::BlockIq4Nl::from_scale(xs, iq4_nl::block_scale_weighted(xs, &w));
            }
        }
        GgmlType::Iq4Xs => {
            let b = blocks::<iq4_xs::BlockIq4Xs>(out);
            let mut w = [0f32; 256];
            for (i, (xs, ws)) in x.chunks_exact(256).zip(qw.chunks_exact(256)).enumerate() {
                iq4_weights(xs, ws, &mut w);
                let scales: [f32; 8] = std::array::from_fn(|ib| {
                    let r = 32 * ib..32 * ib + 32;
                    iq4_nl::block_scale_weighted(&xs[r.clone()], &w[r])
                });
                b[i] = iq4_xs::BlockIq4Xs::from_scales(xs, &scales);
            }
        }
        other => {
            return Err(QuantError::Unsupported {
                ty: other,
                op: "quantize with importance weights to",
            })
        }
    }
    Ok(())
}

/// `qw·sqrt(σ² + x²)` with `σ² = 2·Σx²/n` over the block (IQ4_NL: 32, IQ4_XS: 256 values).
fn iq4_weights(x: &[f32], qw: &[f32], w: &mut [f32]) {
    let mut sigma2 = 0f32;
    for &v in x {
        sigma2 += v * v;
    }
    sigma2 *= 2.0 / x.len() as f32;
    for ((w, &q), &v) in w.iter_mut().zip(qw).zip(x) {
        *w = q * (sigma2 + v * v).sqrt();
    }
}

/// `quantize_row_q4_K_impl` / `quantize_row_q5_K_impl` for one super-block:
/// (d, dmin, packed scales, codes).
fn k_superblock(x: &[f32], qw: &[f32], nmax: i32) -> (u16, u16, [u8; 12], [u8; 256]) {
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = 2.0 * sum_x2 / 256.0;
    let mut l = [0u8; 256];
    let mut scales = [0f32; 8];
    let mut mins = [0f32; 8];
    let mut sw = [0f32; 8];
    let mut weights = [0f32; 32];
    for j in 0..8 {
        let xs = &x[32 * j..32 * j + 32];
        for (k, w) in weights.iter_mut().enumerate() {
            *w = qw[32 * j + k] * (sigma2 + xs[k] * xs[k]).sqrt();
        }
        let mut sumw = 0f32;
        for &w in &weights {
            sumw += w;
        }
        sw[j] = sumw;
        // make_qkx3_quants(32, nmax, …, −0.9, 0.05, 36, use_mad = false)
        let (s, m) = make_qkx2_quants(
            nmax,
            xs,
            &weights,
            &mut l[32 * j..32 * j + 32],
            -0.9,
            0.05,
            36,
        );
        scales[j] = s;
        mins[j] = m;
    }
    let mut ls = [0u8; 8];
    let mut lm = [0u8; 8];
    let d_block = make_qp_quants(63, &scales, &mut ls, &sw);
    let m_block = make_qp_quants(63, &mins, &mut lm, &sw);
    let packed = pack_scale_min_k4(&ls, &lm);
    let d = f32_to_f16_bits(d_block);
    let dmin = f32_to_f16_bits(m_block);
    requantize_k(x, nmax, &packed, d, dmin, &mut l);
    (d, dmin, packed, l)
}

/// `quantize_row_q{4,5}_{0,1}_impl`: the row-wide σ², then each 32-block's fit.
fn legacy_row(ty: GgmlType, x: &[f32], qw: &[f32], out: &mut [u8]) {
    let mut sum_x2 = 0f32;
    for &v in x {
        sum_x2 += v * v;
    }
    let sigma2 = sum_x2 / x.len() as f32;
    let mut w = [0f32; 32];
    for (i, (xs, ws)) in x.chunks_exact(32).zip(qw.chunks_exact(32)).enumerate() {
        for ((w, &q), &v) in w.iter_mut().zip(ws).zip(xs) {
            *w = q * (sigma2 + v * v).sqrt();
        }
        match ty {
            GgmlType::Q4_0 | GgmlType::Q5_0 => {
                let nmax = if ty == GgmlType::Q4_0 { 8 } else { 16 };
                let mut l = [0i8; 32];
                let d = make_qx_quants_weighted(nmax, xs, &mut l, Some(&w));
                let dh = f32_to_f16_bits(d).to_le_bytes();
                let mut qs = [0u8; 16];
                let mut qh = 0u32;
                for j in 0..16 {
                    let (l0, l1) = (l[j] as u8, l[j + 16] as u8);
                    qs[j] = (l0 & 0xF) | ((l1 & 0xF) << 4);
                    qh |= (((l0 >> 4) & 1) as u32) << j;
                    qh |= (((l1 >> 4) & 1) as u32) << (j + 16);
                }
                if ty == GgmlType::Q4_0 {
                    blocks::<q4_0::BlockQ4_0>(out)[i] = q4_0::BlockQ4_0 { d: dh, qs };
                } else {
                    blocks::<q5_0::BlockQ5_0>(out)[i] = q5_0::BlockQ5_0 {
                        d: dh,
                        qh: qh.to_le_bytes(),
                        qs,
                    };
                }
            }
            _ => {
                let nmax = if ty == GgmlType::Q4_1 { 15 } else { 31 };
                let mut l = [0u8; 32];
                // make_qkx3_quants(32, nmax, …, −0.9, 0.05, 36, use_mad = false)
                let (d, the_min) = make_qkx2_quants(nmax, xs, &w, &mut l, -0.9, 0.05, 36);
                let dh = f32_to_f16_bits(d).to_le_bytes();
                let mh = f32_to_f16_bits(-the_min).to_le_bytes();
                let mut qs = [0u8; 16];
                let mut qh = 0u32;
                for j in 0..16 {
                    let (l0, l1) = (l[j], l[j + 16]);
                    qs[j] = (l0 & 0xF) | ((l1 & 0xF) << 4);
                    qh |= (((l0 >> 4) & 1) as u32) << j;
                    qh |= (((l1 >> 4) & 1) as u32) << (j + 16);
                }
                if ty == GgmlType::Q4_1 {
                    blocks::<q4_1::BlockQ4_1>(out)[i] = q4_1::BlockQ4_1 { d: dh, m: mh, qs };
                } else {
                    blocks::<q5_1::BlockQ5_1>(out)[i] = q5_1::BlockQ5_1 {
                        d: dh,
                        m: mh,
                        qh: qh.to_le_bytes(),
                        qs,
                    };
                }
            }
        }
    }
}
