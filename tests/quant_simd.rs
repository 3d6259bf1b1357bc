//! Every SIMD kernel equals its scalar twin bit for bit: dequantization of random blocks
//! (including NaN/inf/subnormal scales, since a reader sees arbitrary bytes), quantization of
//! random and edge inputs, at several block counts; and the error paths of the dispatch.

use qforge::gguf::GgmlType;
use qforge::quant::{dequantize_with, quantize_with, Isa, QuantError};
use rand::{Rng, SeedableRng};
use rand_distr::{StandardNormal, StudentT};

const TYPES: &[GgmlType] = &[
    GgmlType::F16,
    GgmlType::Bf16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Iq4Nl,
    GgmlType::Nf4 { block: 64 },
];

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn dequantize_random_bytes_simd_equals_scalar() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(17);
    for &ty in TYPES {
        for blocks in [1usize, 3, 17, 64] {
            let n = blocks * ty.block_size() as usize;
            let bytes: Vec<u8> = (0..ty.bytes_for(n as u64).unwrap())
                .map(|_| rng.gen())
                .collect();
            let mut want = vec![0f32; n];
            dequantize_with(Isa::Scalar, ty, &bytes, &mut want).unwrap();
            for isa in Isa::available() {
                let mut got = vec![0f32; n];
                dequantize_with(isa, ty, &bytes, &mut got).unwrap();
                assert!(same_bits(&want, &got), "{ty} {isa:?} {blocks} blocks");
            }
        }
    }
}

fn edge_inputs(n: usize, rng: &mut rand::rngs::StdRng) -> Vec<Vec<f32>> {
    let t = StudentT::new(2.0f32).unwrap();
    vec![
        (0..n)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect(),
        (0..n).map(|_| rng.sample(t)).collect(),
        vec![0.0; n],
        (0..n)
            .map(|i| if i % 7 == 0 { -0.0 } else { 0.0 })
            .collect(),
        (0..n)
            .map(|_| rng.sample::<f32, _>(StandardNormal) * 1e-40)
            .collect(),
        (0..n).map(|i| (i % 33) as f32 * 0.5 - 8.0).collect(),
        (0..n).map(|_| rng.gen::<f32>() * 65504.0).collect(),
        (0..n).map(|_| -rng.gen::<f32>() - 0.01).collect(),
        (0..n)
            .map(|i| if i % 64 == 5 { 1e30 } else { 1.0 })
            .collect(),
        // zero extremes of both signs: the scalar scans keep the first zero they meet
        (0..n)
            .map(|i| match i % 5 {
                0 => 0.0,
                1 => -0.0,
                _ => i as f32 * 0.01,
            })
            .collect(),
        (0..n)
            .map(|i| match i % 6 {
                0 => -0.0,
                1 => 0.0,
                _ => -(i as f32) * 0.01,
            })
            .collect(),
    ]
}

#[test]
fn quantize_simd_equals_scalar_on_edge_inputs() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(99);
    for &ty in TYPES {
        let n = 4 * 256;
        for (k, x) in edge_inputs(n, &mut rng).iter().enumerate() {
            let len = ty.bytes_for(n as u64).unwrap() as usize;
            let mut want = vec![0u8; len];
            quantize_with(Isa::Scalar, ty, x, &mut want).unwrap();
            for isa in Isa::available() {
                let mut got = vec![0u8; len];
                quantize_with(isa, ty, x, &mut got).unwrap();
                assert_eq!(want, got, "{ty} {isa:?} input {k}");
            }
        }
    }
}

#[test]
fn dispatch_rejects_bad_lengths_and_non_finite_values() {
    let mut out = vec![0u8; 34];
    assert_eq!(
        quantize_with(Isa::Scalar, GgmlType::Q8_0, &[0.0; 31], &mut out),
        Err(QuantError::NotBlockMultiple {
            ty: GgmlType::Q8_0,
            block: 32,
            len: 31
        })
    );
    assert_eq!(
        quantize_with(Isa::Scalar, GgmlType::Q8_0, &[0.0; 64], &mut out),
        Err(QuantError::ByteLength {
            ty: GgmlType::Q8_0,
            elements: 64,
            expected: 68,
            actual: 34
        })
    );
    let mut x = vec![1.0f32; 32];
    x[19] = f32::INFINITY;
    match quantize_with(Isa::Scalar, GgmlType::Q8_0, &x, &mut out) {
        Err(QuantError::NonFinite { index: 19, .. }) => {}
        other => panic!("{other:?}"),
    }
    let mut y = vec![0f32; 32];
    assert!(dequantize_with(Isa::Scalar, GgmlType::Q4K, &[0u8; 144], &mut y).is_err());
    // a type qforge reads but does not write
    assert!(matches!(
        quantize_with(Isa::Scalar, GgmlType::Iq2Xxs, &[0.0; 256], &mut [0u8; 66]),
        Err(QuantError::Unsupported { .. })
    ));
}

/// The 8-lane K-quant fit against the scalar reference on many random super-blocks, each with
/// its own scale, sign mix and sparsity.
#[test]
fn k_quant_fits_equal_scalar_on_random_superblocks() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    let n_blocks = 1501; // odd: the 2-super-block AVX-512 path plus its tail
    let mut x = Vec::with_capacity(n_blocks * 256);
    for b in 0..n_blocks {
        let scale = 10f32.powf(rng.gen_range(-4.0..2.0));
        let shift = if b % 5 == 0 {
            rng.gen_range(-1.0..1.0)
        } else {
            0.0
        };
        for i in 0..256 {
            let v: f32 = rng.sample::<f32, _>(StandardNormal) * scale + shift * scale;
            x.push(if b % 7 == 3 && i % 3 == 0 { 0.0 } else { v });
        }
    }
    for ty in [GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K, GgmlType::Iq4Nl] {
        let len = ty.bytes_for(x.len() as u64).unwrap() as usize;
        let mut want = vec![0u8; len];
        quantize_with(Isa::Scalar, ty, &x, &mut want).unwrap();
        for isa in Isa::available() {
            let mut got = vec![0u8; len];
            quantize_with(isa, ty, &x, &mut got).unwrap();
            let per = ty.type_size() as usize;
            let bad: Vec<usize> = (0..want.len() / per)
                .filter(|&b| want[b * per..(b + 1) * per] != got[b * per..(b + 1) * per])
                .collect();
            assert!(bad.is_empty(), "{ty} {isa:?}: blocks {bad:?} differ");
        }
    }
}

/// Blocks of wildly different scales side by side (zero, subnormal, tiny, ordinary, beyond
/// f16's range) at block counts that are not multiples of the kernels' group sizes: batched
/// kernels (several blocks' scales computed in one vector) equal the scalar reference.
#[test]
fn quantize_simd_equals_scalar_on_mixed_scale_blocks_with_ragged_tails() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let scales = [0.0f32, 1e-42, 1e-20, 1e-3, 1.0, 37.5, 6e4, 1e9, 3e37];
    for &ty in TYPES {
        let block = ty.block_size() as usize;
        for blocks in [1usize, 7, 9, 15, 26] {
            let x: Vec<f32> = (0..blocks * block)
                .map(|i| {
                    let s = scales[(i / block + blocks) % scales.len()];
                    rng.sample::<f32, _>(StandardNormal) * s
                })
                .collect();
            let len = ty.bytes_for(x.len() as u64).unwrap() as usize;
            let mut want = vec![0u8; len];
            quantize_with(Isa::Scalar, ty, &x, &mut want).unwrap();
            for isa in Isa::available() {
                let mut got = vec![0u8; len];
                quantize_with(isa, ty, &x, &mut got).unwrap();
                assert_eq!(want, got, "{ty} {isa:?} {blocks} blocks");
            }
        }
    }
}
