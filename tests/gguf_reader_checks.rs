//! One test per reader check (spec/FORMAT.md §7), each asserting the specific error and the
//! byte offset it reports; every prefix of a valid file is rejected without a panic; and a
//! property test: random metadata and tensors → write → read → equal.

use proptest::prelude::*;
use qforge::gguf::{
    write_to_vec, Array, ErrorKind, GgmlType, GgufHeader, Metadata, TensorSpec, Value,
};

/// A little-endian GGUF byte builder.
#[derive(Default, Clone)]
struct B(Vec<u8>);

impl B {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> B {
        let mut b = B(b"GGUF".to_vec());
        b.u32(version).u64(n_tensors).u64(n_kv);
        b
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.0.extend_from_slice(s.as_bytes());
        self
    }
    fn kv_u32(&mut self, k: &str, v: u32) -> &mut Self {
        self.str(k).u32(4).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad(&mut self, align: usize) -> &mut Self {
        while !self.0.len().is_multiple_of(align) {
            self.0.push(0);
        }
        self
    }
    fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    fn pos(&self) -> u64 {
        self.0.len() as u64
    }
}

fn err(b: &B) -> (ErrorKind, u64) {
    let e = GgufHeader::parse(&b.0).expect_err("must be rejected");
    (e.kind, e.offset)
}

#[test]
fn bad_magic() {
    let mut b = B::header(3, 0, 0);
    b.0[..4].copy_from_slice(b"FUGG");
    assert_eq!(err(&b), (ErrorKind::BadMagic(*b"FUGG"), 0));
}

#[test]
fn unsupported_versions() {
    for v in [0u32, 1, 4, 99] {
        assert_eq!(
            err(&B::header(v, 0, 0)),
            (ErrorKind::UnsupportedVersion(v), 4)
        );
    }
    let msg = GgufHeader::parse(&B::header(1, 0, 0).0)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("version 1 is no longer supported"), "{msg}");
}

#[test]
fn byte_swapped_file() {
    let mut b = B(b"GGUF".to_vec());
    b.0.extend_from_slice(&3u32.to_be_bytes());
    b.0.extend_from_slice(&0u64.to_be_bytes());
    b.0.extend_from_slice(&0u64.to_be_bytes());
    let (kind, off) = err(&b);
    assert_eq!((kind, off), (ErrorKind::ByteSwapped(0x0300_0000), 4));
    assert!(GgufHeader::parse(&b.0)
        .unwrap_err()
        .to_string()
        .contains("big-endian"));
}

#[test]
fn huge_counts_are_bounded_by_the_file() {
    let (kind, off) = err(&B::header(3, u64::MAX, 0));
    assert!(
        matches!(
            kind,
            ErrorKind::CountTooLarge {
                what: "tensor count",
                ..
            }
        ),
        "{kind:?}"
    );
    assert_eq!(off, 8);
    let (kind, off) = err(&B::header(3, 0, u64::MAX));
    assert!(
        matches!(
            kind,
            ErrorKind::CountTooLarge {
                what: "metadata count",
                ..
            }
        ),
        "{kind:?}"
    );
    assert_eq!(off, 16);
}

#[test]
fn string_longer_than_the_file_or_the_cap() {
    let mut b = B::header(3, 0, 1);
    b.u64(1000);
    b.0.extend_from_slice(b"key, and not nearly 1000 bytes");
    let (kind, off) = err(&b);
    assert!(
        matches!(kind, ErrorKind::Truncated { needed: 1000, .. }),
        "{kind:?}"
    );
    assert_eq!(off, 32);
    let mut b = B::header(3, 0, 1);
    b.u64((1 << 30) + 1).zeros(16);
    assert_eq!(
        err(&b),
        (
            ErrorKind::StringTooLong {
                length: (1 << 30) + 1,
                max: 1 << 30
            },
            24
        )
    );
}

#[test]
fn array_counts_are_capped_and_bounded() {
    let mut b = B::header(3, 0, 1);
    b.str("k").u32(9).u32(4).u64((1 << 30) + 1);
    let at = b.pos() - 8;
    assert_eq!(
        err(&b),
        (
            ErrorKind::ArrayTooLong {
                length: (1 << 30) + 1,
                max: 1 << 30
            },
            at
        )
    );
    let mut b = B::header(3, 0, 1);
    b.str("k").u32(9).u32(8).u64(1 << 29); // strings need 8 bytes each at least
    let at = b.pos() - 8;
    let (kind, off) = err(&b);
    assert!(matches!(kind, ErrorKind::Truncated { .. }), "{kind:?}");
    assert_eq!(off, at);
}

#[test]
fn nested_arrays_and_bad_value_types() {
    let mut b = B::header(3, 0, 1);
    b.str("k").u32(9);
    let at = b.pos();
    b.u32(9).u64(1);
    assert_eq!(err(&b), (ErrorKind::NestedArray, at));
    let mut b = B::header(3, 0, 1);
    b.str("k");
    let at = b.pos();
    b.u32(13).u32(0);
    assert_eq!(err(&b), (ErrorKind::BadValueType(13), at));
}

#[test]
fn empty_and_duplicate_keys() {
    let mut b = B::header(3, 0, 1);
    b.kv_u32("", 1);
    assert_eq!(err(&b), (ErrorKind::EmptyKey, 24));
    let mut b = B::header(3, 0, 2);
    b.kv_u32("a", 1);
    let at = b.pos();
    b.kv_u32("a", 2);
    assert_eq!(err(&b), (ErrorKind::DuplicateKey { key: "a".into() }, at));
}

#[test]
fn alignment_must_be_a_u32_power_of_two_up_to_1_mib() {
    for v in [0u32, 13, 1 << 21] {
        let mut b = B::header(3, 0, 1);
        b.kv_u32("general.alignment", v);
        let (kind, off) = err(&b);
        assert!(
            matches!(kind, ErrorKind::BadAlignment { .. }),
            "{v}: {kind:?}"
        );
        assert_eq!(off, 24);
    }
    let mut b = B::header(3, 0, 1);
    b.str("general.alignment").u32(5).u32(32); // INT32
    assert!(matches!(err(&b).0, ErrorKind::BadAlignment { .. }));
    // 1 is legal (test-gguf's success case)
    let mut b = B::header(3, 0, 1);
    b.kv_u32("general.alignment", 1);
    assert_eq!(GgufHeader::parse(&b.0).unwrap().alignment, 1);
}

fn one_tensor(name: &str, dims: &[u64], ty: u32, offset: u64, data: usize) -> (B, u64) {
    let mut b = B::header(3, 1, 0);
    let at = b.pos();
    b.tensor(name, dims, ty, offset).pad(32).zeros(data);
    (b, at)
}

#[test]
fn tensor_names() {
    let long = "x".repeat(64);
    let (b, at) = one_tensor(&long, &[4], 0, 0, 16);
    assert_eq!(
        err(&b),
        (
            ErrorKind::TensorNameTooLong {
                name: long,
                length: 64
            },
            at
        )
    );
    let ok = "x".repeat(63);
    assert!(GgufHeader::parse(&one_tensor(&ok, &[4], 0, 0, 16).0 .0).is_ok());
    let (b, at) = one_tensor("", &[4], 0, 0, 16);
    assert_eq!(err(&b), (ErrorKind::EmptyTensorName, at));
    let mut b = B::header(3, 2, 0);
    b.tensor("t", &[8], 0, 0);
    let at = b.pos();
    b.tensor("t", &[8], 0, 32).pad(32).zeros(64);
    assert_eq!(
        err(&b),
        (ErrorKind::DuplicateTensorName { name: "t".into() }, at)
    );
}

#[test]
fn dimensions() {
    let (b, at) = one_tensor("t", &[1, 1, 1, 1, 1], 0, 0, 4);
    assert_eq!(
        err(&b),
        (
            ErrorKind::BadDimCount {
                name: "t".into(),
                n_dims: 5
            },
            at + 8 + 1
        )
    );
    let (b, at) = one_tensor("t", &[4, u64::MAX], 0, 0, 16);
    assert_eq!(
        err(&b),
        (
            ErrorKind::NegativeDim {
                name: "t".into(),
                dim: -1
            },
            at + 8 + 1 + 4 + 8
        )
    );
    let big = 4 * i32::MAX as u64;
    let (b, at) = one_tensor("t", &[big, big], 0, 0, 16);
    // reported at the dimension count, where the shape starts
    assert_eq!(
        err(&b),
        (ErrorKind::ElementCountOverflow { name: "t".into() }, at + 9)
    );
    // element count fits, byte size does not (F64: 8 bytes each)
    let (b, at) = one_tensor("t", &[1 << 61], 28, 0, 16);
    assert_eq!(
        err(&b),
        (
            ErrorKind::ByteSizeOverflow { name: "t".into() },
            at + 8 + 1 + 4 + 8
        )
    );
}

#[test]
fn unknown_and_removed_type_ids() {
    for id in [4u32, 5, 31, 36, 40, 99, 1 << 20] {
        let (b, at) = one_tensor("t", &[32], id, 0, 64);
        assert_eq!(
            err(&b),
            (
                ErrorKind::UnknownType {
                    name: "t".into(),
                    id
                },
                at + 8 + 1 + 4 + 8
            )
        );
    }
}

#[test]
fn row_length_must_divide_the_block() {
    let (b, at) = one_tensor("t", &[33, 2], 8, 0, 128);
    let (kind, off) = err(&b);
    assert!(
        matches!(
            kind,
            ErrorKind::BlockMismatch {
                ne0: 33,
                block: 32,
                ..
            }
        ),
        "{kind:?}"
    );
    assert_eq!(off, at + 8 + 1 + 4 + 16);
}

#[test]
fn offsets_must_be_the_running_padded_sum() {
    let mut b = B::header(3, 2, 0);
    b.tensor("a", &[3], 0, 0); // 12 bytes, padded to 32
    let at = b.pos() + 8 + 1 + 4 + 8 + 4;
    b.tensor("b", &[3], 0, 12).pad(32).zeros(64);
    assert_eq!(
        err(&b),
        (
            ErrorKind::BadOffset {
                name: "b".into(),
                found: 12,
                expected: 32
            },
            at
        )
    );
}

#[test]
fn data_must_lie_inside_the_file() {
    let (b, at) = one_tensor("t", &[64], 0, 0, 255);
    assert_eq!(
        err(&b),
        (
            ErrorKind::DataOutOfBounds {
                name: "t".into(),
                end: b.pos() + 1,
                file_size: b.pos()
            },
            at
        )
    );
    let (b, _) = one_tensor("t", &[64], 0, 0, 256);
    assert!(GgufHeader::parse(&b.0).is_ok());
}

#[test]
fn zero_sized_and_scalar_tensors_are_accepted() {
    let (b, _) = one_tensor("z", &[0, 4], 0, 0, 0);
    assert_eq!(GgufHeader::parse(&b.0).unwrap().tensors[0].n_bytes(), 0);
}

fn sample_file() -> Vec<u8> {
    let mut m = Metadata::new();
    m.insert("general.architecture", Value::String("llama".into()))
        .unwrap();
    m.insert(
        "x.arr",
        Value::Array(Array::String(vec!["a".into(), "bc".into()])),
    )
    .unwrap();
    m.insert("x.f", Value::F32(1.5)).unwrap();
    let d1 = [1u8; 18 * 2];
    let d2 = [2u8; 12];
    write_to_vec(
        &m,
        &[
            (
                TensorSpec {
                    name: "q".into(),
                    dims: vec![64],
                    ty: GgmlType::Q4_0,
                },
                &d1[..],
            ),
            (
                TensorSpec {
                    name: "f".into(),
                    dims: vec![3],
                    ty: GgmlType::F32,
                },
                &d2[..],
            ),
        ],
        32,
    )
    .unwrap()
}

#[test]
fn every_truncation_is_rejected_without_panic() {
    let full = sample_file();
    assert!(GgufHeader::parse(&full).is_ok());
    // The last tensor's trailing padding is not data: prefixes that keep every tensor's bytes
    // are valid (llama.cpp's loader accepts them too); everything shorter must fail.
    let h = GgufHeader::parse(&full).unwrap();
    let needed = h.data_offset + h.tensors[1].offset + h.tensors[1].n_bytes();
    for cut in 0..full.len() {
        let r = GgufHeader::parse(&full[..cut]);
        if (cut as u64) < needed {
            assert!(r.is_err(), "prefix of {cut} bytes accepted");
        } else {
            assert!(r.is_ok(), "prefix of {cut} bytes rejected");
        }
    }
}

#[test]
fn metadata_typed_access_names_key_and_types() {
    let h = GgufHeader::parse(&sample_file()).unwrap();
    assert_eq!(h.metadata.get_as::<f32>("x.f").unwrap(), 1.5);
    assert_eq!(
        h.metadata.get_as::<&str>("general.architecture").unwrap(),
        "llama"
    );
    let e = h.metadata.get_as::<u32>("x.f").unwrap_err().to_string();
    assert_eq!(e, "metadata key 'x.f' has type FLOAT32, expected UINT32");
    let e = h.metadata.get_as::<u32>("nope").unwrap_err().to_string();
    assert_eq!(e, "missing metadata key 'nope'");
}

fn arb_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<u8>().prop_map(Value::U8),
        any::<i8>().prop_map(Value::I8),
        any::<u16>().prop_map(Value::U16),
        any::<i16>().prop_map(Value::I16),
        any::<u32>().prop_map(Value::U32),
        any::<i32>().prop_map(Value::I32),
        any::<f32>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Value::F32),
        any::<bool>().prop_map(Value::Bool),
        ".{0,20}".prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Value::F64),
        prop::collection::vec(any::<u16>(), 0..10).prop_map(|v| Value::Array(Array::U16(v))),
        prop::collection::vec(".{0,8}", 0..10).prop_map(|v| Value::Array(Array::String(v))),
        prop::collection::vec(any::<bool>(), 0..10).prop_map(|v| Value::Array(Array::Bool(v))),
    ]
}

fn arb_type() -> impl Strategy<Value = GgmlType> {
    prop::sample::select(vec![
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Bf16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4K,
        GgmlType::Q6K,
        GgmlType::I8,
        GgmlType::Nf4 { block: 64 },
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn write_then_read_round_trips(
        kvs in prop::collection::btree_map("[a-z.]{1,12}", arb_value(), 0..12),
        tensors in prop::collection::vec((arb_type(), 1u64..4, prop::collection::vec(1u64..4, 0..3)), 0..6),
        align_pow in 0u32..8,
    ) {
        let alignment = 1u64 << align_pow;
        let mut m = Metadata::new();
        for (k, v) in &kvs {
            if k == "general.alignment" { continue; }
            m.insert(k, v.clone()).unwrap();
        }
        let specs: Vec<(TensorSpec, Vec<u8>)> = tensors.iter().enumerate().map(|(i, (ty, blocks, rest))| {
            let mut dims = vec![blocks * ty.block_size()];
            dims.extend(rest);
            let n: u64 = dims.iter().product();
            let bytes = ty.bytes_for(n).unwrap() as usize;
            let data: Vec<u8> = (0..bytes).map(|j| (i * 31 + j) as u8).collect();
            (TensorSpec { name: format!("t{i}"), dims, ty: *ty }, data)
        }).collect();
        let refs: Vec<(TensorSpec, &[u8])> = specs.iter().map(|(s, d)| (s.clone(), &d[..])).collect();
        let bytes = write_to_vec(&m, &refs, alignment).unwrap();
        let h = GgufHeader::parse(&bytes).unwrap();
        prop_assert_eq!(h.alignment, alignment);
        for (k, v) in m.iter() {
            prop_assert_eq!(h.metadata.get(k), Some(v));
        }
        prop_assert_eq!(h.tensors.len(), specs.len());
        for (t, (s, d)) in h.tensors.iter().zip(&specs) {
            prop_assert_eq!(&t.name, &s.name);
            prop_assert_eq!(&t.dims, &s.dims);
            prop_assert_eq!(t.ty, s.ty);
            let start = (h.data_offset + t.offset) as usize;
            prop_assert_eq!(&bytes[start..start + d.len()], &d[..]);
            prop_assert_eq!(t.offset % alignment, 0);
        }
        prop_assert_eq!(bytes.len() as u64 % alignment, 0);
    }
}
