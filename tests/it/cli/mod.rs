//! The `tspi` binary as an operator runs it.

mod decode;
mod validate;
