//! One test per reader check (spec/FORMAT.md §7), each asserting the specific error and the
//! byte offset it reports; every prefix of a valid file is rejected without a panic; and a
//! property test: random metadata and tensors → write → read → equal.

use proptest::prelude::*;
use qforge::gguf::{
    write_to_vec, Array, ErrorKind, GgmlType, GgufHeader, GgufWriter, Metadata, TensorSpec, Value,
};
use sha2::{Digest, Sha256};

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
    (e.kind, e.offset.expect("reader errors carry an offset"))
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
    assert_eq!(
        msg,
        "byte 4: GGUF version 1 is no longer supported (only versions 2 and 3 are)"
    );
    // v2 has v3's layout and is read
    assert_eq!(GgufHeader::parse(&B::header(2, 0, 0).0).unwrap().version, 2);
}

#[test]
fn byte_swapped_file() {
    for v in [2u32, 3] {
        let mut b = B(b"GGUF".to_vec());
        b.0.extend_from_slice(&v.to_be_bytes());
        b.0.extend_from_slice(&0u64.to_be_bytes());
        b.0.extend_from_slice(&0u64.to_be_bytes());
        assert_eq!(err(&b), (ErrorKind::ByteSwapped(v << 24), 4));
        let msg = GgufHeader::parse(&b.0).unwrap_err().to_string();
        assert!(msg.contains("big-endian"), "{msg}");
    }
}

#[test]
fn huge_counts_are_bounded_by_the_file() {
    let (kind, off) = err(&B::header(3, u64::MAX, 0));
    assert_eq!(
        kind,
        ErrorKind::CountTooLarge {
            what: "tensor count",
            count: u64::MAX,
            max: 0
        }
    );
    assert_eq!(off, 8);
    let (kind, off) = err(&B::header(3, 0, u64::MAX));
    assert_eq!(
        kind,
        ErrorKind::CountTooLarge {
            what: "metadata count",
            count: u64::MAX,
            max: 0
        }
    );
    assert_eq!(off, 16);
    // 100 bytes after the header hold at most 7 KV pairs of 14 bytes; with 7 pairs declared
    // no bytes are left for any tensor info
    let mut b = B::header(3, 1, 7);
    b.zeros(100);
    assert_eq!(
        err(&b),
        (
            ErrorKind::CountTooLarge {
                what: "tensor count",
                count: 1,
                max: 0
            },
            8
        )
    );
    let mut b = B::header(3, 0, 8);
    b.zeros(100);
    assert_eq!(
        err(&b),
        (
            ErrorKind::CountTooLarge {
                what: "metadata count",
                count: 8,
                max: 7
            },
            16
        )
    );
}

#[test]
fn string_longer_than_the_file_or_the_cap() {
    let mut b = B::header(3, 0, 1);
    b.u64(1000);
    b.0.extend_from_slice(b"key, and not nearly 1000 bytes");
    assert_eq!(
        err(&b),
        (
            ErrorKind::Truncated {
                what: "metadata key".into(),
                needed: 1000,
                remaining: 30
            },
            32
        )
    );
    let mut b = B::header(3, 0, 1);
    b.u64((1 << 30) + 1).zeros(16);
    assert_eq!(
        err(&b),
        (
            ErrorKind::StringTooLong {
                what: "metadata key".into(),
                length: (1 << 30) + 1,
                max: 1 << 30
            },
            24
        )
    );
    // a string value: reported at its length field
    let mut b = B::header(3, 0, 1);
    b.str("k").u32(8);
    let at = b.pos();
    b.u64(u64::MAX).zeros(8);
    assert_eq!(
        err(&b),
        (
            ErrorKind::StringTooLong {
                what: "value of 'k'".into(),
                length: u64::MAX,
                max: 1 << 30
            },
            at
        )
    );
}

#[test]
fn array_counts_are_capped_and_bounded() {
    let mut b = B::header(3, 0, 1);
    b.str("k").u32(9).u32(4).u64((1 << 30) + 1).zeros(16);
    let at = b.pos() - 24;
    assert_eq!(
        err(&b),
        (
            ErrorKind::ArrayTooLong {
                key: "k".into(),
                length: (1 << 30) + 1,
                max: 1 << 30
            },
            at
        )
    );
    // strings need at least their 8-byte length each
    let mut b = B::header(3, 0, 1);
    b.str("k").u32(9).u32(8).u64(3).zeros(23);
    let at = b.pos() - 23 - 8;
    assert_eq!(
        err(&b),
        (
            ErrorKind::Truncated {
                what: "3 elements of 'k'".into(),
                needed: 24,
                remaining: 23
            },
            at
        )
    );
    // fixed-size elements: count * size
    let mut b = B::header(3, 0, 1);
    b.str("k").u32(9).u32(12).u64(4).zeros(31);
    let at = b.pos() - 31 - 8;
    assert_eq!(
        err(&b),
        (
            ErrorKind::Truncated {
                what: "4 elements of 'k'".into(),
                needed: 32,
                remaining: 31
            },
            at
        )
    );
}

#[test]
fn nested_arrays_and_bad_value_types() {
    let mut b = B::header(3, 0, 1);
    b.str("k").u32(9);
    let at = b.pos();
    b.u32(9).u64(1).zeros(8);
    assert_eq!(err(&b), (ErrorKind::NestedArray { key: "k".into() }, at));
    for id in [13u32, 99, u32::MAX] {
        let mut b = B::header(3, 0, 1);
        b.str("k");
        let at = b.pos();
        b.u32(id).u32(0);
        assert_eq!(
            err(&b),
            (
                ErrorKind::BadValueType {
                    key: "k".into(),
                    id
                },
                at
            )
        );
        // as an array element type too
        let mut b = B::header(3, 0, 1);
        b.str("k").u32(9);
        let at = b.pos();
        b.u32(id).u64(0);
        assert_eq!(
            err(&b),
            (
                ErrorKind::BadValueType {
                    key: "k".into(),
                    id
                },
                at
            )
        );
    }
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
fn strings_must_be_utf8() {
    // key
    let mut b = B::header(3, 0, 1);
    b.u64(3);
    b.0.extend_from_slice(b"a\xffb");
    b.u32(0).zeros(1);
    assert_eq!(
        err(&b),
        (
            ErrorKind::InvalidUtf8 {
                what: "metadata key".into(),
                valid_up_to: 1
            },
            24
        )
    );
    // value
    let mut b = B::header(3, 0, 1);
    b.str("k").u32(8);
    let at = b.pos();
    b.u64(2);
    b.0.extend_from_slice(b"\xc3(");
    assert_eq!(
        err(&b),
        (
            ErrorKind::InvalidUtf8 {
                what: "value of 'k'".into(),
                valid_up_to: 0
            },
            at
        )
    );
    // array element
    let mut b = B::header(3, 0, 1);
    b.str("tok").u32(9).u32(8).u64(2).str("ok");
    let at = b.pos();
    b.u64(1);
    b.0.push(0x80);
    assert_eq!(
        err(&b),
        (
            ErrorKind::InvalidUtf8 {
                what: "element 1 of 'tok'".into(),
                valid_up_to: 0
            },
            at
        )
    );
    // tensor name
    let mut b = B::header(3, 1, 0);
    b.u64(2);
    b.0.extend_from_slice(b"\xe2\x82");
    b.u32(1).u64(1).u32(0).u64(0).pad(32).zeros(4);
    assert_eq!(
        err(&b),
        (
            ErrorKind::InvalidUtf8 {
                what: "tensor name".into(),
                valid_up_to: 0
            },
            24
        )
    );
}

#[test]
fn alignment_must_be_a_u32_power_of_two_up_to_1_mib() {
    for v in [0u32, 3, 13, 48, (1 << 20) + 1, 1 << 21, 1 << 31] {
        let mut b = B::header(3, 0, 1);
        b.kv_u32("general.alignment", v);
        assert_eq!(
            err(&b),
            (ErrorKind::BadAlignment { value: v as u64 }, 24),
            "{v}"
        );
    }
    // the key is found after another one: its own offset is reported
    let mut b = B::header(3, 0, 2);
    b.kv_u32("x", 1);
    let at = b.pos();
    b.str("general.alignment").u32(5).u32(32); // INT32
    assert_eq!(
        err(&b),
        (
            ErrorKind::AlignmentType {
                actual: "INT32".into()
            },
            at
        )
    );
    let mut b = B::header(3, 0, 1);
    b.str("general.alignment").u32(10).u64(32); // UINT64
    assert_eq!(
        err(&b),
        (
            ErrorKind::AlignmentType {
                actual: "UINT64".into()
            },
            24
        )
    );
    // 1 (test-gguf's success case) and 1 MiB are legal
    for v in [1u32, 1 << 20] {
        let mut b = B::header(3, 0, 1);
        b.kv_u32("general.alignment", v);
        assert_eq!(GgufHeader::parse(&b.0).unwrap().alignment, v as u64);
    }
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
    // 63 bytes, 21 characters
    let ok = "é".repeat(21) + "x".repeat(21).as_str();
    assert_eq!(ok.len(), 63);
    assert!(GgufHeader::parse(&one_tensor(&ok, &[4], 0, 0, 16).0 .0).is_ok());
    let (b, at) = one_tensor("", &[4], 0, 0, 16);
    assert_eq!(err(&b), (ErrorKind::EmptyTensorName, at));
    let (b, at) = one_tensor("a\0b", &[4], 0, 0, 16);
    assert_eq!(
        err(&b),
        (
            ErrorKind::TensorNameNul {
                name: "a\0b".into()
            },
            at
        )
    );
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
                index: 1,
                dim: -1
            },
            at + 8 + 1 + 4 + 8
        )
    );
    let (b, at) = one_tensor("t", &[1 << 63], 0, 0, 16);
    assert_eq!(
        err(&b),
        (
            ErrorKind::NegativeDim {
                name: "t".into(),
                index: 0,
                dim: i64::MIN
            },
            at + 8 + 1 + 4
        )
    );
    // test-gguf's case: two dims of 4 * INT32_MAX
    let big = 4 * i32::MAX as u64;
    let (b, at) = one_tensor("t", &[big, big], 0, 0, 16);
    // reported at the dimension count, where the shape starts
    assert_eq!(
        err(&b),
        (ErrorKind::ElementCountOverflow { name: "t".into() }, at + 9)
    );
    // the product fits in u64 but not in i64
    let (b, at) = one_tensor("t", &[1 << 32, 1 << 31], 24, 0, 16);
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
    // I64 (8 bytes) of 2^60 elements = 2^63 bytes, more than an i64 holds
    let (b, at) = one_tensor("t", &[1 << 60], 27, 0, 16);
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
    for id in [
        4u32,
        5,
        31,
        32,
        33,
        36,
        37,
        38,
        40,
        41,
        42,
        99,
        0x4E04,
        1 << 20,
    ] {
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
    assert_eq!(
        err(&b),
        (
            ErrorKind::BlockMismatch {
                name: "t".into(),
                ne0: 33,
                block: 32,
                ty: "Q8_0".into()
            },
            at + 8 + 1 + 4 + 16
        )
    );
    // the whole element count is a multiple of 256 but the row is not
    let (b, _) = one_tensor("t", &[128, 2], 12, 0, 256);
    assert!(matches!(
        err(&b).0,
        ErrorKind::BlockMismatch {
            ne0: 128,
            block: 256,
            ..
        }
    ));
    // a scalar (no dimensions) has ne[0] = 1
    let (b, _) = one_tensor("t", &[], 8, 0, 64);
    assert!(matches!(
        err(&b).0,
        ErrorKind::BlockMismatch {
            ne0: 1,
            block: 32,
            ..
        }
    ));
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
    // the first tensor must start at 0
    let (b, at) = one_tensor("a", &[8], 0, 32, 64);
    assert_eq!(
        err(&b),
        (
            ErrorKind::BadOffset {
                name: "a".into(),
                found: 32,
                expected: 0
            },
            at + 8 + 1 + 4 + 8 + 4
        )
    );
    // with alignment 64 the second tensor is at 64, not 32
    let mut b = B::header(3, 2, 1);
    b.kv_u32("general.alignment", 64);
    b.tensor("a", &[3], 0, 0);
    b.tensor("b", &[3], 0, 32).pad(64).zeros(128);
    assert!(matches!(
        err(&b).0,
        ErrorKind::BadOffset {
            found: 32,
            expected: 64,
            ..
        }
    ));
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
    let h = GgufHeader::parse(&b.0).unwrap();
    assert_eq!(h.data_offset, 64);
    // a zero-byte tensor still needs the data section to start inside the file
    let mut b = B::header(3, 1, 0);
    b.tensor("z", &[0], 0, 0);
    let end = b.pos();
    assert_eq!(
        err(&b),
        (
            ErrorKind::DataOutOfBounds {
                name: "z".into(),
                end: 64,
                file_size: end
            },
            24
        )
    );
}

#[test]
fn zero_sized_and_scalar_tensors_are_accepted() {
    let (b, _) = one_tensor("z", &[0, 4], 0, 0, 0);
    let h = GgufHeader::parse(&b.0).unwrap();
    assert_eq!((h.tensors[0].n_elements(), h.tensors[0].n_bytes()), (0, 0));
    // n_dims 0: one element (ggml fills missing dimensions with 1)
    let (b, _) = one_tensor("s", &[], 0, 0, 4);
    let h = GgufHeader::parse(&b.0).unwrap();
    assert_eq!(h.tensors[0].dims, Vec::<u64>::new());
    assert_eq!((h.tensors[0].n_elements(), h.tensors[0].n_bytes()), (1, 4));
}

#[test]
fn messages_name_the_item_and_the_offset() {
    let mut b = B::header(3, 2, 0);
    b.tensor("blk.0.attn_q.weight", &[16], 0, 0);
    b.tensor("blk.0.attn_k.weight", &[16], 0, 96)
        .pad(32)
        .zeros(128);
    let e = GgufHeader::parse(&b.0)
        .unwrap_err()
        .with_path("fixtures/x.gguf");
    assert_eq!(
        e.to_string(),
        "fixtures/x.gguf: byte 118: tensor 'blk.0.attn_k.weight': offset 96 but expected 64 \
         (the running padded sum)"
    );
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

fn fixture_files() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gguf");
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "gguf"))
        .collect();
    names.sort();
    names.iter().map(|p| std::fs::read(p).unwrap()).collect()
}

#[test]
fn every_truncation_is_rejected_without_panic() {
    let mut files = fixture_files();
    assert!(files.len() >= 4);
    files.push(sample_file());
    for full in files {
        let h = GgufHeader::parse(&full).unwrap();
        // The last tensor's trailing padding is not data: prefixes that keep every tensor's
        // bytes are valid (llama.cpp's loader accepts them too); everything shorter must fail,
        // as a truncation, at or before the cut.
        let needed = h
            .tensors
            .last()
            .map_or(0, |t| h.data_offset + t.offset + t.n_bytes())
            .max(
                // without tensors, the header itself is all there is
                if h.tensors.is_empty() {
                    header_end(&full)
                } else {
                    0
                },
            );
        for cut in 0..full.len() {
            match GgufHeader::parse(&full[..cut]) {
                Ok(_) => assert!(cut as u64 >= needed, "prefix of {cut} bytes accepted"),
                Err(e) => {
                    assert!((cut as u64) < needed, "prefix of {cut} bytes rejected: {e}");
                    assert!(
                        matches!(
                            e.kind,
                            ErrorKind::Truncated { .. }
                                | ErrorKind::CountTooLarge { .. }
                                | ErrorKind::DataOutOfBounds { .. }
                        ),
                        "prefix of {cut} bytes: {e}"
                    );
                    assert!(e.offset.unwrap() <= cut as u64, "{cut}: {e}");
                }
            }
        }
    }
}

/// Length of the header of a file without tensors: the shortest prefix that parses.
fn header_end(full: &[u8]) -> u64 {
    (0..=full.len())
        .find(|&n| GgufHeader::parse(&full[..n]).is_ok())
        .unwrap() as u64
}

#[test]
fn metadata_typed_access_names_key_and_types() {
    let h = GgufHeader::parse(&sample_file()).unwrap();
    let m = &h.metadata;
    assert_eq!(m.get_as::<f32>("x.f").unwrap(), 1.5);
    assert_eq!(m.get_as::<&str>("general.architecture").unwrap(), "llama");
    assert_eq!(
        m.get_as::<String>("general.architecture").unwrap(),
        "llama".to_string()
    );
    assert_eq!(
        m.get_as::<&[String]>("x.arr").unwrap(),
        &["a".to_string(), "bc".to_string()][..]
    );
    let e = m.get_as::<u32>("x.f").unwrap_err();
    assert_eq!(e.offset, None);
    assert_eq!(
        e.to_string(),
        "metadata key 'x.f' has type FLOAT32, expected UINT32"
    );
    let e = m.get_as::<&[f32]>("x.arr").unwrap_err().to_string();
    assert_eq!(
        e,
        "metadata key 'x.arr' has type ARRAY[STRING], expected ARRAY[FLOAT32]"
    );
    let e = m.get_as::<f64>("x.f").unwrap_err().to_string();
    assert_eq!(e, "metadata key 'x.f' has type FLOAT32, expected FLOAT64");
    let e = m.get_as::<u32>("nope").unwrap_err().to_string();
    assert_eq!(e, "missing metadata key 'nope'");
    // keys keep file order
    let keys: Vec<&str> = m.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["general.architecture", "x.arr", "x.f"]);
}

#[test]
fn metadata_refuses_empty_and_duplicate_keys() {
    let mut m = Metadata::new();
    m.insert("a", Value::U8(1)).unwrap();
    assert_eq!(
        m.insert("a", Value::U8(2)).unwrap_err().kind,
        ErrorKind::DuplicateKey { key: "a".into() }
    );
    assert_eq!(
        m.insert("", Value::U8(2)).unwrap_err().kind,
        ErrorKind::EmptyKey
    );
    assert_eq!(m.get("a"), Some(&Value::U8(1)));
    assert_eq!(m.len(), 1);
}

fn arb_string() -> impl Strategy<Value = String> {
    // any Unicode, control characters included
    prop::collection::vec(any::<char>(), 0..12).prop_map(|v| v.into_iter().collect())
}

fn arb_array() -> impl Strategy<Value = Array> {
    use prop::collection::vec;
    let n = 0..10usize;
    prop_oneof![
        vec(any::<u8>(), n.clone()).prop_map(Array::U8),
        vec(any::<i8>(), n.clone()).prop_map(Array::I8),
        vec(any::<u16>(), n.clone()).prop_map(Array::U16),
        vec(any::<i16>(), n.clone()).prop_map(Array::I16),
        vec(any::<u32>(), n.clone()).prop_map(Array::U32),
        vec(any::<i32>(), n.clone()).prop_map(Array::I32),
        vec(
            any::<f32>().prop_filter("NaN != NaN", |f| !f.is_nan()),
            n.clone()
        )
        .prop_map(Array::F32),
        vec(any::<bool>(), n.clone()).prop_map(Array::Bool),
        vec(arb_string(), n.clone()).prop_map(Array::String),
        vec(any::<u64>(), n.clone()).prop_map(Array::U64),
        vec(any::<i64>(), n.clone()).prop_map(Array::I64),
        vec(any::<f64>().prop_filter("NaN != NaN", |f| !f.is_nan()), n).prop_map(Array::F64),
    ]
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
        arb_string().prop_map(Value::String),
        any::<u64>().prop_map(Value::U64),
        any::<i64>().prop_map(Value::I64),
        any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Value::F64),
        arb_array().prop_map(Value::Array),
    ]
}

fn arb_type() -> impl Strategy<Value = GgmlType> {
    let mut types: Vec<GgmlType> = qforge::gguf::GGML_TYPES.to_vec();
    types.extend([
        GgmlType::Nf4 { block: 64 },
        GgmlType::Nf4Dq { block: 64 },
        GgmlType::Nf4 { block: 32 },
    ]);
    prop::sample::select(types)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]
    #[test]
    fn write_then_read_round_trips(
        kvs in prop::collection::vec(("[a-z.]{1,12}", arb_value()), 0..12),
        tensors in prop::collection::vec(
            (arb_type(), 0u64..4, prop::collection::vec(0u64..4, 0..4)), 0..6),
        align_pow in 0u32..8,
        piece in 1usize..40,
    ) {
        let alignment = 1u64 << align_pow;
        let mut m = Metadata::new();
        for (k, v) in &kvs {
            if k == "general.alignment" || m.get(k).is_some() { continue; }
            m.insert(k, v.clone()).unwrap();
        }
        let specs: Vec<(TensorSpec, Vec<u8>)> = tensors.iter().enumerate().map(|(i, (ty, blocks, rest))| {
            let mut dims = vec![blocks * ty.block_size()];
            dims.extend(rest.iter().take(3));
            let n: u64 = dims.iter().product();
            let bytes = ty.bytes_for(n).unwrap() as usize;
            let data: Vec<u8> = (0..bytes).map(|j| (i * 31 + j * 7) as u8).collect();
            (TensorSpec { name: format!("t{i}"), dims, ty: *ty }, data)
        }).collect();
        let just_specs: Vec<TensorSpec> = specs.iter().map(|(s, _)| s.clone()).collect();
        let mut w = GgufWriter::new(std::io::Cursor::new(Vec::new()), &m, &just_specs, alignment).unwrap();
        for (_, d) in &specs {
            for chunk in d.chunks(piece) {
                w.write_tensor_data(chunk).unwrap();
            }
        }
        let (cursor, hashes) = w.finish().unwrap();
        let bytes = cursor.into_inner();
        prop_assert_eq!(&bytes, &write_to_vec(
            &m,
            &specs.iter().map(|(s, d)| (s.clone(), &d[..])).collect::<Vec<_>>(),
            alignment,
        ).unwrap());

        let h = GgufHeader::parse(&bytes).unwrap();
        prop_assert_eq!(h.version, 3);
        prop_assert_eq!(h.alignment, alignment);
        let got: Vec<(&str, &Value)> = h.metadata.iter().collect();
        let mut want: Vec<(&str, &Value)> = m.iter().collect();
        let align_value = Value::U32(alignment as u32);
        if alignment != 32 {
            want.push(("general.alignment", &align_value));
        }
        prop_assert_eq!(got, want);
        prop_assert_eq!(h.tensors.len(), specs.len());
        prop_assert_eq!(hashes.len(), specs.len());
        for ((t, (s, d)), hash) in h.tensors.iter().zip(&specs).zip(&hashes) {
            prop_assert_eq!(&t.name, &s.name);
            prop_assert_eq!(&t.dims, &s.dims);
            prop_assert_eq!(t.ty, s.ty);
            prop_assert_eq!(t.n_bytes(), d.len() as u64);
            let start = (h.data_offset + t.offset) as usize;
            prop_assert_eq!(&bytes[start..start + d.len()], &d[..]);
            prop_assert_eq!(t.offset % alignment, 0);
            let want_hash: [u8; 32] = Sha256::digest(d).into();
            prop_assert_eq!(hash, &want_hash);
        }
        // header padding and every tensor's padding are zeros
        let mut data_bytes = vec![false; bytes.len()];
        for t in &h.tensors {
            let start = (h.data_offset + t.offset) as usize;
            data_bytes[start..start + t.n_bytes() as usize].fill(true);
        }
        let header_end = h.data_offset as usize;
        prop_assert!(bytes[info_end(&h) as usize..header_end].iter().all(|&b| b == 0));
        prop_assert!(bytes[header_end..].iter().zip(&data_bytes[header_end..]).all(|(&b, &d)| d || b == 0));
        prop_assert_eq!(bytes.len() as u64 % alignment, 0);
    }
}

/// End of the tensor infos, recomputed from the parsed header (as the spec defines sizes).
fn info_end(h: &GgufHeader) -> u64 {
    let mut n = 24u64;
    for (k, v) in h.metadata.iter() {
        let mut enc = Vec::new();
        qforge::gguf::encode_value(&mut enc, v);
        n += 8 + k.len() as u64 + enc.len() as u64;
    }
    for t in &h.tensors {
        n += 8 + t.name.len() as u64 + 4 + 8 * t.dims.len() as u64 + 4 + 8;
    }
    n
}

/// Whatever the reader accepts, the writer reproduces (the property of the `gguf_roundtrip`
/// fuzz target, here on random mutations of the fixtures).
fn assert_round_trips(data: &[u8]) -> bool {
    let Ok(h) = GgufHeader::parse(data) else {
        return false;
    };
    let tensors: Vec<(TensorSpec, &[u8])> = h
        .tensors
        .iter()
        .map(|t| {
            let start = (h.data_offset + t.offset) as usize;
            let spec = TensorSpec {
                name: t.name.clone(),
                dims: t.dims.clone(),
                ty: t.ty,
            };
            (spec, &data[start..start + t.n_bytes() as usize])
        })
        .collect();
    let out = write_to_vec(&h.metadata, &tensors, h.alignment).unwrap();
    let h2 = GgufHeader::parse(&out).unwrap();
    assert_eq!(h2.tensors, h.tensors);
    assert_eq!(h2.data_offset, h.data_offset);
    let enc = |h: &GgufHeader| -> Vec<(String, Vec<u8>)> {
        h.metadata
            .iter()
            .map(|(k, v)| {
                let mut b = Vec::new();
                qforge::gguf::encode_value(&mut b, v);
                (k.to_string(), b)
            })
            .collect()
    };
    assert_eq!(enc(&h2), enc(&h));
    for (t, (_, d)) in h2.tensors.iter().zip(&tensors) {
        let start = (h2.data_offset + t.offset) as usize;
        assert_eq!(&out[start..start + d.len()], *d);
    }
    true
}

#[test]
fn fixtures_round_trip_through_the_writer_byte_for_byte() {
    // canonical files (gguf-py's and qforge's) come back identical
    for f in fixture_files() {
        assert!(assert_round_trips(&f));
        let h = GgufHeader::parse(&f).unwrap();
        let tensors: Vec<(TensorSpec, &[u8])> = h
            .tensors
            .iter()
            .map(|t| {
                let s = (h.data_offset + t.offset) as usize;
                let spec = TensorSpec {
                    name: t.name.clone(),
                    dims: t.dims.clone(),
                    ty: t.ty,
                };
                (spec, &f[s..s + t.n_bytes() as usize])
            })
            .collect();
        assert!(write_to_vec(&h.metadata, &tensors, h.alignment).unwrap() == f);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]
    #[test]
    fn accepted_mutations_round_trip(
        seed in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let files = fixture_files();
        let mut data = files[seed.index(files.len())].clone();
        for (at, byte) in edits {
            let i = at.index(data.len());
            data[i] = byte;
        }
        assert_round_trips(&data);
    }
}
