//! The wire contract's vocabulary, apart from the code that speaks it.
//!
//! - [`names`]: stream names and subjects, the one place they are spelled.
//!
//! Pure: constants and string builders only.

pub mod names;
