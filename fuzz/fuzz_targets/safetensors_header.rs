//! Arbitrary bytes into the safetensors header parser: errors, never panics; accepted ranges
//! lie inside the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use qforge::source::safetensors::parse_header;

fuzz_target!(|data: &[u8]| {
    if let Ok(tensors) = parse_header(data) {
        for t in tensors {
            let _ = &data[t.range];
        }
    }
});
