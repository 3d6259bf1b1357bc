//! STUB: placeholder so the crate compiles; replaced by the real Iq4Nl module.

use super::BlockFormat;
use crate::gguf::GgmlType;

#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub struct BlockIq4Nl {
    pub bytes: [u8; 18],
}

impl BlockFormat for BlockIq4Nl {
    const TYPE: GgmlType = GgmlType::Iq4Nl;
    const ELEMS: usize = 32;
    fn quantize_block(_x: &[f32]) -> Self {
        todo!("Iq4Nl quantize")
    }
    fn dequantize_block(&self, _out: &mut [f32]) {
        todo!("Iq4Nl dequantize")
    }
}
