//! Whatever the reader accepts, the writer reproduces: re-encoding the parsed metadata,
//! tensor infos and data gives a file that parses to the same header (version 3) and the same
//! tensor bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforge::gguf::{encode_value, write_to_vec, GgufHeader, TensorSpec};

fuzz_target!(|data: &[u8]| {
    let Ok(h) = GgufHeader::parse(data) else {
        return;
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
    let out = write_to_vec(&h.metadata, &tensors, h.alignment).expect("accepted input re-encodes");
    let h2 = GgufHeader::parse(&out).expect("the writer's output parses");
    assert_eq!(h2.version, 3);
    assert_eq!(h2.alignment, h.alignment);
    assert_eq!(h2.tensors, h.tensors);
    assert_eq!(h2.data_offset, h.data_offset);
    // values compared by encoding: NaN != NaN
    let enc = |h: &GgufHeader| -> Vec<(String, Vec<u8>)> {
        h.metadata
            .iter()
            .map(|(k, v)| {
                let mut b = Vec::new();
                encode_value(&mut b, v);
                (k.to_string(), b)
            })
            .collect()
    };
    assert_eq!(enc(&h2), enc(&h));
    for (t, (_, d)) in h2.tensors.iter().zip(&tensors) {
        let start = (h2.data_offset + t.offset) as usize;
        assert_eq!(&out[start..start + d.len()], *d);
    }
});
