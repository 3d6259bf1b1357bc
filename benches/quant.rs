//! Quantize / dequantize throughput per type, scalar vs the best SIMD tier, next to a memcpy
//! of the same f32 bytes measured in the same run. Throughput is reported in bytes of f32
//! (input for quantize, output for dequantize), so every row compares directly with memcpy.
//!
//! `cargo bench --bench quant` (add `-- dequantize` or `-- quantize` to filter).

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use qforge::gguf::GgmlType;
use qforge::quant::{self, Isa};
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

const N: usize = 1 << 20; // 1 Mi weights = 4 MiB of f32: fits L2/L3 poorly, like real rows

fn types() -> Vec<GgmlType> {
    vec![
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
        GgmlType::Nf4 { block: 64 },
    ]
}

fn gaussian(n: usize) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    (0..n)
        .map(|_| rng.sample::<f32, _>(StandardNormal) * 0.02)
        .collect()
}

/// Every tier this CPU runs: scalar, then each SIMD tier.
fn isas() -> Vec<Isa> {
    Isa::available()
}

fn memcpy(c: &mut Criterion) {
    let src = gaussian(N);
    let mut dst = vec![0f32; N];
    let mut g = c.benchmark_group("memcpy");
    g.throughput(Throughput::Bytes((N * 4) as u64));
    g.bench_function("f32", |b| b.iter(|| dst.copy_from_slice(black_box(&src))));
    g.finish();
}

fn dequantize(c: &mut Criterion) {
    let src = gaussian(N);
    let mut out = vec![0f32; N];
    let mut g = c.benchmark_group("dequantize");
    g.throughput(Throughput::Bytes((N * 4) as u64));
    for ty in types() {
        let mut q = vec![0u8; ty.bytes_for(N as u64).unwrap() as usize];
        quant::quantize(ty, &src, &mut q).unwrap();
        for isa in isas() {
            g.bench_with_input(BenchmarkId::new(ty.name(), isa.name()), &q, |b, q| {
                b.iter(|| quant::dequantize_with(isa, ty, black_box(q), &mut out).unwrap())
            });
        }
    }
    g.finish();
}

fn quantize(c: &mut Criterion) {
    let src = gaussian(N / 4);
    let mut g = c.benchmark_group("quantize");
    g.throughput(Throughput::Bytes((src.len() * 4) as u64));
    g.sample_size(10);
    for ty in types() {
        let mut q = vec![0u8; ty.bytes_for(src.len() as u64).unwrap() as usize];
        for isa in isas() {
            g.bench_with_input(BenchmarkId::new(ty.name(), isa.name()), &src, |b, s| {
                b.iter(|| quant::quantize_with(isa, ty, black_box(s), &mut q).unwrap())
            });
        }
    }
    g.finish();
}

criterion_group!(benches, memcpy, dequantize, quantize);
criterion_main!(benches);
