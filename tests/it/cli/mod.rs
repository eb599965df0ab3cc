//! The `tspi` binary as an operator runs it.

mod decode;
mod decode_limits;
mod roles;
mod validate;
