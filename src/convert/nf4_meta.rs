//! How NF4 with double quantization is laid out in a GGUF file: the companion state tensor
//! of each NF4_DQ tensor and the file-level keys that pin the codebook (spec/NF4.md).

use crate::gguf::{Array, Metadata, Value};
use crate::quant::nf4;

use super::ConvertError;

/// Suffix of the F32 tensor holding a NF4_DQ tensor's offset and nested absmax values.
pub const STATE_SUFFIX: &str = ".nf4dq";

/// Name of the state tensor for `tensor`.
pub fn state_name(tensor: &str) -> String {
    format!("{tensor}{STATE_SUFFIX}")
}

/// True for companion state tensors.
pub fn is_state_tensor(name: &str) -> bool {
    name.ends_with(STATE_SUFFIX)
}

pub const KEY_CODEBOOK: &str = "qforge.nf4.codebook";
pub const KEY_DQ_MAP: &str = "qforge.nf4.dq_map";
pub const KEY_DQ_GROUP: &str = "qforge.nf4.dq_group_size";

/// Record the NF4 codebook, the dynamic map and the group size, so readers can check them.
pub fn put_nf4_metadata(m: &mut Metadata) -> Result<(), ConvertError> {
    m.insert(
        KEY_CODEBOOK,
        Value::Array(Array::F32(nf4::nf4_values().to_vec())),
    )?;
    m.insert(KEY_DQ_MAP, Value::Array(Array::F32(nf4::dq_map().to_vec())))?;
    m.insert(KEY_DQ_GROUP, Value::U32(nf4::DQ_GROUP as u32))?;
    Ok(())
}

/// Check that a file's NF4 keys describe exactly the codebook and map qforge decodes with.
pub fn check_nf4_metadata(m: &Metadata) -> Result<(), String> {
    let same = |key: &str, want: &[f32]| -> Result<(), String> {
        match m.get(key) {
            Some(Value::Array(Array::F32(v)))
                if v.len() == want.len()
                    && v.iter().zip(want).all(|(a, b)| a.to_bits() == b.to_bits()) =>
            {
                Ok(())
            }
            Some(_) => Err(format!("metadata key '{key}' differs from qforge's table")),
            None => Err(format!("metadata key '{key}' is missing")),
        }
    };
    same(KEY_CODEBOOK, &nf4::nf4_values())?;
    same(KEY_DQ_MAP, &nf4::dq_map())?;
    match m.get(KEY_DQ_GROUP) {
        Some(Value::U32(g)) if *g as usize == nf4::DQ_GROUP => Ok(()),
        _ => Err(format!("metadata key '{KEY_DQ_GROUP}' must be UINT32 256")),
    }
}
