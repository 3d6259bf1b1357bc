//! Q4_K, Q6_K and IQ4_NL kernels on arbitrary finite input: every SIMD tier gives the scalar
//! reference's bytes, the one-block reference equals the multi-block path, and nothing
//! panics (tests build with overflow checks), over random bit patterns that reach every
//! exponent from subnormal to ±f32::MAX, at block counts that exercise the multi-block
//! kernels' tails.

use qforge::gguf::GgmlType;
use qforge::quant::iq4_nl::BlockIq4Nl;
use qforge::quant::q4_k::BlockQ4K;
use qforge::quant::q6_k::BlockQ6K;
use qforge::quant::{dequantize_with, quantize_with, BlockFormat, Isa};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// A finite f32 with uniformly random bits (NaN/inf redrawn): mostly huge or tiny magnitudes.
fn random_bits(rng: &mut StdRng) -> f32 {
    loop {
        let v = f32::from_bits(rng.gen());
        if v.is_finite() {
            return v;
        }
    }
}

/// Inputs of `n` values: each block of 32 gets its own style, so super-blocks mix styles.
fn mixed_input(n: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut x = Vec::with_capacity(n);
    while x.len() < n {
        let style = rng.gen_range(0..9);
        let exp = rng.gen_range(-45.0f32..38.0);
        for i in 0..32 {
            let g: f32 = rng.sample(StandardNormal);
            x.push(match style {
                0 => random_bits(rng),
                1 => g * 10f32.powf(exp).min(f32::MAX),
                2 => 0.0,
                3 => {
                    if i % 2 == 0 {
                        f32::MAX
                    } else {
                        -f32::MAX
                    }
                }
                4 => g.abs() * 1e-3 + 1.0, // single sign with an offset
                5 => (rng.gen_range(-64i32..64) as f32) * 0.5, // halves: ties
                6 => {
                    if rng.gen_bool(0.1) {
                        random_bits(rng)
                    } else {
                        g * 0.02
                    }
                }
                7 => f32::from_bits(rng.gen_range(0..0x0080_0000)), // subnormals
                _ => g,
            });
        }
    }
    x.truncate(n);
    x
}

fn check_type<B: BlockFormat>(name: &str, ty: GgmlType, rng: &mut StdRng, counts: &[usize]) {
    for &blocks in counts {
        let n = blocks * B::ELEMS;
        let x = mixed_input(n, rng);
        let len = ty.bytes_for(n as u64).unwrap() as usize;
        let mut want = vec![0u8; len];
        quantize_with(Isa::Scalar, ty, &x, &mut want).unwrap();
        for (i, c) in x.chunks_exact(B::ELEMS).enumerate() {
            let one = B::quantize_block(c);
            assert_eq!(
                bytemuck::bytes_of(&one),
                &want[i * size_of::<B>()..(i + 1) * size_of::<B>()],
                "{name}: quantize_block vs quantize_blocks, block {i}"
            );
        }
        let mut ref_values = vec![0f32; n];
        dequantize_with(Isa::Scalar, ty, &want, &mut ref_values).unwrap();
        for isa in Isa::available() {
            let mut got = vec![0u8; len];
            quantize_with(isa, ty, &x, &mut got).unwrap();
            let per = size_of::<B>();
            let bad: Vec<usize> = (0..blocks)
                .filter(|&b| got[b * per..(b + 1) * per] != want[b * per..(b + 1) * per])
                .collect();
            assert!(bad.is_empty(), "{name} {isa:?} {blocks} blocks: {bad:?}");
            let mut values = vec![0f32; n];
            dequantize_with(isa, ty, &want, &mut values).unwrap();
            let same = values
                .iter()
                .zip(&ref_values)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "{name} {isa:?} dequantize, {blocks} blocks");
        }
    }
}

#[test]
fn every_tier_equals_scalar_on_arbitrary_finite_input() {
    let mut rng = StdRng::seed_from_u64(0x5eed);
    for _ in 0..3 {
        check_type::<BlockQ4K>("Q4_K", GgmlType::Q4K, &mut rng, &[1, 2, 3, 5, 16]);
        check_type::<BlockQ6K>("Q6_K", GgmlType::Q6K, &mut rng, &[1, 2, 3, 5, 16]);
        check_type::<BlockIq4Nl>("IQ4_NL", GgmlType::Iq4Nl, &mut rng, &[1, 7, 8, 9, 17, 64]);
    }
}

/// The documented huge-input behaviour: values whose block scale overflows f16 give the
/// same inf/NaN scales as ggml (checked byte for byte in quant_kquant.rs); here only that
/// the whole f32 range goes through without panicking and that moderate outliers still
/// give finite values.
#[test]
fn huge_values_quantize_without_panic() {
    for ty in [GgmlType::Q4K, GgmlType::Q6K, GgmlType::Iq4Nl] {
        for v in [f32::MAX, -f32::MAX, 1e30, 3e19, 1.8e19, 4194304.0, 65504.0] {
            let mut x = vec![0.5f32; 256];
            x[3] = v;
            x[130] = -v;
            let mut q = vec![0u8; ty.bytes_for(256).unwrap() as usize];
            for isa in Isa::available() {
                quantize_with(isa, ty, &x, &mut q).unwrap();
            }
            let mut y = vec![0f32; 256];
            dequantize_with(Isa::Scalar, ty, &q, &mut y).unwrap();
            if v.abs() <= 65504.0 {
                assert!(y.iter().all(|y| y.is_finite()), "{ty} {v}");
            }
        }
    }
}
