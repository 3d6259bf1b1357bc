//! Conversion: recipe → plan (types, sizes, offsets, all from headers) → streaming execution.

pub mod recipe;

pub use recipe::{Recipe, RECIPE_NAMES};
