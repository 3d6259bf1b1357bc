//! STUB: placeholder so the crate compiles; replaced by the real Q4K module.

use super::BlockFormat;
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockQ4K {
    pub bytes: [u8; 144],
}

impl BlockFormat for BlockQ4K {
    const TYPE: GgmlType = GgmlType::Q4K;
    const ELEMS: usize = 256;
    fn quantize_block(_x: &[f32]) -> Self {
        todo!("Q4K quantize")
    }
    fn dequantize_block(&self, _out: &mut [f32]) {
        todo!("Q4K dequantize")
    }
}
