//! A stage's counters, declared once, and the one set of renderers every
//! stage uses: Prometheus families (`# HELP` / `# TYPE`, counters, gauges,
//! histograms) and the log line's `name value` fragments. JSON is the
//! declared struct's own serde form.
//!
//! [`counter_set!`](crate::counter_set) declares the plain struct (one
//! `u64`, or one `[u64; N]` by label, per counter), its help texts,
//! [`CounterSet::fields`] and a complete `delta_since` (a struct literal
//! without `..`, so a counter added to the declaration cannot be left out of
//! any output), and optionally an atomic twin for live counting:
//!
//! ```
//! tspi::counter_set! {
//!     /// What a demo stage did.
//!     #[derive(serde::Serialize)]
//!     pub struct DemoCounts {
//!         /// Things seen.
//!         seen => "Things seen.",
//!         /// Things refused, by colour.
//!         refused [by "colour": ["red", "blue"]] => "Things refused, by colour.",
//!     }
//! }
//! let c = DemoCounts { seen: 3, refused: [1, 2] };
//! let mut text = String::new();
//! tspi::metrics::write_counter_families(&mut text, "tspi_demo", &c);
//! assert!(text.contains("tspi_demo_refused_total{colour=\"blue\"} 2\n"));
//! ```
//!
//! Pure: no I/O, no clock.

use super::prometheus::{BUCKET_BOUNDS, bucket_counts};
use hdrhistogram::Histogram;
use std::fmt::Write as _;

/// One counter's value: a single count, or one count per label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CounterValue<'a> {
    One(u64),
    ByLabel {
        /// The label's name (`reason`).
        label: &'static str,
        /// The label's values, one per count.
        labels: &'static [&'static str],
        counts: &'a [u64],
    },
}

impl CounterValue<'_> {
    /// The count, or the sum of the counts by label (saturating).
    pub fn total(&self) -> u64 {
        match self {
            CounterValue::One(v) => *v,
            CounterValue::ByLabel { counts, .. } => {
                counts.iter().fold(0u64, |a, &b| a.saturating_add(b))
            }
        }
    }
}

/// One declared counter: its metric name (without prefix and `_total`), its
/// Prometheus help, and its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterField<'a> {
    pub name: &'static str,
    pub help: &'static str,
    pub value: CounterValue<'a>,
}

/// Monotonic counters declared with [`counter_set!`](crate::counter_set).
pub trait CounterSet: Copy + Default {
    /// Every counter, in declaration order.
    fn counter_fields(&self) -> Vec<CounterField<'_>>;
    /// What each counter gained since `earlier`; one that went backwards
    /// counts as zero rather than wrapping into a huge rate.
    fn counter_delta_since(&self, earlier: &Self) -> Self;
}

/// `u64` or `[u64; N]`: what a declared counter may hold.
pub trait CounterCell: Copy {
    /// Saturating difference, element by element.
    fn saturating_delta(self, earlier: Self) -> Self;
}

impl CounterCell for u64 {
    fn saturating_delta(self, earlier: u64) -> u64 {
        self.saturating_sub(earlier)
    }
}

impl<const N: usize> CounterCell for [u64; N] {
    fn saturating_delta(mut self, earlier: [u64; N]) -> [u64; N] {
        for (a, b) in self.iter_mut().zip(earlier) {
            *a = a.saturating_sub(b);
        }
        self
    }
}

/// Declares a stage's counters once (see the [module docs](crate::metrics)).
///
/// Each field is `name => "help"` (a `u64`) or
/// `name [by "label": LABELS] => "help"` (a `[u64; LABELS.len()]`, one count
/// per label value). Generates the struct (`Clone, Copy, Debug, Default,
/// PartialEq, Eq` plus the attributes given), `FIELDS_LEN`,
/// `fields() -> [CounterField; FIELDS_LEN]`, `delta_since` and
/// [`CounterSet`]. With `live struct Name;` after it, also an atomic twin
/// (one `AtomicU64` per counter, scalar counters only) with `load()`.
#[macro_export]
macro_rules! counter_set {
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident $([by $label:literal : $labels:expr])? => $help:literal
            ),* $(,)?
        }
        $(#[$lmeta:meta])*
        live $lvis:vis struct $live:ident;
    ) => {
        $crate::counter_set! {
            $(#[$meta])*
            $vis struct $name {
                $(
                    $(#[$fmeta])*
                    $field $([by $label : $labels])? => $help
                ),*
            }
        }

        $(#[$lmeta])*
        #[derive(Debug, Default)]
        $lvis struct $live {
            $(
                #[doc = $help]
                pub $field: ::std::sync::atomic::AtomicU64,
            )*
        }

        impl $live {
            /// Every count now (each read `Relaxed`, one after another).
            pub fn load(&self) -> $name {
                $name {
                    $($field: self.$field.load(::std::sync::atomic::Ordering::Relaxed),)*
                }
            }
        }
    };
    (
        $(#[$meta:meta])*
        $vis:vis struct $name:ident {
            $(
                $(#[$fmeta:meta])*
                $field:ident $([by $label:literal : $labels:expr])? => $help:literal
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        $vis struct $name {
            $(
                $(#[$fmeta])*
                pub $field: $crate::counter_set!(@type $($labels)?),
            )*
        }

        impl $name {
            /// How many counters are declared.
            pub const FIELDS_LEN: usize = [$(stringify!($field)),*].len();

            /// Every counter with its metric name and help, in declaration
            /// order. Renderers iterate this, so a counter cannot be in one
            /// output and missing from another.
            pub fn fields(&self) -> [$crate::metrics::CounterField<'_>; Self::FIELDS_LEN] {
                [$(
                    $crate::metrics::CounterField {
                        name: stringify!($field),
                        help: $help,
                        value: $crate::counter_set!(@value self.$field $(, $label, $labels)?),
                    }
                ),*]
            }

            /// What each counter gained since `earlier`. A counter that went
            /// backwards (it cannot, unless the caller mixed up sources)
            /// counts as zero rather than wrapping into a huge rate.
            pub fn delta_since(&self, earlier: &Self) -> Self {
                Self {
                    $(
                        $field: $crate::metrics::CounterCell::saturating_delta(
                            self.$field,
                            earlier.$field,
                        ),
                    )*
                }
            }
        }

        impl $crate::metrics::CounterSet for $name {
            fn counter_fields(&self) -> ::std::vec::Vec<$crate::metrics::CounterField<'_>> {
                self.fields().to_vec()
            }
            fn counter_delta_since(&self, earlier: &Self) -> Self {
                self.delta_since(earlier)
            }
        }
    };
    (@type) => { u64 };
    (@type $labels:expr) => { [u64; $labels.len()] };
    (@value $v:expr) => { $crate::metrics::CounterValue::One($v) };
    (@value $v:expr, $label:literal, $labels:expr) => {
        $crate::metrics::CounterValue::ByLabel {
            label: $label,
            labels: &$labels,
            counts: &$v,
        }
    };
}

/// `# HELP` and `# TYPE` of one family.
pub fn write_family(s: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(s, "# HELP {name} {help}");
    let _ = writeln!(s, "# TYPE {name} {kind}");
}

/// Every counter as a Prometheus counter family `{prefix}_{name}_total`:
/// the single counts first, then those by label (one sample per label
/// value), each in declaration order.
pub fn write_counter_families<C: CounterSet>(s: &mut String, prefix: &str, c: &C) {
    let fields = c.counter_fields();
    for f in &fields {
        if let CounterValue::One(v) = f.value {
            write_family(s, &format!("{prefix}_{}_total", f.name), f.help, "counter");
            let _ = writeln!(s, "{prefix}_{}_total {v}", f.name);
        }
    }
    for f in &fields {
        if let CounterValue::ByLabel {
            label,
            labels,
            counts,
        } = f.value
        {
            let name = format!("{prefix}_{}_total", f.name);
            write_family(s, &name, f.help, "counter");
            for (l, v) in labels.iter().zip(counts) {
                let _ = writeln!(s, "{name}{{{label}=\"{l}\"}} {v}");
            }
        }
    }
}

/// The whole exposition of a counter set alone.
pub fn render_counter_families<C: CounterSet>(prefix: &str, c: &C) -> String {
    let mut s = String::new();
    write_counter_families(&mut s, prefix, c);
    s
}

/// One gauge family: `samples` are `(labels, value)`, labels already
/// written as `{k="v"}` or empty.
pub fn write_gauge_family<V: std::fmt::Display>(
    s: &mut String,
    name: &str,
    help: &str,
    samples: &[(&str, V)],
) {
    write_family(s, name, help, "gauge");
    for (labels, v) in samples {
        let _ = writeln!(s, "{name}{labels} {v}");
    }
}

/// One histogram family `name` (seconds) from an HdrHistogram of
/// nanoseconds, with the fixed [`BUCKET_BOUNDS`] (see [`bucket_counts`]).
pub fn write_histogram_family(s: &mut String, name: &str, help: &str, h: &Histogram<u64>) {
    write_family(s, name, help, "histogram");
    write_histogram_samples(s, name, "", h);
}

/// The samples of one histogram series of family `name` (seconds, from
/// nanoseconds): `labels` are written before `le`, as `k="v",` pairs each
/// followed by a comma (empty: none). The family's `# HELP`/`# TYPE` are
/// the caller's ([`write_family`]), once for all its series.
pub fn write_histogram_samples(s: &mut String, name: &str, labels: &str, h: &Histogram<u64>) {
    let (cumulative, sum_ns) = bucket_counts(h);
    for ((_, le), n) in BUCKET_BOUNDS.iter().zip(cumulative) {
        let _ = writeln!(s, "{name}_bucket{{{labels}le=\"{le}\"}} {n}");
    }
    let _ = writeln!(s, "{name}_bucket{{{labels}le=\"+Inf\"}} {}", h.len());
    let plain = labels.trim_end_matches(',');
    let braces = if plain.is_empty() {
        String::new()
    } else {
        format!("{{{plain}}}")
    };
    let _ = writeln!(s, "{name}_sum{braces} {}", sum_ns as f64 / 1e9);
    let _ = writeln!(s, "{name}_count{braces} {}", h.len());
}

/// `name value` for each counter named in `names` (in that order; a count by
/// label shows its total), joined by `sep`: the counts part of a log line.
/// A name the set does not declare is left out (and fails debug builds).
pub fn counts_fragment<C: CounterSet>(c: &C, names: &[&str], sep: &str) -> String {
    let fields = c.counter_fields();
    let mut s = String::new();
    for name in names {
        let Some(f) = fields.iter().find(|f| f.name == *name) else {
            debug_assert!(false, "no counter {name}");
            continue;
        };
        if !s.is_empty() {
            s.push_str(sep);
        }
        let _ = write!(s, "{} {}", f.name, f.value.total());
    }
    s
}

/// `name value` for every counter, in declaration order, joined by `sep`.
pub fn all_counts_fragment<C: CounterSet>(c: &C, sep: &str) -> String {
    let fields = c.counter_fields();
    let names: Vec<&str> = fields.iter().map(|f| f.name).collect();
    counts_fragment(c, &names, sep)
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::counter_set! {
        /// A test set.
        #[derive(serde::Serialize)]
        pub struct Demo {
            a => "Help a.",
            b [by "k": ["x", "y", "z"]] => "Help b.",
            /// Documented.
            c => "Help c.",
        }
    }

    crate::counter_set! {
        struct Flat {
            p => "P.",
            q => "Q.",
        }
        live struct FlatLive;
    }

    #[test]
    fn fields_in_declaration_order() {
        let d = Demo {
            a: 1,
            b: [2, 3, 4],
            c: 5,
        };
        assert_eq!(Demo::FIELDS_LEN, 3);
        let names: Vec<_> = d.fields().iter().map(|f| f.name).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(d.fields()[1].value.total(), 9);
        assert_eq!(
            serde_json::to_string(&d).unwrap(),
            r#"{"a":1,"b":[2,3,4],"c":5}"#
        );
    }

    #[test]
    fn delta_saturates_every_field() {
        let before = Demo {
            a: 5,
            b: [1, 1, 1],
            c: 9,
        };
        let after = Demo {
            a: 7,
            b: [1, 4, 0],
            c: 9,
        };
        assert_eq!(
            after.delta_since(&before),
            Demo {
                a: 2,
                b: [0, 3, 0],
                c: 0
            }
        );
        assert_eq!(before.counter_delta_since(&before), Demo::default());
    }

    #[test]
    fn prometheus_scalars_then_labelled() {
        let d = Demo {
            a: 1,
            b: [2, 3, 4],
            c: 5,
        };
        assert_eq!(
            render_counter_families("t", &d),
            "# HELP t_a_total Help a.\n# TYPE t_a_total counter\nt_a_total 1\n\
             # HELP t_c_total Help c.\n# TYPE t_c_total counter\nt_c_total 5\n\
             # HELP t_b_total Help b.\n# TYPE t_b_total counter\n\
             t_b_total{k=\"x\"} 2\nt_b_total{k=\"y\"} 3\nt_b_total{k=\"z\"} 4\n"
        );
    }

    #[test]
    fn log_fragments() {
        let d = Demo {
            a: 1,
            b: [2, 3, 4],
            c: 5,
        };
        assert_eq!(counts_fragment(&d, &["c", "b"], " "), "c 5 b 9");
        assert_eq!(all_counts_fragment(&d, ", "), "a 1, b 9, c 5");
    }

    #[test]
    fn live_twin_loads() {
        let l = FlatLive::default();
        l.q.fetch_add(3, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(l.load(), Flat { p: 0, q: 3 });
    }

    #[test]
    fn gauges_and_histograms() {
        let mut s = String::new();
        write_gauge_family(&mut s, "g", "G.", &[("{s=\"A\"}", 1.5), ("", 2.0)]);
        assert_eq!(s, "# HELP g G.\n# TYPE g gauge\ng{s=\"A\"} 1.5\ng 2\n");
        let mut h = crate::metrics::new_latency_histogram();
        h.saturating_record(100_000);
        let mut s = String::new();
        write_histogram_family(&mut s, "h_seconds", "H.", &h);
        assert!(s.starts_with("# HELP h_seconds H.\n# TYPE h_seconds histogram\n"));
        assert!(s.contains("h_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(s.ends_with(
            "h_seconds_bucket{le=\"+Inf\"} 1\nh_seconds_sum 0.0001\nh_seconds_count 1\n"
        ));
    }
}
