//! STUB: placeholder so the crate compiles; replaced by the real float conversions.
use super::Isa;
pub fn f32_to_le_bytes(_src: &[f32], _dst: &mut [u8]) {
    todo!()
}
pub fn f32_to_f16_bytes(_isa: Isa, _src: &[f32], _dst: &mut [u8]) {
    todo!()
}
pub fn f32_to_bf16_bytes(_src: &[f32], _dst: &mut [u8]) {
    todo!()
}
pub fn le_bytes_to_f32(_src: &[u8], _dst: &mut [f32]) {
    todo!()
}
pub fn f16_bytes_to_f32(_isa: Isa, _src: &[u8], _dst: &mut [f32]) {
    todo!()
}
pub fn bf16_bytes_to_f32(_isa: Isa, _src: &[u8], _dst: &mut [f32]) {
    todo!()
}
