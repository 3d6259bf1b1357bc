//! STUB: placeholder so the crate compiles; replaced by the real Q6K module.

use super::BlockFormat;
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ6K {
    pub bytes: [u8; 210],
}

impl BlockFormat for BlockQ6K {
    const TYPE: GgmlType = GgmlType::Q6K;
    const ELEMS: usize = 256;
    fn quantize_block(_x: &[f32]) -> Self {
        todo!("Q6K quantize")
    }
    fn dequantize_block(&self, _out: &mut [f32]) {
        todo!("Q6K dequantize")
    }
}
