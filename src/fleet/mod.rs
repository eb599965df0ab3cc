//! Airshow and cruise fleet generation for `tspi-loadgen` and the demo
//! (issue 4; being built).
