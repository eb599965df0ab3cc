//! The load generator's integration tests, one binary: the fleet end to end
//! (`fleet`), the `tspi-loadgen` command line (`cli`) and `tspi-demo`
//! (`demo`), against real nats-server processes from `tspi_testkit`.

mod cli;
mod demo;
mod failures;
mod fleet;
