//! The ggml tensor type table: ids as stored in a GGUF tensor info, block geometry, names,
//! plus qforge's NF4 extension types.
//!
//! This table is shared by the reader (to size tensors), the writer and the quantizers.
//! Ids and sizes come from ggml's `ggml.h`/`ggml-common.h` (see spec/FORMAT.md).

use std::fmt;

/// A tensor element type as stored in a GGUF tensor info.
///
/// Only types whose block geometry qforge knows are representable; any other id is rejected
/// by the reader ("unknown type id"), as ggml does for removed ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q8_1,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
    Iq2Xxs,
    Iq2Xs,
    Iq3Xxs,
    Iq1S,
    Iq4Nl,
    Iq3S,
    Iq2S,
    Iq4Xs,
    I8,
    I16,
    I32,
    I64,
    F64,
    Iq1M,
    Bf16,
    Tq1_0,
    Tq2_0,
    Mxfp4,
    /// qforge extension: NF4 with one f32 absmax per block (bitsandbytes without double
    /// quantization). `block` is the number of weights per block, a power of two in 32..=4096.
    Nf4 {
        block: u32,
    },
    /// qforge extension: NF4 with double-quantized absmax (one u8 dynamic-map code per block).
    /// The per-tensor offset and nested absmax live in a companion F32 tensor (spec/FORMAT.md).
    Nf4Dq {
        block: u32,
    },
}

/// First id of the NF4 extension range: `NF4_ID_BASE + log2(block)`.
pub const NF4_ID_BASE: u32 = 0x4E00; // 19968, "N\0": far from ggml's ids (< 64) and forks' (< 200)
/// First id of the NF4 + double quantization range: `NF4_DQ_ID_BASE + log2(block)`.
pub const NF4_DQ_ID_BASE: u32 = 0x4E20;
/// Smallest and largest NF4 block sizes (bitsandbytes accepts 32..=4096, powers of two).
pub const NF4_MIN_BLOCK: u32 = 32;
pub const NF4_MAX_BLOCK: u32 = 4096;

/// Every ggml (non-extension) type qforge knows, in id order.
pub const GGML_TYPES: &[GgmlType] = &[
    GgmlType::F32,
    GgmlType::F16,
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q8_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
    GgmlType::Iq2Xxs,
    GgmlType::Iq2Xs,
    GgmlType::Iq3Xxs,
    GgmlType::Iq1S,
    GgmlType::Iq4Nl,
    GgmlType::Iq3S,
    GgmlType::Iq2S,
    GgmlType::Iq4Xs,
    GgmlType::I8,
    GgmlType::I16,
    GgmlType::I32,
    GgmlType::I64,
    GgmlType::F64,
    GgmlType::Iq1M,
    GgmlType::Bf16,
    GgmlType::Tq1_0,
    GgmlType::Tq2_0,
    GgmlType::Mxfp4,
];

impl GgmlType {
    /// The id stored in a tensor info.
    pub fn id(self) -> u32 {
        use GgmlType::*;
        match self {
            F32 => 0,
            F16 => 1,
            Q4_0 => 2,
            Q4_1 => 3,
            Q5_0 => 6,
            Q5_1 => 7,
            Q8_0 => 8,
            Q8_1 => 9,
            Q2K => 10,
            Q3K => 11,
            Q4K => 12,
            Q5K => 13,
            Q6K => 14,
            Q8K => 15,
            Iq2Xxs => 16,
            Iq2Xs => 17,
            Iq3Xxs => 18,
            Iq1S => 19,
            Iq4Nl => 20,
            Iq3S => 21,
            Iq2S => 22,
            Iq4Xs => 23,
            I8 => 24,
            I16 => 25,
            I32 => 26,
            I64 => 27,
            F64 => 28,
            Iq1M => 29,
            Bf16 => 30,
            Tq1_0 => 34,
            Tq2_0 => 35,
            Mxfp4 => 39,
            Nf4 { block } => NF4_ID_BASE + block.trailing_zeros(),
            Nf4Dq { block } => NF4_DQ_ID_BASE + block.trailing_zeros(),
        }
    }

    /// The type for a stored id, or `None` for ids that are unknown or removed from ggml.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        if let Some(t) = GGML_TYPES.iter().copied().find(|t| t.id() == id) {
            return Some(t);
        }
        let nf4_block = |base: u32| -> Option<u32> {
            let log2 = id.checked_sub(base)?;
            let block = 1u32.checked_shl(log2)?;
            (NF4_MIN_BLOCK..=NF4_MAX_BLOCK)
                .contains(&block)
                .then_some(block)
        };
        if let Some(block) = nf4_block(NF4_ID_BASE) {
            return Some(GgmlType::Nf4 { block });
        }
        if let Some(block) = nf4_block(NF4_DQ_ID_BASE) {
            return Some(GgmlType::Nf4Dq { block });
        }
        None
    }

    /// Number of elements in one block (1 for plain scalar types).
    pub fn block_size(self) -> u64 {
        use GgmlType::*;
        match self {
            F32 | F16 | Bf16 | I8 | I16 | I32 | I64 | F64 => 1,
            Q4_0 | Q4_1 | Q5_0 | Q5_1 | Q8_0 | Q8_1 | Iq4Nl | Mxfp4 => 32,
            Q2K | Q3K | Q4K | Q5K | Q6K | Q8K | Iq2Xxs | Iq2Xs | Iq3Xxs | Iq1S | Iq3S | Iq2S
            | Iq4Xs | Iq1M | Tq1_0 | Tq2_0 => 256,
            Nf4 { block } | Nf4Dq { block } => block as u64,
        }
    }

    /// Number of bytes in one block.
    pub fn type_size(self) -> u64 {
        use GgmlType::*;
        match self {
            F32 => 4,
            F16 | Bf16 => 2,
            I8 => 1,
            I16 => 2,
            I32 => 4,
            I64 | F64 => 8,
            Q4_0 => 18,
            Q4_1 => 20,
            Q5_0 => 22,
            Q5_1 => 24,
            Q8_0 => 34,
            Q8_1 => 36,
            Q2K => 84,
            Q3K => 110,
            Q4K => 144,
            Q5K => 176,
            Q6K => 210,
            Q8K => 292,
            Iq2Xxs => 66,
            Iq2Xs => 74,
            Iq3Xxs => 98,
            Iq1S => 50,
            Iq4Nl => 18,
            Iq3S => 110,
            Iq2S => 82,
            Iq4Xs => 136,
            Iq1M => 56,
            Tq1_0 => 54,
            Tq2_0 => 66,
            Mxfp4 => 17,
            // f32 absmax + block/2 bytes of nibbles
            Nf4 { block } => 4 + block as u64 / 2,
            // u8 dynamic-map code + block/2 bytes of nibbles
            Nf4Dq { block } => 1 + block as u64 / 2,
        }
    }

    /// Upper-case name as ggml and gguf-py print it (`Q4_K`, `IQ4_NL`, `BF16`); NF4 extension
    /// types print as `NF4` / `NF4_DQ` with a `_B<block>` suffix when the block is not 64.
    pub fn name(self) -> String {
        use GgmlType::*;
        let s = match self {
            F32 => "F32",
            F16 => "F16",
            Q4_0 => "Q4_0",
            Q4_1 => "Q4_1",
            Q5_0 => "Q5_0",
            Q5_1 => "Q5_1",
            Q8_0 => "Q8_0",
            Q8_1 => "Q8_1",
            Q2K => "Q2_K",
            Q3K => "Q3_K",
            Q4K => "Q4_K",
            Q5K => "Q5_K",
            Q6K => "Q6_K",
            Q8K => "Q8_K",
            Iq2Xxs => "IQ2_XXS",
            Iq2Xs => "IQ2_XS",
            Iq3Xxs => "IQ3_XXS",
            Iq1S => "IQ1_S",
            Iq4Nl => "IQ4_NL",
            Iq3S => "IQ3_S",
            Iq2S => "IQ2_S",
            Iq4Xs => "IQ4_XS",
            I8 => "I8",
            I16 => "I16",
            I32 => "I32",
            I64 => "I64",
            F64 => "F64",
            Iq1M => "IQ1_M",
            Bf16 => "BF16",
            Tq1_0 => "TQ1_0",
            Tq2_0 => "TQ2_0",
            Mxfp4 => "MXFP4",
            Nf4 { block } => return nf4_name("NF4", block),
            Nf4Dq { block } => return nf4_name("NF4_DQ", block),
        };
        s.to_string()
    }

    /// True for qforge's extension types, which llama.cpp cannot load.
    pub fn is_extension(self) -> bool {
        matches!(self, GgmlType::Nf4 { .. } | GgmlType::Nf4Dq { .. })
    }

    /// True for block-quantized types (anything with more than one element per block, or
    /// an extension type).
    pub fn is_quantized(self) -> bool {
        self.block_size() > 1 || self.is_extension()
    }

    /// Bytes for `n_elements` elements, or `None` if `n_elements` is not a whole number of
    /// blocks or the size overflows `u64`.
    pub fn bytes_for(self, n_elements: u64) -> Option<u64> {
        let bs = self.block_size();
        if !n_elements.is_multiple_of(bs) {
            return None;
        }
        (n_elements / bs).checked_mul(self.type_size())
    }

    /// Bits per weight of this type (type_size * 8 / block_size).
    pub fn bits_per_weight(self) -> f64 {
        self.type_size() as f64 * 8.0 / self.block_size() as f64
    }
}

fn nf4_name(base: &str, block: u32) -> String {
    if block == 64 {
        base.to_string()
    } else {
        format!("{base}_B{block}")
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_are_unique() {
        let mut seen = std::collections::HashSet::new();
        for &t in GGML_TYPES {
            assert_eq!(GgmlType::from_id(t.id()), Some(t));
            assert!(seen.insert(t.id()), "duplicate id {}", t.id());
        }
        for block in [32u32, 64, 128, 256, 512, 1024, 2048, 4096] {
            for t in [GgmlType::Nf4 { block }, GgmlType::Nf4Dq { block }] {
                assert_eq!(GgmlType::from_id(t.id()), Some(t));
            }
        }
    }

    #[test]
    fn removed_and_unknown_ids_are_rejected() {
        for id in [
            4u32,
            5,
            31,
            32,
            33,
            36,
            37,
            38,
            40,
            41,
            42,
            100,
            NF4_ID_BASE + 4,
        ] {
            assert_eq!(GgmlType::from_id(id), None, "id {id}");
        }
        assert_eq!(GgmlType::from_id(NF4_ID_BASE + 13), None);
        assert_eq!(GgmlType::from_id(u32::MAX), None);
    }

    #[test]
    fn geometry_matches_ggml() {
        assert_eq!(
            (GgmlType::Q8_0.block_size(), GgmlType::Q8_0.type_size()),
            (32, 34)
        );
        assert_eq!(
            (GgmlType::Q4K.block_size(), GgmlType::Q4K.type_size()),
            (256, 144)
        );
        assert_eq!(
            (GgmlType::Q6K.block_size(), GgmlType::Q6K.type_size()),
            (256, 210)
        );
        assert_eq!(GgmlType::Nf4 { block: 64 }.type_size(), 36);
        assert_eq!(GgmlType::Nf4Dq { block: 64 }.type_size(), 33);
        assert_eq!(GgmlType::Q4_0.bytes_for(64), Some(36));
        assert_eq!(GgmlType::Q4_0.bytes_for(33), None);
        assert_eq!(GgmlType::Q4K.bits_per_weight(), 4.5);
        assert_eq!(GgmlType::Q4K.name(), "Q4_K");
        assert_eq!(GgmlType::Nf4Dq { block: 128 }.name(), "NF4_DQ_B128");
    }
}
