//! The converter reuses output buffers between chunks, so every quantizer must write every
//! byte of its output: quantizing into a buffer full of stale bytes gives exactly the bytes
//! quantizing into a zeroed one gives, for every type, with and without importance weights.

use qforge::gguf::GgmlType;
use qforge::quant;
use rand::{Rng, SeedableRng};

const TYPES: [GgmlType; 15] = [
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Bf16,
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Iq4Nl,
    GgmlType::Iq4Xs,
];

fn rows(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|i| match i % 97 {
            0 => 0.0,
            1 => 1e-7,
            _ => rng.gen_range(-2.0f32..2.0) * if i % 7 == 0 { 30.0 } else { 1.0 },
        })
        .collect()
}

#[test]
fn stale_output_bytes_never_leak_into_a_quantized_block() {
    let row = 512;
    let x = rows(7, row * 6);
    let imp: Vec<f32> = rows(8, row).iter().map(|v| v.abs() + 0.01).collect();
    let nf4 = GgmlType::Nf4 { block: 64 };
    for ty in TYPES.into_iter().chain([nf4]) {
        let n = ty.bytes_for(x.len() as u64).unwrap() as usize;
        for weighted in [false, true] {
            if weighted
                && matches!(
                    ty,
                    GgmlType::F32 | GgmlType::F16 | GgmlType::Bf16 | GgmlType::Nf4 { .. }
                )
            {
                continue;
            }
            let run = |fill: u8| {
                let mut out = vec![fill; n];
                if weighted {
                    quant::weighted::quantize_weighted(ty, &x, &imp, &mut out).unwrap();
                } else {
                    quant::quantize(ty, &x, &mut out).unwrap();
                }
                out
            };
            let clean = run(0);
            assert!(clean.iter().any(|&b| b != 0), "{ty:?}");
            for fill in [0xff, 0x55, 0xaa] {
                assert_eq!(
                    run(fill),
                    clean,
                    "{ty:?} weighted={weighted} fill={fill:#x}"
                );
            }
        }
    }
}

#[test]
fn nf4_dq_blocks_ignore_stale_output_bytes() {
    let block = 64;
    let x = rows(9, block * 40);
    let absmax = quant::nf4::block_absmax(&x, block);
    let (_, codes) = quant::nf4::double_quantize(&absmax);
    let n = x.len() / block * (1 + block / 2);
    let run = |fill: u8| {
        let mut out = vec![fill; n];
        quant::nf4::quantize_nf4_dq(&x, block, &codes, &absmax, &mut out);
        out
    };
    let clean = run(0);
    assert_eq!(run(0xff), clean);
    assert_eq!(run(0x5a), clean);
}
