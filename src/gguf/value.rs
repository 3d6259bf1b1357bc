//! Metadata values: the 13 GGUF value types, typed arrays (nesting is unrepresentable), and an
//! insertion-ordered key → value map with typed access.

use std::fmt;

use super::error::{ErrorKind, GgufError};

/// A GGUF value type id as stored on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl ValueType {
    /// The type for a wire id, if valid.
    pub fn from_id(id: u32) -> Option<ValueType> {
        use ValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// Fixed byte size, or `None` for STRING and ARRAY.
    pub fn fixed_size(self) -> Option<usize> {
        use ValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// Upper-case name as gguf-py prints it (`UINT32`, `STRING`, ...).
    pub fn name(self) -> &'static str {
        use ValueType::*;
        match self {
            U8 => "UINT8",
            I8 => "INT8",
            U16 => "UINT16",
            I16 => "INT16",
            U32 => "UINT32",
            I32 => "INT32",
            F32 => "FLOAT32",
            Bool => "BOOL",
            String => "STRING",
            Array => "ARRAY",
            U64 => "UINT64",
            I64 => "INT64",
            F64 => "FLOAT64",
        }
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A typed array. Every element has the same, non-array type.
#[derive(Clone, Debug, PartialEq)]
pub enum Array {
    U8(Vec<u8>),
    I8(Vec<i8>),
    U16(Vec<u16>),
    I16(Vec<i16>),
    U32(Vec<u32>),
    I32(Vec<i32>),
    F32(Vec<f32>),
    Bool(Vec<bool>),
    String(Vec<String>),
    U64(Vec<u64>),
    I64(Vec<i64>),
    F64(Vec<f64>),
}

impl Array {
    /// The element type.
    pub fn element_type(&self) -> ValueType {
        match self {
            Array::U8(_) => ValueType::U8,
            Array::I8(_) => ValueType::I8,
            Array::U16(_) => ValueType::U16,
            Array::I16(_) => ValueType::I16,
            Array::U32(_) => ValueType::U32,
            Array::I32(_) => ValueType::I32,
            Array::F32(_) => ValueType::F32,
            Array::Bool(_) => ValueType::Bool,
            Array::String(_) => ValueType::String,
            Array::U64(_) => ValueType::U64,
            Array::I64(_) => ValueType::I64,
            Array::F64(_) => ValueType::F64,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Array::U8(v) => v.len(),
            Array::I8(v) => v.len(),
            Array::U16(v) => v.len(),
            Array::I16(v) => v.len(),
            Array::U32(v) => v.len(),
            Array::I32(v) => v.len(),
            Array::F32(v) => v.len(),
            Array::Bool(v) => v.len(),
            Array::String(v) => v.len(),
            Array::U64(v) => v.len(),
            Array::I64(v) => v.len(),
            Array::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Element `i` as a scalar [`Value`].
    pub fn get(&self, i: usize) -> Option<Value> {
        Some(match self {
            Array::U8(v) => Value::U8(*v.get(i)?),
            Array::I8(v) => Value::I8(*v.get(i)?),
            Array::U16(v) => Value::U16(*v.get(i)?),
            Array::I16(v) => Value::I16(*v.get(i)?),
            Array::U32(v) => Value::U32(*v.get(i)?),
            Array::I32(v) => Value::I32(*v.get(i)?),
            Array::F32(v) => Value::F32(*v.get(i)?),
            Array::Bool(v) => Value::Bool(*v.get(i)?),
            Array::String(v) => Value::String(v.get(i)?.clone()),
            Array::U64(v) => Value::U64(*v.get(i)?),
            Array::I64(v) => Value::I64(*v.get(i)?),
            Array::F64(v) => Value::F64(*v.get(i)?),
        })
    }
}

/// A metadata value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Array),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The wire type.
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// A type description for messages: `UINT32`, or `ARRAY[STRING]`.
    pub fn type_name(&self) -> String {
        match self {
            Value::Array(a) => format!("ARRAY[{}]", a.element_type()),
            v => v.value_type().name().to_string(),
        }
    }
}

/// Conversion from a [`Value`] of exactly the matching type.
pub trait FromValue<'a>: Sized {
    /// The type name for error messages.
    const EXPECTED: &'static str;
    fn from_value(v: &'a Value) -> Option<Self>;
}

macro_rules! from_value {
    ($t:ty, $variant:ident, $name:literal) => {
        impl<'a> FromValue<'a> for $t {
            const EXPECTED: &'static str = $name;
            fn from_value(v: &'a Value) -> Option<Self> {
                match v {
                    Value::$variant(x) => Some(*x),
                    _ => None,
                }
            }
        }
    };
}

from_value!(u8, U8, "UINT8");
from_value!(i8, I8, "INT8");
from_value!(u16, U16, "UINT16");
from_value!(i16, I16, "INT16");
from_value!(u32, U32, "UINT32");
from_value!(i32, I32, "INT32");
from_value!(f32, F32, "FLOAT32");
from_value!(bool, Bool, "BOOL");
from_value!(u64, U64, "UINT64");
from_value!(i64, I64, "INT64");
from_value!(f64, F64, "FLOAT64");

impl<'a> FromValue<'a> for &'a str {
    const EXPECTED: &'static str = "STRING";
    fn from_value(v: &'a Value) -> Option<Self> {
        match v {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }
    }
}

impl FromValue<'_> for String {
    const EXPECTED: &'static str = "STRING";
    fn from_value(v: &Value) -> Option<Self> {
        match v {
            Value::String(s) => Some(s.clone()),
            _ => None,
        }
    }
}

macro_rules! from_array {
    ($t:ty, $variant:ident, $name:literal) => {
        impl<'a> FromValue<'a> for &'a [$t] {
            const EXPECTED: &'static str = $name;
            fn from_value(v: &'a Value) -> Option<Self> {
                match v {
                    Value::Array(Array::$variant(x)) => Some(x.as_slice()),
                    _ => None,
                }
            }
        }
    };
}

// Typed array access checks the element type before anything is read as that type (the
// mistake behind llama.cpp#26690).
from_array!(u8, U8, "ARRAY[UINT8]");
from_array!(i8, I8, "ARRAY[INT8]");
from_array!(u16, U16, "ARRAY[UINT16]");
from_array!(i16, I16, "ARRAY[INT16]");
from_array!(u32, U32, "ARRAY[UINT32]");
from_array!(i32, I32, "ARRAY[INT32]");
from_array!(f32, F32, "ARRAY[FLOAT32]");
from_array!(bool, Bool, "ARRAY[BOOL]");
from_array!(String, String, "ARRAY[STRING]");
from_array!(u64, U64, "ARRAY[UINT64]");
from_array!(i64, I64, "ARRAY[INT64]");
from_array!(f64, F64, "ARRAY[FLOAT64]");

impl<'a> FromValue<'a> for &'a Array {
    const EXPECTED: &'static str = "ARRAY";
    fn from_value(v: &'a Value) -> Option<Self> {
        match v {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Metadata: key → value in insertion (file) order, keys unique.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: std::collections::HashMap<String, usize>,
}

impl Metadata {
    pub fn new() -> Metadata {
        Metadata::default()
    }

    /// Add a key. Empty and duplicate keys are refused (the reader refuses them too).
    pub fn insert(&mut self, key: &str, value: Value) -> Result<(), GgufError> {
        if key.is_empty() {
            return Err(GgufError::new(ErrorKind::EmptyKey));
        }
        if self.index.contains_key(key) {
            return Err(GgufError::new(ErrorKind::DuplicateKey {
                key: key.to_string(),
            }));
        }
        self.index.insert(key.to_string(), self.entries.len());
        self.entries.push((key.to_string(), value));
        Ok(())
    }

    /// Replace the value of an existing key, or add it.
    pub fn set(&mut self, key: &str, value: Value) -> Result<(), GgufError> {
        match self.index.get(key) {
            Some(&i) => {
                self.entries[i].1 = value;
                Ok(())
            }
            None => self.insert(key, value),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    /// Remove a key, keeping the order of the others; its value if it was there.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, v) = self.entries.remove(i);
        for (k, _) in &self.entries[i..] {
            *self.index.get_mut(k).expect("indexed") -= 1;
        }
        Some(v)
    }

    /// Typed access: the value of `key` if it has exactly type `T` (no numeric conversions).
    /// `T` is one of the scalar types, `&str`, `String`, `&Array`, or a slice `&[E]` of an
    /// array's element type. A missing key or another type is an error naming the key and both
    /// types, e.g. "metadata key 'x' has type FLOAT32, expected UINT32".
    pub fn get_as<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<T, GgufError> {
        let v = self.get(key).ok_or_else(|| {
            GgufError::new(ErrorKind::MissingKey {
                key: key.to_string(),
            })
        })?;
        T::from_value(v).ok_or_else(|| {
            GgufError::new(ErrorKind::WrongType {
                key: key.to_string(),
                expected: T::EXPECTED,
                actual: v.type_name(),
            })
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
