//! `tspi-loadgen`: the airshow fleet generator (issue 4 fills this in).
//!
//! Until then it says so and exits non-zero, so nothing mistakes it for a
//! working generator.

fn main() {
    eprintln!(
        "tspi-loadgen {}: the fleet generator is not implemented yet (tracked in issue 4)",
        env!("CARGO_PKG_VERSION")
    );
    std::process::exit(2);
}
