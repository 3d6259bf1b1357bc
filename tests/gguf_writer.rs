//! The streaming writer: data in pieces, size and count errors, hash patching, refusal of
//! anything the reader would reject, `general.alignment` handling, and the atomic file writer
//! (nothing under the final name unless finished).

use std::io::{Cursor, Seek, SeekFrom, Write};

use qforge::gguf::{
    encode_header, write_to_vec, Array, ErrorKind, GgmlType, GgufFile, GgufFileWriter, GgufHeader,
    GgufWriter, Metadata, TensorSpec, Value,
};
use sha2::{Digest, Sha256};

fn spec(name: &str, dims: &[u64], ty: GgmlType) -> TensorSpec {
    TensorSpec {
        name: name.into(),
        dims: dims.to_vec(),
        ty,
    }
}

fn meta(items: &[(&str, Value)]) -> Metadata {
    let mut m = Metadata::new();
    for (k, v) in items {
        m.insert(k, v.clone()).unwrap();
    }
    m
}

fn hex(h: &[u8]) -> String {
    h.iter().map(|b| format!("{b:02x}")).collect()
}

fn two_tensors() -> Vec<TensorSpec> {
    vec![
        spec("a", &[3], GgmlType::F32),      // 12 bytes
        spec("b", &[32, 2], GgmlType::Q8_0), // 68 bytes
    ]
}

#[test]
fn data_arrives_in_pieces_and_each_tensor_is_padded() {
    let m = meta(&[("general.architecture", Value::String("llama".into()))]);
    let mut w = GgufWriter::new(Cursor::new(Vec::new()), &m, &two_tensors(), 32).unwrap();
    assert_eq!(w.current_tensor(), Some(0));
    let a: Vec<u8> = (1..=12).collect();
    let b: Vec<u8> = (100..168).collect();
    w.write_tensor_data(&a[..5]).unwrap();
    w.write_tensor_data(&[]).unwrap();
    w.write_tensor_data(&a[5..]).unwrap();
    assert_eq!(w.current_tensor(), Some(1));
    assert_eq!(w.tensor_hashes().len(), 1);
    for piece in b.chunks(7) {
        w.write_tensor_data(piece).unwrap();
    }
    assert_eq!(w.current_tensor(), None);
    let (cur, hashes) = w.finish().unwrap();
    let bytes = cur.into_inner();
    let h = GgufHeader::parse(&bytes).unwrap();
    let d = h.data_offset as usize;
    assert_eq!(&bytes[d..d + 12], &a[..]);
    assert_eq!(&bytes[d + 12..d + 32], &[0u8; 20]);
    assert_eq!(&bytes[d + 32..d + 100], &b[..]);
    assert_eq!(
        &bytes[d + 100..],
        &[0u8; 28],
        "the last tensor is padded too"
    );
    assert_eq!(hashes[0], <[u8; 32]>::from(Sha256::digest(&a)));
    assert_eq!(hashes[1], <[u8; 32]>::from(Sha256::digest(&b)));
}

#[test]
fn wrong_amounts_of_data_are_errors() {
    let m = Metadata::new();
    let specs = two_tensors();
    let layout = encode_header(&m, &specs, 32).unwrap();
    let data_start = layout.bytes.len() as u64;

    // a piece running past the tensor's end is refused, nothing of it written
    let mut w = GgufWriter::new(Cursor::new(Vec::new()), &m, &specs, 32).unwrap();
    w.write_tensor_data(&[0; 10]).unwrap();
    let e = w.write_tensor_data(&[0; 3]).unwrap_err();
    assert_eq!(
        (e.kind, e.offset),
        (
            ErrorKind::TensorSize {
                name: "a".into(),
                expected: 12,
                got: 13
            },
            Some(data_start)
        )
    );
    w.write_tensor_data(&[0; 2]).unwrap(); // the tensor can still be completed

    // finishing before a tensor has started
    let e = w.finish().unwrap_err();
    assert_eq!(
        (e.kind, e.offset),
        (
            ErrorKind::TensorCount {
                expected: 2,
                got: 1
            },
            None
        )
    );

    // finishing in the middle of a tensor
    let mut w = GgufWriter::new(Cursor::new(Vec::new()), &m, &specs, 32).unwrap();
    w.write_tensor_data(&[0; 12]).unwrap();
    w.write_tensor_data(&[0; 60]).unwrap();
    let e = w.finish().unwrap_err();
    assert_eq!(
        (e.kind, e.offset),
        (
            ErrorKind::TensorSize {
                name: "b".into(),
                expected: 68,
                got: 60
            },
            Some(data_start + 32)
        )
    );

    // data after the last tensor
    let mut w = GgufWriter::new(Cursor::new(Vec::new()), &m, &specs, 32).unwrap();
    w.write_tensor_data(&[0; 80]).unwrap_err(); // a piece may not span two tensors
    w.write_tensor_data(&[0; 12]).unwrap();
    w.write_tensor_data(&[0; 68]).unwrap();
    let e = w.write_tensor_data(&[0]).unwrap_err();
    assert_eq!(
        e.kind,
        ErrorKind::TensorCount {
            expected: 2,
            got: 3
        }
    );
    assert!(w.finish().is_ok());
}

#[test]
fn zero_byte_tensors_complete_on_their_own() {
    let specs = vec![
        spec("z0", &[0], GgmlType::F32),
        spec("a", &[2], GgmlType::F32),
        spec("z1", &[0, 5], GgmlType::Q4_0),
        spec("z2", &[64, 0], GgmlType::Q4_0),
    ];
    let m = Metadata::new();
    let mut w = GgufWriter::new(Cursor::new(Vec::new()), &m, &specs, 32).unwrap();
    assert_eq!(w.current_tensor(), Some(1));
    w.write_tensor_data(&[1; 8]).unwrap();
    assert_eq!(w.current_tensor(), None);
    let (cur, hashes) = w.finish().unwrap();
    let empty: [u8; 32] = Sha256::digest([]).into();
    assert_eq!(hashes[0], empty);
    assert_eq!(hashes[3], empty);
    let bytes = cur.into_inner();
    let h = GgufHeader::parse(&bytes).unwrap();
    let offsets: Vec<u64> = h.tensors.iter().map(|t| t.offset).collect();
    assert_eq!(offsets, [0, 0, 32, 32]);
    // no tensors at all: just the padded header
    let bytes = write_to_vec(&m, &[], 32).unwrap();
    assert_eq!(bytes.len(), 32);
    assert_eq!(
        &bytes[..24],
        b"GGUF\x03\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
    );
}

#[test]
fn placeholder_values_are_patched_in_place() {
    let key = "qforge.tensor_sha256";
    let m = meta(&[
        ("general.architecture", Value::String("llama".into())),
        (key, Value::Array(Array::String(vec!["0".repeat(64); 2]))),
        ("after", Value::U32(7)),
    ]);
    let specs = two_tensors();
    // the sink already holds other bytes: the header starts where the sink stands
    let mut sink = Cursor::new(Vec::new());
    sink.write_all(b"prefix").unwrap();
    let mut w = GgufWriter::new(sink, &m, &specs, 64).unwrap();
    w.write_tensor_data(&[5; 12]).unwrap();
    w.write_tensor_data(&[6; 68]).unwrap();
    let hex_hashes: Vec<String> = w.tensor_hashes().iter().map(|h| hex(h)).collect();

    let too_short = Value::Array(Array::String(vec!["ab".into(); 2]));
    let e = w.patch_value(key, &too_short).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::PatchLength { .. }), "{e}");
    let other_type = Value::U64(0);
    assert!(matches!(
        w.patch_value("after", &other_type).unwrap_err().kind,
        ErrorKind::PatchLength {
            expected: 8,
            got: 12,
            ..
        }
    ));
    assert_eq!(
        w.patch_value("nope", &Value::U32(1)).unwrap_err().kind,
        ErrorKind::MissingKey { key: "nope".into() }
    );
    w.patch_value(key, &Value::Array(Array::String(hex_hashes.clone())))
        .unwrap();
    w.patch_value("after", &Value::U32(8)).unwrap();
    let (mut cur, hashes) = w.finish().unwrap();
    // the stream position is back at the end
    assert_eq!(
        cur.stream_position().unwrap(),
        cur.seek(SeekFrom::End(0)).unwrap()
    );
    let bytes = cur.into_inner();
    assert_eq!(&bytes[..6], b"prefix");
    let h = GgufHeader::parse(&bytes[6..]).unwrap();
    assert_eq!(
        h.metadata.get_as::<&[String]>(key).unwrap(),
        &hex_hashes[..]
    );
    assert_eq!(h.metadata.get_as::<u32>("after").unwrap(), 8);
    assert_eq!(hex_hashes[0], hex(&hashes[0]));
    assert_eq!(
        hex_hashes[1],
        hex(&Sha256::digest([6u8; 68])),
        "hash of exactly the data bytes"
    );
}

#[test]
fn the_writer_refuses_what_the_reader_rejects() {
    let m = Metadata::new();
    let refuse =
        |specs: &[TensorSpec], alignment: u64| encode_header(&m, specs, alignment).unwrap_err();
    let a = spec("a", &[4], GgmlType::F32);
    // the second tensor's info starts after the first: 24 + 8 + 1 + 4 + 8 + 4 + 8
    let second = 57;
    let cases: Vec<(TensorSpec, ErrorKind)> = vec![
        (spec("", &[4], GgmlType::F32), ErrorKind::EmptyTensorName),
        (
            spec(&"n".repeat(64), &[4], GgmlType::F32),
            ErrorKind::TensorNameTooLong {
                name: "n".repeat(64),
                length: 64,
            },
        ),
        (
            spec("x\0y", &[4], GgmlType::F32),
            ErrorKind::TensorNameNul {
                name: "x\0y".into(),
            },
        ),
        (
            spec("a", &[4], GgmlType::F32),
            ErrorKind::DuplicateTensorName { name: "a".into() },
        ),
        (
            spec("t", &[1, 1, 1, 1, 1], GgmlType::F32),
            ErrorKind::BadDimCount {
                name: "t".into(),
                n_dims: 5,
            },
        ),
        (
            spec("t", &[4, 1 << 63], GgmlType::F32),
            ErrorKind::NegativeDim {
                name: "t".into(),
                index: 1,
                dim: i64::MIN,
            },
        ),
        (
            spec("t", &[1 << 40, 1 << 40], GgmlType::F32),
            ErrorKind::ElementCountOverflow { name: "t".into() },
        ),
        (
            spec("t", &[1 << 62], GgmlType::F32),
            ErrorKind::ByteSizeOverflow { name: "t".into() },
        ),
        (
            spec("t", &[100], GgmlType::Q4K),
            ErrorKind::BlockMismatch {
                name: "t".into(),
                ne0: 100,
                block: 256,
                ty: "Q4_K".into(),
            },
        ),
    ];
    for (bad, kind) in cases {
        let e = refuse(&[a.clone(), bad], 32);
        assert_eq!((e.kind, e.offset), (kind, Some(second)));
    }
    for alignment in [0u64, 3, 48, 1 << 21] {
        assert_eq!(
            refuse(&[], alignment).kind,
            ErrorKind::BadAlignment { value: alignment }
        );
    }
    let m = meta(&[("general.alignment", Value::U32(64))]);
    assert_eq!(
        encode_header(&m, &[], 32).unwrap_err().kind,
        ErrorKind::AlignmentMismatch {
            declared: 64,
            requested: 32
        }
    );
    let m = meta(&[("general.alignment", Value::U64(32))]);
    assert_eq!(
        encode_header(&m, &[], 32).unwrap_err().kind,
        ErrorKind::AlignmentType {
            actual: "UINT64".into()
        }
    );
}

#[test]
fn general_alignment_is_written_only_when_not_32() {
    let m = meta(&[("x", Value::U8(1))]);
    let t = [(spec("t", &[1], GgmlType::F32), &[0u8; 4][..])];
    for (alignment, want) in [
        (32u64, None),
        (1, Some(1u32)),
        (64, Some(64)),
        (1 << 20, Some(1 << 20)),
    ] {
        let bytes = write_to_vec(&m, &t, alignment).unwrap();
        let h = GgufHeader::parse(&bytes).unwrap();
        assert_eq!(h.alignment, alignment);
        assert_eq!(
            h.metadata.get("general.alignment"),
            want.map(Value::U32).as_ref()
        );
        // appended after the caller's keys
        assert_eq!(h.metadata.iter().next().unwrap().0, "x");
        assert_eq!(bytes.len() as u64 % alignment, 0);
    }
    // declared by the caller (even as 32): kept where it is, once
    let m = meta(&[("general.alignment", Value::U32(32)), ("x", Value::U8(1))]);
    let h = GgufHeader::parse(&write_to_vec(&m, &t, 32).unwrap()).unwrap();
    let keys: Vec<&str> = h.metadata.iter().map(|(k, _)| k).collect();
    assert_eq!(keys, ["general.alignment", "x"]);
}

fn dir_entries(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn file_writer_renames_only_a_finished_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.gguf");
    let m = meta(&[("general.architecture", Value::String("llama".into()))]);
    let specs = two_tensors();

    // dropped midway: nothing left behind
    let mut w = GgufFileWriter::create(&path, &m, &specs, 32).unwrap();
    w.write_tensor_data(&[1; 12]).unwrap();
    assert_eq!(
        dir_entries(dir.path()).len(),
        1,
        "a temporary file while writing"
    );
    assert!(!path.exists());
    drop(w);
    assert_eq!(dir_entries(dir.path()), Vec::<String>::new());

    // an error at finish: nothing under the final name either, and an existing file survives
    std::fs::write(&path, b"old").unwrap();
    let mut w = GgufFileWriter::create(&path, &m, &specs, 32).unwrap();
    w.write_tensor_data(&[1; 12]).unwrap();
    assert!(w.finish().is_err());
    assert_eq!(std::fs::read(&path).unwrap(), b"old");
    assert_eq!(dir_entries(dir.path()), ["out.gguf"]);

    // finished: the same bytes as the in-memory writer, readable, an ordinary 0644 file
    let mut w = GgufFileWriter::create(&path, &m, &specs, 32).unwrap();
    w.write_tensor_data(&[1; 12]).unwrap();
    w.write_tensor_data(&[2; 68]).unwrap();
    let hashes = w.finish().unwrap();
    assert_eq!(dir_entries(dir.path()), ["out.gguf"]);
    let want = write_to_vec(
        &m,
        &[(specs[0].clone(), &[1; 12]), (specs[1].clone(), &[2; 68])],
        32,
    )
    .unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), want);
    let f = GgufFile::open(&path).unwrap();
    assert_eq!(f.tensor("b").unwrap().1, &[2u8; 68][..]);
    assert_eq!(hashes[1], <[u8; 32]>::from(Sha256::digest([2u8; 68])));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }
}

#[test]
fn file_writer_reports_bad_targets_up_front() {
    let dir = tempfile::tempdir().unwrap();
    let m = Metadata::new();
    let e = GgufFileWriter::create(dir.path(), &m, &[], 32).unwrap_err();
    assert!(e.to_string().ends_with("is a directory"), "{e}");
    let e =
        GgufFileWriter::create(&dir.path().join("no/such/dir/x.gguf"), &m, &[], 32).unwrap_err();
    assert!(e.to_string().starts_with("cannot create a file in"), "{e}");
    // a header error leaves nothing behind
    let e = GgufFileWriter::create(
        &dir.path().join("x.gguf"),
        &m,
        &[spec("", &[1], GgmlType::F32)],
        32,
    )
    .unwrap_err();
    assert_eq!(e.kind, ErrorKind::EmptyTensorName);
    assert_eq!(dir_entries(dir.path()), Vec::<String>::new());
}

/// The worked example of spec/FORMAT.md §10, byte for byte (the bytes there were produced by
/// a separate Python encoder following the spec, not by this writer).
#[test]
fn spec_worked_example() {
    let want = "474755460300000001000000000000000100000000000000140000000000000067656e6572616c2e\
                6172636869746563747572650800000005000000000000006c6c616d610100000000000000770100\
                00000200000000000000000000000000000000000000000000000000000000000000000000000000\
                00000000000000000000803f000000c0000000000000000000000000000000000000000000000000";
    let m = meta(&[("general.architecture", Value::String("llama".into()))]);
    let data: Vec<u8> = [1.0f32, -2.0]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let bytes = write_to_vec(&m, &[(spec("w", &[2], GgmlType::F32), &data[..])], 32).unwrap();
    assert_eq!(hex(&bytes), want);
    let h = GgufHeader::parse(&bytes).unwrap();
    assert_eq!((h.data_offset, h.file_size), (128, 160));
}
