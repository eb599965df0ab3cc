//! The `tspi` binary as an operator runs it.

mod decode;
mod roles;
mod validate;
