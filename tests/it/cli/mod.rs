//! The `tspi` binary as an operator runs it.

mod decode;
mod decode_limits;
mod logging;
mod roles;
mod validate;
