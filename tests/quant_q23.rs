//! Q2_K and Q3_K against ggml itself (fixtures/quant/kquant, written by
//! scripts/gen_quant_golden_kquant.py from the libggml-base of llama-cpp-python): quantized
//! bytes from `ggml_quantize_chunk` (the `quantize_row_q{2,3}_K_ref` quantizers) and values
//! from ggml's `dequantize_row_q{2,3}_K`, over the edge-case rows of manifest.json and over
//! random blocks with inf/NaN/subnormal/±0 super-scales.

use qforge::gguf::GgmlType;
use qforge::quant::q2_k::BlockQ2K;
use qforge::quant::q3_k::BlockQ3K;
use qforge::quant::{dequantize_with, quantize_with, BlockFormat, Isa};

mod kquant_fixture;
use kquant_fixture::{kinds, read, read_f32};

const TYPES: [(&str, GgmlType, usize); 2] =
    [("Q2_K", GgmlType::Q2K, 84), ("Q3_K", GgmlType::Q3K, 110)];

/// The rows whose bytes differ, as "row r (kind)" lines.
fn row_diffs(got: &[u8], want: &[u8], kinds: &[String]) -> Vec<String> {
    let per_row = want.len() / kinds.len();
    (0..kinds.len())
        .filter(|&r| got[r * per_row..(r + 1) * per_row] != want[r * per_row..(r + 1) * per_row])
        .map(|r| format!("row {r} ({})", kinds[r]))
        .collect()
}

#[test]
fn quantized_bytes_equal_ggml() {
    let kinds = kinds();
    let x = read_f32("input.f32");
    assert_eq!(x.len(), kinds.len() * 256);
    let mut failures = Vec::new();
    for (name, ty, size) in TYPES {
        let want = read(&format!("{name}.bin"));
        assert_eq!(want.len(), kinds.len() * size, "{name}.bin");
        let mut isas = vec![Isa::Scalar];
        isas.extend(Isa::available().into_iter().filter(|&i| i != Isa::Scalar));
        for isa in isas {
            let mut got = vec![0u8; want.len()];
            quantize_with(isa, ty, &x, &mut got).unwrap();
            for d in row_diffs(&got, &want, &kinds) {
                failures.push(format!("{name} {isa:?} {d}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "differ from ggml:\n{}",
        failures.join("\n")
    );
}

/// The one-block reference (`BlockFormat::quantize_block`) by itself, block by block.
#[test]
fn reference_block_quantizers_equal_ggml() {
    fn check<B: BlockFormat>(name: &str, x: &[f32], want: &[u8], kinds: &[String]) {
        let size = size_of::<B>();
        let bad: Vec<String> = x
            .chunks_exact(B::ELEMS)
            .enumerate()
            .filter(|(i, c)| bytemuck::bytes_of(&B::quantize_block(c)) != &want[i * size..][..size])
            .map(|(i, _)| format!("{i} ({})", kinds[i]))
            .collect();
        assert!(bad.is_empty(), "{name}: blocks {bad:?} differ from ggml");
    }
    let kinds = kinds();
    let x = read_f32("input.f32");
    check::<BlockQ2K>("Q2_K", &x, &read("Q2_K.bin"), &kinds);
    check::<BlockQ3K>("Q3_K", &x, &read("Q3_K.bin"), &kinds);
}

/// Bit equality, except that two NaNs count as equal: ggml and qforge give the same NaN
/// payloads today (checked below on x86-64), but payloads are not something either compiler
/// promises.
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
            "{what}: element {i} (block {}): {g:e} vs ggml {w:e}",
            i / 256
        );
    }
    #[cfg(target_arch = "x86_64")]
    assert_eq!(payload_diffs, 0, "{what}: NaN payloads differ from ggml");
    let _ = payload_diffs;
}

#[test]
fn dequantized_values_equal_ggml() {
    let n_rows = kinds().len();
    for (name, ty, size) in TYPES {
        for (bytes, values) in [
            (format!("{name}.bin"), format!("{name}.deq.f32")),
            (format!("{name}.rand.bin"), format!("{name}.rand.deq.f32")),
        ] {
            let q = read(&bytes);
            let want = read_f32(&values);
            assert_eq!(q.len() / size * 256, want.len(), "{bytes}");
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

/// The one-block dequantizers (`BlockFormat::dequantize_block`) on the random blocks.
#[test]
fn reference_block_dequantizers_equal_ggml() {
    fn check<B: BlockFormat>(name: &str) {
        let q = read(&format!("{name}.rand.bin"));
        let want = read_f32(&format!("{name}.rand.deq.f32"));
        let blocks: &[B] = bytemuck::cast_slice(&q);
        let mut got = vec![f32::NAN; want.len()];
        for (b, o) in blocks.iter().zip(got.chunks_exact_mut(B::ELEMS)) {
            b.dequantize_block(o);
        }
        assert_same_values(&got, &want, &format!("{name}.rand.bin block by block"));
    }
    check::<BlockQ2K>("Q2_K");
    check::<BlockQ3K>("Q3_K");
}

/// All-zero input (+0.0 and −0.0) gives all-zero bytes for both types, and dequantizes to +0.
#[test]
fn zero_blocks_are_all_zero_bytes() {
    for (name, ty, size) in TYPES {
        for zero in [0.0f32, -0.0] {
            let x = vec![zero; 512];
            let mut q = vec![0xAAu8; 2 * size];
            quantize_with(Isa::Scalar, ty, &x, &mut q).unwrap();
            assert!(q.iter().all(|&b| b == 0), "{name} {zero:?}: {q:02x?}");
            let mut y = vec![f32::NAN; 512];
            dequantize_with(Isa::Scalar, ty, &q, &mut y).unwrap();
            assert!(y.iter().all(|v| v.to_bits() == 0), "{name} {zero:?}: {y:?}");
        }
    }
    assert_eq!(
        bytemuck::bytes_of(&BlockQ2K::quantize_block(&[0.0; 256])),
        &[0u8; 84][..]
    );
    assert_eq!(
        bytemuck::bytes_of(&BlockQ3K::quantize_block(&[0.0; 256])),
        &[0u8; 110][..]
    );
}
