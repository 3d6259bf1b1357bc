//! Quantization quality table: RMSE, max abs error, SNR and bits per weight for every type on
//! Gaussian, Student-t (heavy tails) and outlier-channel data; then, for the types that take an
//! importance matrix, the output error a layer sees — Σ_j a_j·(x − x̂)² with a_j the mean
//! squared activation of input column j — without and with that importance. Prints Markdown.
//!
//! `cargo bench --bench quality`

use qforge::gguf::GgmlType;
use qforge::quant;
use rand::{Rng, SeedableRng};
use rand_distr::{StandardNormal, StudentT};

const ROWS: usize = 256;
const COLS: usize = 4096;

fn data(kind: &str) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    match kind {
        "gaussian" => (0..ROWS * COLS)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect(),
        "student-t(3)" => {
            let t = StudentT::new(3.0f32).unwrap();
            (0..ROWS * COLS).map(|_| rng.sample(t)).collect()
        }
        "outlier-channels" => {
            // 1% of input channels (columns) carry 20x larger weights, as in LLM activations'
            // outlier features folded into the following weights.
            let hot: Vec<bool> = (0..COLS).map(|_| rng.gen::<f32>() < 0.01).collect();
            (0..ROWS * COLS)
                .map(|i| {
                    let x: f32 = rng.sample(StandardNormal);
                    if hot[i % COLS] {
                        x * 20.0
                    } else {
                        x
                    }
                })
                .collect()
        }
        _ => unreachable!(),
    }
}

struct Stats {
    rmse: f64,
    max_abs: f64,
    snr_db: f64,
}

fn stats(x: &[f32], y: &[f32]) -> Stats {
    let (mut se, mut sx, mut max_abs) = (0f64, 0f64, 0f64);
    for (&a, &b) in x.iter().zip(y) {
        let d = (a - b) as f64;
        se += d * d;
        sx += (a as f64) * (a as f64);
        max_abs = max_abs.max(d.abs());
    }
    Stats {
        rmse: (se / x.len() as f64).sqrt(),
        max_abs,
        snr_db: 10.0 * (sx / se).log10(),
    }
}

/// Weighted SNR: 10·log10(Σ a_j x² / Σ a_j (x − x̂)²) over rows of `a.len()` columns.
fn weighted_snr(x: &[f32], y: &[f32], a: &[f32]) -> f64 {
    let (mut se, mut sx) = (0f64, 0f64);
    for (i, (&p, &q)) in x.iter().zip(y).enumerate() {
        let w = a[i % a.len()] as f64;
        se += w * ((p - q) as f64).powi(2);
        sx += w * (p as f64).powi(2);
    }
    10.0 * (sx / se).log10()
}

/// Gaussian weights whose input columns see log-normal activation energies (a few columns 100×
/// the others, as LLM hidden states have): the importance-weighted output SNR without and with
/// the imatrix path.
fn importance_table() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let x: Vec<f32> = (0..ROWS * COLS)
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    let a: Vec<f32> = (0..COLS)
        .map(|_| {
            let z: f32 = rng.sample(StandardNormal);
            (1.5 * z).exp()
        })
        .collect();
    println!("| type | output SNR dB, no imatrix | with imatrix | gain dB |");
    println!("|---|---:|---:|---:|");
    for ty in [
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4_0,
        GgmlType::Q4K,
        GgmlType::Iq4Xs,
        GgmlType::Iq4Nl,
        GgmlType::Q5K,
        GgmlType::Q6K,
    ] {
        let n = ty.bytes_for(x.len() as u64).unwrap() as usize;
        let (mut q0, mut q1) = (vec![0u8; n], vec![0u8; n]);
        quant::quantize(ty, &x, &mut q0).unwrap();
        quant::weighted::quantize_weighted(ty, &x, &a, &mut q1).unwrap();
        let (mut y0, mut y1) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        quant::dequantize(ty, &q0, &mut y0).unwrap();
        quant::dequantize(ty, &q1, &mut y1).unwrap();
        let (s0, s1) = (weighted_snr(&x, &y0, &a), weighted_snr(&x, &y1, &a));
        println!("| {} | {s0:.2} | {s1:.2} | {:+.2} |", ty.name(), s1 - s0);
    }
}

fn main() {
    // `cargo test --benches` runs bench targets with --bench absent; keep that quick.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let types = [
        GgmlType::F16,
        GgmlType::Bf16,
        GgmlType::Q8_0,
        GgmlType::Q6K,
        GgmlType::Q5_1,
        GgmlType::Q5_0,
        GgmlType::Q4K,
        GgmlType::Q4_1,
        GgmlType::Iq4Nl,
        GgmlType::Iq4Xs,
        GgmlType::Q4_0,
        GgmlType::Q3K,
        GgmlType::Q2K,
        GgmlType::Nf4 { block: 64 },
    ];
    importance_table();
    println!();
    println!("| data | type | bits/weight | RMSE | max abs err | SNR dB |");
    println!("|---|---|---:|---:|---:|---:|");
    for kind in ["gaussian", "student-t(3)", "outlier-channels"] {
        let x = data(kind);
        for ty in types {
            let mut q = vec![0u8; ty.bytes_for(x.len() as u64).unwrap() as usize];
            quant::quantize(ty, &x, &mut q).unwrap();
            let mut y = vec![0f32; x.len()];
            quant::dequantize(ty, &q, &mut y).unwrap();
            let s = stats(&x, &y);
            println!(
                "| {kind} | {} | {:.3} | {:.5} | {:.4} | {:.2} |",
                ty.name(),
                ty.bits_per_weight(),
                s.rmse,
                s.max_abs,
                s.snr_db
            );
        }
    }
}
