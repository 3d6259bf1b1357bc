//! The Q2_K, Q3_K and IQ4_XS SIMD dequantizers against their scalar reference: every tier this
//! CPU runs gives the scalar values bit for bit (NaN equals NaN whatever its payload) on the
//! ggml golden files (fixtures/quant/kquant, including the `.rand` blocks with inf, NaN,
//! subnormal and ±0 f16 scales) and on random byte blocks at block counts that exercise
//! every tail. The quantizers of the same types are checked too (every tier gives the scalar
//! bytes), so the dispatch of both directions stays consistent.

use std::path::PathBuf;

use qforge::gguf::GgmlType;
use qforge::quant::{dequantize_with, quantize_with, Isa};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

/// Name, type, block bytes, and the byte offsets of the block's f16 scales.
const TYPES: [(&str, GgmlType, usize, &[usize]); 3] = [
    ("Q2_K", GgmlType::Q2K, 84, &[80, 82]),
    ("Q3_K", GgmlType::Q3K, 110, &[108]),
    ("IQ4_XS", GgmlType::Iq4Xs, 136, &[0]),
];

/// f16 bit patterns that stress the scale products: ±0, the smallest and largest subnormals,
/// the smallest normal, one, the largest finite, ±inf, quiet and signalling NaNs with
/// payloads.
const SPECIAL_F16: [u16; 14] = [
    0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xBC00, 0x7BFF, 0x7C00, 0xFC00, 0x7E00,
    0xFE01, 0x7C01,
];

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/quant/kquant")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first element whose bits differ (NaN and NaN count as equal), with both values.
fn first_mismatch(got: &[f32], want: &[f32]) -> Option<(usize, f32, f32)> {
    got.iter()
        .zip(want)
        .position(|(g, w)| g.to_bits() != w.to_bits() && !(g.is_nan() && w.is_nan()))
        .map(|i| (i, got[i], want[i]))
}

/// Dequantize `bytes` with every available tier and compare with the scalar values. Returns
/// the scalar output for further checks.
fn check_dequant(what: &str, ty: GgmlType, bytes: &[u8]) -> Vec<f32> {
    let n = (bytes.len() / ty.type_size() as usize) * ty.block_size() as usize;
    let mut want = vec![0f32; n];
    dequantize_with(Isa::Scalar, ty, bytes, &mut want).unwrap();
    for isa in Isa::available() {
        // A poisoned buffer shows any element a kernel forgets to write.
        let mut got = vec![f32::from_bits(0x7FC0_DEAD); n];
        dequantize_with(isa, ty, bytes, &mut got).unwrap();
        if let Some((i, g, w)) = first_mismatch(&got, &want) {
            panic!(
                "{what} {isa:?}: element {i} (block {}) is {g:e} ({:#010x}), scalar {w:e} \
                 ({:#010x})",
                i / ty.block_size() as usize,
                g.to_bits(),
                w.to_bits()
            );
        }
    }
    want
}

#[test]
fn golden_files_dequantize_identically_on_every_tier() {
    for (name, ty, size, _) in TYPES {
        for file in [format!("{name}.bin"), format!("{name}.rand.bin")] {
            let bytes = fixture(&file);
            assert!(
                !bytes.is_empty() && bytes.len().is_multiple_of(size),
                "{file}"
            );
            let values = check_dequant(&file, ty, &bytes);
            assert_eq!(values.len(), bytes.len() / size * 256, "{file}");
        }
    }
}

/// The `.rand` fixtures exist to reach non-finite scales; make sure they still do, so the
/// golden test above covers inf/NaN products.
#[test]
fn rand_fixtures_reach_non_finite_values() {
    for (name, ty, _, _) in TYPES {
        let file = format!("{name}.rand.bin");
        let bytes = fixture(&file);
        let mut v = vec![0f32; bytes.len() / ty.type_size() as usize * 256];
        dequantize_with(Isa::Scalar, ty, &bytes, &mut v).unwrap();
        assert!(v.iter().any(|x| x.is_nan()), "{file}: no NaN");
        assert!(v.iter().any(|x| x.is_infinite()), "{file}: no inf");
    }
}

#[test]
fn random_blocks_dequantize_identically_on_every_tier() {
    let mut rng = StdRng::seed_from_u64(0x0023_51AD);
    let mut cases = 0;
    for (name, ty, size, scale_offsets) in TYPES {
        for round in 0..40 {
            for blocks in [1usize, 2, 3, 7, 8, 9, 16, 33] {
                let mut bytes = vec![0u8; blocks * size];
                rng.fill(&mut bytes[..]);
                for block in bytes.chunks_exact_mut(size) {
                    for &off in scale_offsets {
                        let bits = match rng.gen_range(0..4) {
                            // uniformly random bits (the fill above): mostly normal, some
                            // inf/NaN and subnormal
                            0 => continue,
                            1 => SPECIAL_F16[rng.gen_range(0..SPECIAL_F16.len())],
                            // typical weight scales, around 1e-4 .. 1e-1
                            2 => rng.gen_range(0x0C00u16..0x2E00) | (rng.gen::<u16>() & 0x8000),
                            _ => rng.gen_range(0u16..0x0400), // subnormal
                        };
                        block[off..off + 2].copy_from_slice(&bits.to_le_bytes());
                    }
                    // some blocks with all-zero or all-ones codes and scales
                    match rng.gen_range(0..16) {
                        0 => block.fill(0),
                        1 => block.fill(0xFF),
                        _ => {}
                    }
                }
                check_dequant(
                    &format!("{name} round {round}, {blocks} blocks"),
                    ty,
                    &bytes,
                );
                cases += 1;
            }
        }
    }
    assert_eq!(cases, 3 * 40 * 8);
}

/// Every code and every scale code in every position: blocks built so that each byte value
/// 0..=255 appears in each byte position across the set.
#[test]
fn every_byte_value_in_every_position() {
    for (name, ty, size, scale_offsets) in TYPES {
        let mut bytes = vec![0u8; 256 * size];
        for (v, block) in bytes.chunks_exact_mut(size).enumerate() {
            for (p, byte) in block.iter_mut().enumerate() {
                *byte = (v as u8).wrapping_add((p as u8).wrapping_mul(37));
            }
            // keep the f16 scales finite and normal so every product is an ordinary value
            for &off in scale_offsets {
                let bits = 0x3000u16 + (v as u16) * 7;
                block[off..off + 2].copy_from_slice(&bits.to_le_bytes());
            }
        }
        let values = check_dequant(&format!("{name} byte sweep"), ty, &bytes);
        assert!(values.iter().all(|x| x.is_finite()), "{name}");
    }
}

/// Gaussian weights at a random magnitude per 32-value group, with occasional zero groups and
/// outliers.
fn weights(n: usize, rng: &mut StdRng) -> Vec<f32> {
    let mut x = Vec::with_capacity(n);
    while x.len() < n {
        let scale = 10f32.powf(rng.gen_range(-6.0..3.0));
        let style = rng.gen_range(0..8);
        for _ in 0..32 {
            let g: f32 = rng.sample(StandardNormal);
            x.push(match style {
                0 => 0.0,
                1 if rng.gen_bool(0.05) => g * 1e4,
                2 => (g * 4.0).round() * 0.5,
                _ => g * scale,
            });
        }
    }
    x.truncate(n);
    x
}

#[test]
fn quantize_is_identical_on_every_tier() {
    let mut rng = StdRng::seed_from_u64(0x0023_0A17);
    for (name, ty, size, _) in TYPES {
        for blocks in [1usize, 3, 7, 33] {
            let x = weights(blocks * 256, &mut rng);
            let mut want = vec![0u8; blocks * size];
            quantize_with(Isa::Scalar, ty, &x, &mut want).unwrap();
            for isa in Isa::available() {
                let mut got = vec![0u8; blocks * size];
                quantize_with(isa, ty, &x, &mut got).unwrap();
                let bad: Vec<usize> = (0..blocks)
                    .filter(|&b| got[b * size..(b + 1) * size] != want[b * size..(b + 1) * size])
                    .collect();
                assert!(bad.is_empty(), "{name} {isa:?} {blocks} blocks: {bad:?}");
            }
            // and the quantized blocks dequantize identically on every tier
            check_dequant(&format!("{name} quantized, {blocks} blocks"), ty, &want);
        }
    }
}

/// Dequantizing a range of blocks equals the same blocks inside a longer buffer (no kernel
/// state leaks between blocks or depends on alignment of the output).
#[test]
fn sub_ranges_match_whole_buffer() {
    let mut rng = StdRng::seed_from_u64(0x0023_0B0B);
    for (name, ty, size, _) in TYPES {
        let blocks = 13;
        let mut bytes = vec![0u8; blocks * size];
        rng.fill(&mut bytes[..]);
        for isa in Isa::available() {
            let mut whole = vec![0f32; blocks * 256];
            dequantize_with(isa, ty, &bytes, &mut whole).unwrap();
            for start in [0usize, 1, 5, 12] {
                for len in [1usize, 2, 8] {
                    if start + len > blocks {
                        continue;
                    }
                    // an output buffer offset by one float, so stores are unaligned
                    let mut buf = vec![0f32; len * 256 + 1];
                    dequantize_with(
                        isa,
                        ty,
                        &bytes[start * size..(start + len) * size],
                        &mut buf[1..],
                    )
                    .unwrap();
                    let same = buf[1..]
                        .iter()
                        .zip(&whole[start * 256..(start + len) * 256])
                        .all(|(a, b)| a.to_bits() == b.to_bits());
                    assert!(same, "{name} {isa:?} blocks {start}..{}", start + len);
                }
            }
        }
    }
}

/// On x86-64 with AVX2/FMA/F16C the SIMD tiers must really run (otherwise every comparison
/// above would be the scalar code against itself).
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
