//! Arbitrary bytes into the GGUF reader and, when it accepts them, into both inspect
//! formatters and every tensor's data view: nothing may panic or allocate past the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforge::gguf::GgufHeader;
use qforge::inspect::{render_json, render_text, InspectOptions};

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = GgufHeader::parse(data) {
        for full in [false, true] {
            let opts = InspectOptions {
                tensors: true,
                full,
            };
            let _ = render_text(&h, opts);
            let _ = render_json(&h, opts);
        }
        for t in &h.tensors {
            let start = (h.data_offset + t.offset) as usize;
            let _ = &data[start..start + t.n_bytes() as usize];
        }
    }
});
