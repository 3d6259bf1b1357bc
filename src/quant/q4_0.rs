//! STUB: placeholder so the crate compiles; replaced by the real Q4_0 module.

use super::BlockFormat;
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4_0 {
    pub bytes: [u8; 18],
}

impl BlockFormat for BlockQ4_0 {
    const TYPE: GgmlType = GgmlType::Q4_0;
    const ELEMS: usize = 32;
    fn quantize_block(_x: &[f32]) -> Self {
        todo!("Q4_0 quantize")
    }
    fn dequantize_block(&self, _out: &mut [f32]) {
        todo!("Q4_0 dequantize")
    }
}
