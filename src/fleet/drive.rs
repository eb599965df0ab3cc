//! Edge: to be written.
