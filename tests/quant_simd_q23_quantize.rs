//! The Q2_K and Q3_K SIMD quantizers (`BlockFormat::quantize_blocks` on every tier this CPU
//! runs) against the scalar reference, byte for byte: on ggml's golden rows
//! (fixtures/quant/kquant, whose bytes are also checked against ggml's own) and on random
//! super-blocks built to stress the fits (scales from 1e-6 to 1e6, sign mixes, exact zeros,
//! constant blocks, huge outliers, integer and half-integer grids full of rounding ties, exact
//! ties of Q2_K's candidate-scale grid), at block counts 1, 2, 3, 7 and 33.

use std::path::PathBuf;

use qforge::gguf::GgmlType;
use qforge::quant::{quantize_with, Isa};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

const TYPES: [(&str, GgmlType, usize); 2] =
    [("Q2_K", GgmlType::Q2K, 84), ("Q3_K", GgmlType::Q3K, 110)];

const BLOCK_COUNTS: [usize; 5] = [1, 2, 3, 7, 33];

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/quant/kquant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn quantize(isa: Isa, ty: GgmlType, size: usize, x: &[f32]) -> Vec<u8> {
    // A poisoned buffer shows any byte a kernel forgets to write.
    let mut out = vec![0xA5u8; x.len() / 256 * size];
    quantize_with(isa, ty, x, &mut out).unwrap();
    out
}

/// The blocks where `got` and `want` differ.
fn bad_blocks(got: &[u8], want: &[u8], size: usize) -> Vec<usize> {
    got.chunks_exact(size)
        .zip(want.chunks_exact(size))
        .enumerate()
        .filter(|(_, (g, w))| g != w)
        .map(|(i, _)| i)
        .collect()
}

/// Every available tier gives the scalar bytes on `x`; returns how many tiers were compared.
fn check_all_tiers(what: &str, x: &[f32]) -> usize {
    let mut compared = 0;
    for (name, ty, size) in TYPES {
        let want = quantize(Isa::Scalar, ty, size, x);
        for isa in Isa::available() {
            let got = quantize(isa, ty, size, x);
            let bad = bad_blocks(&got, &want, size);
            assert!(
                bad.is_empty(),
                "{name} {isa:?} {what}: blocks {bad:?} differ from scalar (first input {:?})",
                &x[256 * bad[0]..256 * bad[0] + 16]
            );
            compared += usize::from(isa != Isa::Scalar);
        }
    }
    compared
}

#[test]
fn golden_rows_equal_scalar_and_ggml() {
    let x: Vec<f32> = fixture("input.f32")
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert_eq!(x.len() % 256, 0);
    let rows = x.len() / 256;
    assert!(rows > 50);
    for (name, ty, size) in TYPES {
        let ggml = fixture(&format!("{name}.bin"));
        assert_eq!(ggml.len(), rows * size, "{name}.bin");
        for isa in Isa::available() {
            // All rows at once, and each row by itself (a single-block call).
            let got = quantize(isa, ty, size, &x);
            let bad = bad_blocks(&got, &ggml, size);
            assert!(
                bad.is_empty(),
                "{name} {isa:?}: rows {bad:?} differ from ggml"
            );
            for r in 0..rows {
                let one = quantize(isa, ty, size, &x[256 * r..256 * (r + 1)]);
                assert_eq!(
                    one,
                    ggml[r * size..(r + 1) * size],
                    "{name} {isa:?} row {r}"
                );
            }
        }
    }
    // The golden rows regrouped into runs of the tested block counts (every tail length).
    for n in BLOCK_COUNTS {
        for start in (0..rows.saturating_sub(n)).step_by(5) {
            check_all_tiers(
                &format!("golden rows {start}..{}", start + n),
                &x[256 * start..256 * (start + n)],
            );
        }
    }
}

/// One random super-block of a kind chosen by `kind`, with its own magnitude.
fn random_block(rng: &mut StdRng, kind: u32) -> Vec<f32> {
    let scale = 10f32.powf(rng.gen_range(-6.0f32..6.0));
    let gauss = |rng: &mut StdRng| rng.sample::<f32, _>(StandardNormal);
    let mut x: Vec<f32> = match kind {
        // Gaussian, possibly shifted so that sub-blocks are one-signed.
        0 => (0..256).map(|_| gauss(rng) * scale).collect(),
        1 => {
            let shift = rng.gen_range(-3.0f32..3.0);
            (0..256).map(|_| (gauss(rng) + shift) * scale).collect()
        }
        // All positive / all negative magnitudes.
        2 => {
            let s = if rng.gen_bool(0.5) { scale } else { -scale };
            (0..256).map(|_| gauss(rng).abs() * s).collect()
        }
        // Sparse: most values exactly zero (±0), the rest Gaussian.
        3 => {
            let p = rng.gen_range(0.5..0.99);
            (0..256)
                .map(|_| {
                    if rng.gen_bool(p) {
                        if rng.gen_bool(0.5) {
                            0.0
                        } else {
                            -0.0
                        }
                    } else {
                        gauss(rng) * scale
                    }
                })
                .collect()
        }
        // Constant over the block, or per sub-block.
        4 => {
            let v = gauss(rng) * scale;
            vec![v; 256]
        }
        5 => (0..16)
            .flat_map(|_| {
                let v = if rng.gen_bool(0.3) {
                    0.0
                } else {
                    gauss(rng) * scale
                };
                [v; 16]
            })
            .collect(),
        // Integer grids (rounding ties in every fit), possibly scaled by a power of two.
        6 => {
            let m = rng.gen_range(1..=16);
            let p2 = 2f32.powi(rng.gen_range(-20..20));
            (0..256)
                .map(|_| rng.gen_range(-m..=m) as f32 * p2)
                .collect()
        }
        7 => {
            let m = rng.gen_range(1..=8);
            (0..256)
                .map(|_| rng.gen_range(0..=m) as f32 * scale.round().max(1.0))
                .collect()
        }
        // Half-integer grids.
        8 => {
            let m = rng.gen_range(1..=16);
            (0..256)
                .map(|_| (rng.gen_range(-m..=m) as f32 + 0.5) * 0.5)
                .collect()
        }
        9 => (0..256)
            .map(|_| rng.gen_range(-8i32..=8) as f32 * 0.5)
            .collect(),
        // Exact rounding ties of Q2_K's search grid: per sub-block, max = 2^p·(−0.5 + 0.1·step
        // + 3) for one of the 16 steps, a zero, and multiples of 2^(p−1).
        12 => (0..16)
            .flat_map(|_| {
                let step = rng.gen_range(0..16);
                let num = -0.5f32 + 0.1f32 * step as f32 + 3.0f32;
                let p2 = 2f32.powi(rng.gen_range(-12..12));
                let (at_max, at_zero) = (rng.gen_range(0..16), rng.gen_range(0..16));
                (0..16)
                    .map(|k| match k {
                        _ if k == at_max => num * p2,
                        _ if k == at_zero => 0.0,
                        _ => rng.gen_range(0..=5) as f32 * 0.5 * p2,
                    })
                    .collect::<Vec<f32>>()
            })
            .collect(),
        // Tiny values around ggml's all-zero threshold of make_q3_quants (1e-15).
        10 => {
            let t = 10f32.powf(rng.gen_range(-17.0f32..-13.0));
            (0..256).map(|_| gauss(rng) * t).collect()
        }
        // Uniform in a range.
        _ => {
            let lo = rng.gen_range(-1.0f32..0.5);
            (0..256)
                .map(|_| rng.gen_range(lo..lo + 1.0) * scale)
                .collect()
        }
    };
    // A few huge outliers.
    if rng.gen_bool(0.25) {
        for _ in 0..rng.gen_range(1..4) {
            let i = rng.gen_range(0..256);
            x[i] = gauss(rng) * scale * 1e3;
        }
    }
    // Occasionally zero out whole sub-blocks or flip signs of some.
    if rng.gen_bool(0.2) {
        let j = rng.gen_range(0..16);
        x[16 * j..16 * j + 16].fill(0.0);
    }
    if rng.gen_bool(0.2) {
        let j = rng.gen_range(0..16);
        for v in &mut x[16 * j..16 * j + 16] {
            *v = -*v;
        }
    }
    x
}

#[test]
fn random_blocks_equal_scalar() {
    let mut rng = StdRng::seed_from_u64(0x5123_0bad_cafe);
    let mut compared = 0;
    for round in 0..40 {
        for n in BLOCK_COUNTS {
            let x: Vec<f32> = (0..n)
                .flat_map(|b| random_block(&mut rng, ((round * 7 + b) % 13) as u32))
                .collect();
            compared += check_all_tiers(&format!("round {round}, {n} blocks"), &x);
        }
    }
    // every round compared each SIMD tier with the scalar code for both types
    let simd_tiers = Isa::available().len() - 1;
    assert_eq!(compared, 40 * BLOCK_COUNTS.len() * 2 * simd_tiers);
}

/// Every kind of random block, many times, one kind per call.
#[test]
fn random_blocks_by_kind_equal_scalar() {
    let mut rng = StdRng::seed_from_u64(23);
    for kind in 0..13 {
        for _ in 0..8 {
            let x: Vec<f32> = (0..33).flat_map(|_| random_block(&mut rng, kind)).collect();
            check_all_tiers(&format!("kind {kind}"), &x);
        }
    }
}

/// Edge values: the largest finite magnitudes (the fits overflow to inf/NaN exactly as
/// ggml's do), subnormals, and single non-zero values.
#[test]
fn extreme_blocks_equal_scalar() {
    let mut rng = StdRng::seed_from_u64(77);
    let mut blocks: Vec<Vec<f32>> = vec![
        vec![0.0; 256],
        vec![-0.0; 256],
        vec![f32::MAX; 256],
        vec![f32::MIN; 256],
        vec![f32::MIN_POSITIVE; 256],
        vec![1e-45; 256],
    ];
    for _ in 0..12 {
        let big = f32::MAX * rng.gen_range(0.1f32..1.0);
        blocks.push(
            (0..256)
                .map(|_| if rng.gen_bool(0.5) { big } else { -big } * rng.gen_range(0.0f32..1.0))
                .collect(),
        );
        let mut one = vec![0f32; 256];
        one[rng.gen_range(0..256)] = rng.sample::<f32, _>(StandardNormal);
        blocks.push(one);
        blocks.push(
            (0..256)
                .map(|_| {
                    f32::from_bits(rng.gen_range(1u32..0x0080_0000))
                        * [-1.0, 1.0][rng.gen_range(0..2)]
                })
                .collect(),
        );
    }
    let x: Vec<f32> = blocks.concat();
    check_all_tiers("extreme blocks", &x);
    for (i, b) in blocks.iter().enumerate() {
        check_all_tiers(&format!("extreme block {i}"), b);
    }
}

/// Many blocks in one call per tier: enough sub-blocks that the rare paths of the fits (the
/// fifth refinement pass of make_q3_quants, near-ties between candidate scales) reach the
/// stored bytes.
#[test]
fn bulk_random_blocks_equal_scalar() {
    let mut rng = StdRng::seed_from_u64(0xB01C);
    for kind in [0u32, 1, 3, 11, 12] {
        let x: Vec<f32> = (0..3000)
            .flat_map(|_| random_block(&mut rng, kind))
            .collect();
        check_all_tiers(&format!("bulk kind {kind}"), &x);
    }
}

/// On x86-64 with AVX2/FMA/F16C the SIMD tiers above must really run (otherwise every
/// comparison would be the scalar code against itself).
#[test]
fn a_simd_tier_is_compared_where_the_cpu_has_one() {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2")
        && std::is_x86_feature_detected!("fma")
        && std::is_x86_feature_detected!("f16c")
    {
        assert!(Isa::available().contains(&Isa::Avx2));
    }
    assert_eq!(Isa::available()[0], Isa::Scalar);
}
