//! `tspi_testkit::harness` against the real servers it starts.

mod nats;
mod postgres;
