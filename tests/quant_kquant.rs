//! Q4_K, Q6_K, IQ4_NL and IQ4_XS against ggml itself (fixtures/quant/kquant, written by
//! scripts/gen_quant_golden_kquant.py from the libggml-base of llama-cpp-python): quantized
//! bytes from `ggml_quantize_chunk` and values from ggml's `dequantize_row_*`, over edge-case
//! rows (ties, zeros, subnormals, the 1e-15 threshold, f16 overflow, ±f32::MAX, heavy tails,
//! test-quantize-fns' cos input) and random blocks with inf/NaN/subnormal scales. Every
//! kernel tier this CPU has must give exactly ggml's bytes and values.

use qforge::gguf::GgmlType;
use qforge::quant::iq4_nl::BlockIq4Nl;
use qforge::quant::iq4_xs::BlockIq4Xs;
use qforge::quant::q4_k::BlockQ4K;
use qforge::quant::q6_k::BlockQ6K;
use qforge::quant::{dequantize_with, quantize_with, BlockFormat, Isa};

mod kquant_fixture;
use kquant_fixture::{kinds, read, read_f32};

const TYPES: [(&str, GgmlType); 4] = [
    ("Q4_K", GgmlType::Q4K),
    ("Q6_K", GgmlType::Q6K),
    ("IQ4_NL", GgmlType::Iq4Nl),
    ("IQ4_XS", GgmlType::Iq4Xs),
];

/// The blocks of every row that differ, as "row r (kind)" lines.
fn row_diffs(got: &[u8], want: &[u8], kinds: &[String]) -> Vec<String> {
    let per_row = want.len() / kinds.len();
    (0..kinds.len())
        .filter(|&r| got[r * per_row..(r + 1) * per_row] != want[r * per_row..(r + 1) * per_row])
        .map(|r| format!("row {r} ({})", kinds[r]))
        .collect()
}

#[test]
fn quantized_bytes_equal_ggml_for_every_tier() {
    let kinds = kinds();
    let x = read_f32("input.f32");
    assert_eq!(x.len(), kinds.len() * 256);
    let mut failures = Vec::new();
    for (name, ty) in TYPES {
        let want = read(&format!("{name}.bin"));
        for isa in Isa::available() {
            let mut got = vec![0u8; want.len()];
            quantize_with(isa, ty, &x, &mut got).unwrap();
            for d in row_diffs(&got, &want, &kinds) {
                failures.push(format!("{name} {isa:?} {d}"));
            }
            // one row at a time too: multi-block kernels must handle short inputs and tails
            for (r, row) in x.chunks_exact(256).enumerate().step_by(7) {
                let per_row = want.len() / kinds.len();
                let mut one = vec![0u8; per_row];
                quantize_with(isa, ty, row, &mut one).unwrap();
                if one != want[r * per_row..(r + 1) * per_row] {
                    failures.push(format!("{name} {isa:?} single row {r} ({})", kinds[r]));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "differ from ggml:\n{}",
        failures.join("\n")
    );
}

/// The scalar one-block reference (`BlockFormat::quantize_block`) by itself, block by block.
#[test]
fn reference_block_quantizers_equal_ggml() {
    fn check<B: BlockFormat>(name: &str, x: &[f32], want: &[u8]) {
        let size = size_of::<B>();
        let bad: Vec<usize> = x
            .chunks_exact(B::ELEMS)
            .enumerate()
            .filter(|(i, c)| bytemuck::bytes_of(&B::quantize_block(c)) != &want[i * size..][..size])
            .map(|(i, _)| i)
            .collect();
        assert!(bad.is_empty(), "{name}: blocks {bad:?} differ from ggml");
    }
    let x = read_f32("input.f32");
    check::<BlockQ4K>("Q4_K", &x, &read("Q4_K.bin"));
    check::<BlockQ6K>("Q6_K", &x, &read("Q6_K.bin"));
    check::<BlockIq4Nl>("IQ4_NL", &x, &read("IQ4_NL.bin"));
    check::<BlockIq4Xs>("IQ4_XS", &x, &read("IQ4_XS.bin"));
}

/// Bit equality, except that two NaNs count as equal: ggml and qforge give the same NaN
/// payloads today (checked below), but payloads are not something either compiler promises.
fn assert_same_values(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    let mut payload_diffs = 0;
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        if g.is_nan() && w.is_nan() {
            payload_diffs += (g.to_bits() != w.to_bits()) as usize;
            continue;
        }
        assert_eq!(
            g.to_bits(),
            w.to_bits(),
            "{what}: element {i}: {g:e} vs ggml {w:e}"
        );
    }
    // Allow NaN payloads to differ only where the C or Rust compiler may legally swap
    // operands; on x86-64 with today's compilers they agree exactly.
    #[cfg(target_arch = "x86_64")]
    assert_eq!(payload_diffs, 0, "{what}: NaN payloads differ from ggml");
    let _ = payload_diffs;
}

#[test]
fn dequantized_values_equal_ggml_for_every_tier() {
    let n_rows = kinds().len();
    for (name, ty) in TYPES {
        for (bytes, values) in [
            (format!("{name}.bin"), format!("{name}.deq.f32")),
            (format!("{name}.rand.bin"), format!("{name}.rand.deq.f32")),
        ] {
            let q = read(&bytes);
            let want = read_f32(&values);
            if !bytes.contains("rand") {
                assert_eq!(want.len(), n_rows * 256);
            }
            for isa in Isa::available() {
                let mut got = vec![f32::NAN; want.len()];
                dequantize_with(isa, ty, &q, &mut got).unwrap();
                assert_same_values(&got, &want, &format!("{bytes} {isa:?}"));
            }
        }
    }
}

/// test-quantize-fns: `sqrt(Σ(x − y)²)/n` on `0.1 + 2·cos(i + offset)`, 4096 values, below
/// 0.002, and equal (to 1%) to what ggml's reference gives (gguf-and-ggml.md §3.12, offset 0).
#[test]
fn test_quantize_fns_error_metric() {
    for offset in [0.0f32, 1.0] {
        let x: Vec<f32> = (0..4096)
            .map(|i| 0.1 + 2.0 * (i as f32 + offset).cos())
            .collect();
        for (ty, reference) in [
            (GgmlType::Q4K, 0.00098),
            (GgmlType::Q6K, 0.00026),
            (GgmlType::Iq4Nl, 0.00124),
        ] {
            for isa in Isa::available() {
                let mut q = vec![0u8; ty.bytes_for(4096).unwrap() as usize];
                quantize_with(isa, ty, &x, &mut q).unwrap();
                let mut y = vec![0f32; 4096];
                dequantize_with(isa, ty, &q, &mut y).unwrap();
                let se: f64 = x
                    .iter()
                    .zip(&y)
                    .map(|(a, b)| ((a - b) as f64).powi(2))
                    .sum();
                let err = se.sqrt() / 4096.0;
                assert!(err < 0.002, "{ty} {isa:?} offset {offset}: {err}");
                if offset == 0.0 {
                    assert!(
                        (err - reference).abs() / reference < 0.01,
                        "{ty} {isa:?}: {err} vs ggml's {reference}"
                    );
                }
            }
        }
    }
}
