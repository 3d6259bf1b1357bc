//! NF4 and double quantization against bitsandbytes: the golden vector of
//! shared/reference/nf4-double-quant.md §9 (made with bnb 0.50.2), a deliberately naive
//! re-implementation of bitsandbytes' rules, its unit-test error bounds, and SIMD == scalar.

// The golden values are the reference note's decimal strings, kept verbatim.
#![allow(clippy::excessive_precision)]

use qforge::gguf::GgmlType;
use qforge::quant::nf4::{self, DqState};
use qforge::quant::{dequantize_with, quantize_with, Isa};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn golden_input() -> Vec<f32> {
    (0..200)
        .map(|i: i32| {
            let k = (37 * i).rem_euclid(101);
            ((k - 50) as f32 / 25.0) * (1 + i / 64) as f32
        })
        .collect()
}

/// Naive reference: nearest NF4 value by |y − c|, ties to the lower index (the rule the
/// threshold tree implements), packing high nibble first.
fn naive_nibbles(x: &[f32], block: usize) -> (Vec<f32>, Vec<u8>) {
    let table = nf4::nf4_values();
    let mut absmax = Vec::new();
    let mut idx = Vec::new();
    for b in x.chunks(block) {
        let a = b.iter().map(|v| v.abs()).fold(0.0, f32::max);
        absmax.push(a);
        let r = 1.0 / a;
        for &v in b {
            let y = v * r;
            let mut best = 0;
            for k in 1..16 {
                // midpoint rule with ties down == strict "threshold < y"
                let mid = (table[k - 1] + table[k]) * 0.5;
                if mid < y {
                    best = k;
                }
            }
            idx.push(if y.is_nan() { 0 } else { best as u8 });
        }
    }
    (absmax, idx)
}

#[test]
fn golden_vector_without_double_quant() {
    let x = golden_input();
    let (absmax, idx) = naive_nibbles(&x, 64);
    assert_eq!(
        absmax.iter().map(|a| a.to_bits()).collect::<Vec<_>>(),
        [0x40000000, 0x40800000, 0x40c00000, 0x40dc28f6]
    );
    assert_eq!(
        &idx[..16],
        &[0, 4, 12, 1, 6, 14, 2, 9, 15, 3, 11, 0, 5, 13, 1, 7]
    );
    assert_eq!(&idx[192..], &[3, 12, 0, 5, 14, 1, 8, 15]);
    // The library on the three full blocks (GGUF blocks never cross rows, so the partial
    // bitsandbytes block is checked through the naive reference above).
    let mut q = vec![0u8; 3 * 36];
    quantize_with(Isa::Scalar, GgmlType::Nf4 { block: 64 }, &x[..192], &mut q).unwrap();
    let packed_hex = "04c16e29f3b05d17e29f3c05d18e2af4c16e18e3b05d17e29f3b05d18e2af4c16d18e3b04c17e29f3b05d17e2af4c06d18e2a04c16e29f3b05d17e29f3c05d18e2af4c16e18e3b05d17e29f3b05d18e2af4c16d18e3b04c17e29f3b05d17e2af3c05e18f";
    let packed: Vec<u8> = (0..packed_hex.len() / 2)
        .map(|i| u8::from_str_radix(&packed_hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    for b in 0..3 {
        let blk = &q[36 * b..36 * (b + 1)];
        assert_eq!(f32::from_le_bytes(blk[..4].try_into().unwrap()), absmax[b]);
        assert_eq!(&blk[4..], &packed[32 * b..32 * (b + 1)], "block {b}");
    }
}

#[test]
fn golden_vector_double_quant() {
    let x = golden_input();
    let (absmax, _) = naive_nibbles(&x, 64);
    let (state, codes) = nf4::double_quantize(&absmax);
    assert_eq!(state.offset.to_bits(), 0x40970a3e);
    assert_eq!(state.nested_absmax, vec![2.7200003]);
    assert_eq!(codes, vec![0, 52, 217, 240]);
    let rec: Vec<f32> = codes
        .iter()
        .map(|&c| nf4::dq_absmax(c, state.nested_absmax[0], state.offset))
        .collect();
    assert_eq!(
        rec,
        vec![
            2.019124984741211,
            4.008125305175781,
            6.005625247955322,
            6.885375499725342
        ]
    );
    // first 8 dequantized values with DQ
    let mut blocks = vec![0u8; 33];
    nf4::quantize_nf4_dq(&x[..64], 64, &codes[..1], &absmax[..1], &mut blocks);
    let mut out = vec![0f32; 64];
    for isa in Isa::available() {
        nf4::dequantize_nf4_dq(isa, &blocks, 64, &state, 0, &mut out).unwrap();
        assert_eq!(
            &out[..8],
            &[
                -2.019124984741211,
                -0.5743227005004883,
                0.8898482322692871,
                -1.4057003259658813,
                -0.18384140729904175,
                1.459740161895752,
                -1.0601881742477417,
                0.32493817806243896
            ],
            "{isa:?}"
        );
    }
}

#[test]
fn dynamic_map_matches_its_construction() {
    // create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8) with torch's f32
    // linspace (fma from the nearer end), means in f32, scale 10^(e-6) rounded to f32.
    let mut v: Vec<f32> = Vec::new();
    for e in 0..7 {
        let m = 1usize << e;
        let steps = m + 1;
        let (start, end) = (0.1f32, 1.0f32);
        let step = (end - start) / (steps - 1) as f32;
        let b: Vec<f32> = (0..steps)
            .map(|i| {
                if i < steps / 2 {
                    step.mul_add(i as f32, start)
                } else {
                    (-step).mul_add((steps - 1 - i) as f32, end)
                }
            })
            .collect();
        let scale = 10f64.powi(e - 6) as f32;
        for k in 0..m {
            let mean = (b[k] + b[k + 1]) / 2.0;
            v.push(scale * mean);
            v.push(-(scale * mean));
        }
    }
    v.push(0.0);
    v.push(1.0);
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let table = nf4::dq_map();
    assert_eq!(v.len(), 256);
    let mismatches: Vec<usize> = (0..256)
        .filter(|&i| v[i].to_bits() != table[i].to_bits())
        .collect();
    assert!(
        mismatches.is_empty(),
        "entries differing from the table: {mismatches:?}"
    );
}

#[test]
fn dq_index_ties_go_to_the_even_code() {
    let d = nf4::dq_map();
    for k in 0..255 {
        let mid = (d[k] + d[k + 1]) * 0.5;
        let even = if k % 2 == 0 { k } else { k + 1 };
        assert_eq!(nf4::dq_index(mid) as usize, even, "midpoint {k}");
        assert_eq!(nf4::dq_index(d[k]) as usize, k);
    }
    assert_eq!(nf4::dq_index(f32::NAN), 0);
    assert_eq!(nf4::dq_index(-1.0), 0);
    assert_eq!(nf4::dq_index(1.0), 255);
}

fn randn(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.sample(StandardNormal)).collect()
}

fn errors(a: &[f32], b: &[f32]) -> (f64, f64) {
    let n = a.len() as f64;
    let err: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() as f64)
        .sum::<f64>()
        / n;
    let rel: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| ((x - y).abs() / (x.abs() + 1e-8)) as f64)
        .sum::<f64>()
        / n;
    (err, rel)
}

/// bitsandbytes' test_4bit_quant bounds for blocksize 64 on randn(1024, 1024).
#[test]
fn error_bounds_on_randn_with_and_without_double_quant() {
    let x = randn(1024 * 1024, 5);
    let mut q = vec![0u8; 1024 * 1024 / 64 * 36];
    quantize_with(Isa::Scalar, GgmlType::Nf4 { block: 64 }, &x, &mut q).unwrap();
    let mut y = vec![0f32; x.len()];
    dequantize_with(Isa::Scalar, GgmlType::Nf4 { block: 64 }, &q, &mut y).unwrap();
    let (err, rel) = errors(&x, &y);
    assert!(
        err < 0.073316 && rel < 0.205719,
        "no DQ: err {err} rel {rel}"
    );
    assert!(err > 0.0725, "suspiciously small error {err}");

    let absmax = nf4::block_absmax(&x, 64);
    let (state, codes) = nf4::double_quantize(&absmax);
    let mut qd = vec![0u8; 1024 * 1024 / 64 * 33];
    nf4::quantize_nf4_dq(&x, 64, &codes, &absmax, &mut qd);
    let mut yd = vec![0f32; x.len()];
    nf4::dequantize_nf4_dq(Isa::Scalar, &qd, 64, &state, 0, &mut yd).unwrap();
    let (err_dq, rel_dq) = errors(&x, &yd);
    assert!(
        err_dq < 0.073316 && rel_dq < 0.205719,
        "DQ: err {err_dq} rel {rel_dq}"
    );
    assert!(
        err_dq >= err * 0.999,
        "DQ should not beat exact scales: {err_dq} vs {err}"
    );
    let st = DqState::from_values(&state.to_values(), absmax.len()).unwrap();
    assert_eq!(st, state);
}

#[test]
fn simd_dequantize_equals_scalar() {
    let mut x = randn(64 * 300, 9);
    x[..64].fill(0.0); // all-zero block: NaN codes → nibble 0, scale 0
    for v in &mut x[64..128] {
        *v = v.abs(); // single-sign block
    }
    x[200] = 1e-42; // subnormal
    x[300] = 3.0e38;
    for block in [32usize, 64, 128, 4096] {
        let n = x.len() / block * block;
        let t = GgmlType::Nf4 {
            block: block as u32,
        };
        let mut q = vec![0u8; t.bytes_for(n as u64).unwrap() as usize];
        quantize_with(Isa::Scalar, t, &x[..n], &mut q).unwrap();
        let mut a = vec![0f32; n];
        dequantize_with(Isa::Scalar, t, &q, &mut a).unwrap();
        for isa in Isa::available() {
            let mut b = vec![0f32; n];
            dequantize_with(isa, t, &q, &mut b).unwrap();
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "{isa:?} block {block}"
            );
        }
        let absmax = nf4::block_absmax(&x[..n], block);
        let (state, codes) = nf4::double_quantize(&absmax);
        let mut qd = vec![0u8; n / block * (1 + block / 2)];
        nf4::quantize_nf4_dq(&x[..n], block, &codes, &absmax, &mut qd);
        let mut c = vec![0f32; n];
        nf4::dequantize_nf4_dq(Isa::Scalar, &qd, block, &state, 0, &mut c).unwrap();
        for isa in Isa::available() {
            let mut d = vec![0f32; n];
            nf4::dequantize_nf4_dq(isa, &qd, block, &state, 0, &mut d).unwrap();
            assert!(c.iter().zip(&d).all(|(p, q)| p.to_bits() == q.to_bits()));
        }
    }
    // The all-zero block stores absmax 0 and code 0 (bitsandbytes' CUDA result).
    let mut q = vec![0u8; 36];
    quantize_with(Isa::Scalar, GgmlType::Nf4 { block: 64 }, &[0.0; 64], &mut q).unwrap();
    assert!(q.iter().all(|&b| b == 0));
}

#[test]
fn bad_lengths_are_errors_not_panics() {
    let mut out = vec![0f32; 64];
    let st = DqState {
        offset: 0.0,
        nested_absmax: vec![],
    };
    assert!(nf4::dequantize_nf4_dq(Isa::Scalar, &[0u8; 33], 64, &st, 0, &mut out).is_err());
    assert!(nf4::dequantize_nf4_dq(Isa::Scalar, &[0u8; 30], 64, &st, 0, &mut out).is_err());
    assert!(nf4::check_block(48).is_err());
    assert!(nf4::check_block(8192).is_err());
    assert!(nf4::check_block(64).is_ok());
}
