//! What to make of a stream that exists already: how it differs from the
//! settings this appliance would give it, and whether its subjects still
//! capture what the appliance publishes there. Pure: no server, no clock;
//! [`super::ensure_stream_with`] asks the server and acts on the answer.
//!
//! A stream is shared (the range toolkit, an administrator, several ingest
//! boxes may all define `TSPI`), so one that exists is left as it is unless
//! the operator asks for it to be updated (`stream.update`,
//! `--update-stream`); each difference is logged. It is refused only when
//! it cannot hold what this appliance publishes: a subject the appliance
//! publishes on that none of the stream's subjects cover.

use async_nats::jetstream::stream;

/// One setting where the stream on the server differs from ours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Difference {
    /// The stream setting, as JetStream names it (`subjects`,
    /// `duplicate_window`, `allow_batched`...).
    pub key: &'static str,
    /// The server's value.
    pub theirs: String,
    /// What this appliance would set.
    pub ours: String,
}

/// Every setting this appliance gives a stream on which `theirs` differs
/// from `ours` (settings it leaves to the server's defaults are not
/// compared). Subjects compare as sets.
pub fn differences(theirs: &stream::Config, ours: &stream::Config) -> Vec<Difference> {
    let mut d = Vec::new();
    let mut push = |key, t: String, o: String| {
        if t != o {
            d.push(Difference {
                key,
                theirs: t,
                ours: o,
            });
        }
    };
    let subjects = |c: &stream::Config| {
        let mut s = c.subjects.clone();
        s.sort();
        s.dedup();
        s.join(", ")
    };
    push("subjects", subjects(theirs), subjects(ours));
    push(
        "storage",
        format!("{:?}", theirs.storage).to_lowercase(),
        format!("{:?}", ours.storage).to_lowercase(),
    );
    push(
        "num_replicas",
        theirs.num_replicas.max(1).to_string(),
        ours.num_replicas.max(1).to_string(),
    );
    push(
        "duplicate_window",
        format!("{:?}", theirs.duplicate_window),
        format!("{:?}", ours.duplicate_window),
    );
    push(
        "max_age",
        format!("{:?}", theirs.max_age),
        format!("{:?}", ours.max_age),
    );
    push(
        "allow_batched",
        theirs.allow_batch_publish.to_string(),
        ours.allow_batch_publish.to_string(),
    );
    d
}

/// Does the NATS subject pattern `pattern` match every subject that
/// `subject` (itself a subject or a pattern) matches? Tokens are split on
/// `.`; `*` matches one token, `>` (last) one or more.
///
/// ```
/// use tspi::jetstream::existing::covers;
/// assert!(covers("tspi.>", "tspi.geocentric.*"));
/// assert!(covers("tspi.*.*", "tspi.geocentric.*"));
/// assert!(!covers("tspi.*", "tspi.geocentric.*"));
/// assert!(!covers("tspi.geocentric.*", "tspi.geocentric.>"));
/// assert!(!covers("other.>", "tspi.spherical.7"));
/// ```
pub fn covers(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (None, None) => return true,
            // `>` takes one or more tokens: there is one, whatever it is.
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) => {
                if t == ">" {
                    return false;
                }
            }
            (Some(a), Some(b)) => {
                if a != b {
                    return false;
                }
            }
            _ => return false,
        }
    }
}

/// Is every subject `subject` matches matched by one of `patterns`? Also
/// when no single pattern does but several together do (`a.>` by `a.*`
/// and `a.*.>`): a trailing `>` is split into "one more token" and "two or
/// more", as deep as the longest pattern reaches.
pub fn covered_by(patterns: &[String], subject: &str) -> bool {
    let depth = patterns
        .iter()
        .map(|p| p.split('.').count())
        .max()
        .unwrap_or(0);
    covered_within(patterns, subject, depth)
}

fn covered_within(patterns: &[String], subject: &str, depth: usize) -> bool {
    if patterns.iter().any(|p| covers(p, subject)) {
        return true;
    }
    let Some(stem) = subject.strip_suffix('>') else {
        return false;
    };
    // Past the longest pattern's length only a `>` pattern can match, and
    // that would have covered `subject` above.
    if subject.split('.').count() > depth {
        return false;
    }
    covered_within(patterns, &format!("{stem}*"), depth)
        && covered_within(patterns, &format!("{stem}*.>"), depth)
}

/// The subjects of `required` that `patterns` (a stream's subjects) do not
/// cover, in order: empty when the stream captures all of them.
pub fn missing_subjects(patterns: &[String], required: &[String]) -> Vec<String> {
    required
        .iter()
        .filter(|r| !covered_by(patterns, r))
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn wildcards_cover_as_nats_matches() {
        for (p, s, want) in [
            ("tspi.>", "tspi.geocentric.*", true),
            ("tspi.>", "tspi", false),
            ("tspi.>", "tspi.>", true),
            (">", "anything.at.all", true),
            ("*.geocentric.*", "tspi.geocentric.*", true),
            ("tspi.geocentric.*", "tspi.geocentric.12", true),
            ("tspi.geocentric.*", "tspi.geocentric.>", false),
            ("tspi.geocentric.*", "tspi.geocentric", false),
            ("tspi.geocentric", "tspi.geocentric.*", false),
            ("tspi.*", "tspi.geocentric.*", false),
            ("tspi.geocentric.12", "tspi.geocentric.*", false),
            ("tags.>", "tspi.spherical.*", false),
        ] {
            assert_eq!(covers(p, s), want, "{p} covers {s}");
        }
    }

    #[test]
    fn a_union_can_cover_what_no_single_pattern_does() {
        assert!(covered_by(&v(&["a.*", "a.*.>"]), "a.>"));
        assert!(covered_by(&v(&["a.*", "a.*.*", "a.*.*.>"]), "a.>"));
        assert!(!covered_by(&v(&["a.*", "a.*.*"]), "a.>"));
        assert!(!covered_by(&v(&[]), "a.>"));
    }

    #[test]
    fn the_toolkit_stream_captures_the_appliance_and_other_does_not() {
        let need = v(&["tspi.geocentric.*", "tspi.spherical.*"]);
        assert!(missing_subjects(&v(&["tspi.>", "tags.>"]), &need).is_empty());
        assert!(missing_subjects(&v(&["tspi.geocentric.>", "tspi.spherical.>"]), &need).is_empty());
        assert_eq!(missing_subjects(&v(&["other.>"]), &need), need);
        assert_eq!(
            missing_subjects(&v(&["tspi.geocentric.*"]), &need),
            v(&["tspi.spherical.*"])
        );
    }

    #[test]
    fn differences_name_each_key() {
        let ours = stream::Config {
            name: "TSPI".into(),
            subjects: v(&["tspi.geocentric.>", "tspi.spherical.>"]),
            duplicate_window: std::time::Duration::from_secs(30),
            allow_batch_publish: true,
            ..Default::default()
        };
        let theirs = stream::Config {
            subjects: v(&["tags.>", "tspi.>"]),
            duplicate_window: std::time::Duration::from_secs(120),
            ..ours.clone()
        };
        let d = differences(&theirs, &ours);
        let keys: Vec<_> = d.iter().map(|d| d.key).collect();
        assert_eq!(keys, ["subjects", "duplicate_window"]);
        assert_eq!(d[1].theirs, "120s");
        assert_eq!(d[1].ours, "30s");
        assert!(differences(&ours, &ours).is_empty());
    }

    fn token() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_owned()),
            Just("b".to_owned()),
            Just("*".to_owned())
        ]
    }

    fn pattern() -> impl Strategy<Value = String> {
        (prop::collection::vec(token(), 1..4), any::<bool>()).prop_map(|(mut t, full)| {
            if full {
                t.push(">".into());
            }
            t.join(".")
        })
    }

    /// Concrete subjects over the same tokens, up to five long.
    fn concrete() -> Vec<String> {
        let mut out = vec![String::new()];
        let mut all = Vec::new();
        for _ in 0..5 {
            out = out
                .iter()
                .flat_map(|p| {
                    ["a", "b", "c"].map(|t| {
                        if p.is_empty() {
                            t.to_owned()
                        } else {
                            format!("{p}.{t}")
                        }
                    })
                })
                .collect();
            all.extend(out.iter().cloned());
        }
        all
    }

    proptest! {
        /// Coverage agrees with matching: when patterns cover a subject,
        /// every concrete subject (up to five tokens) it matches is matched
        /// by one of them; when one pattern alone covers it, `covers` says so.
        #[test]
        fn coverage_agrees_with_matching(
            patterns in prop::collection::vec(pattern(), 0..4),
            subject in pattern(),
        ) {
            let subjects = concrete();
            let matches = |p: &str, s: &str| covers(p, s);
            if covered_by(&patterns, &subject) {
                for s in subjects.iter().filter(|s| matches(&subject, s)) {
                    prop_assert!(patterns.iter().any(|p| matches(p, s)), "{s} escapes {patterns:?}");
                }
            }
            for p in &patterns {
                if covers(p, &subject) {
                    for s in subjects.iter().filter(|s| matches(&subject, s)) {
                        prop_assert!(matches(p, s), "{p} misses {s} of {subject}");
                    }
                }
            }
        }
    }
}
