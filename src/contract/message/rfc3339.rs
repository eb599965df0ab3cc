//! Pure: the one RFC 3339 parser (the `time` crate's), for every time text
//! the appliance reads: `recv_iso`, tag and command timestamps, replay start
//! times. Stages add only their own range rules around it.

use time::format_description::well_known::Rfc3339;

/// Why a text is not an RFC 3339 time: the part that is wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not an RFC 3339 time ({why})")]
pub struct Rfc3339Error {
    pub why: &'static str,
}

/// RFC 3339 text (`T`, `t` or a space between date and time; `Z`, `z` or a
/// numeric offset; any number of fraction digits, those past nanoseconds
/// truncated) to nanoseconds since the Unix epoch (negative before 1970).
pub fn parse_rfc3339_ns(text: &str) -> Result<i128, Rfc3339Error> {
    let t = if text.as_bytes().get(10) == Some(&b' ') {
        // RFC 3339 §5.6 allows a space here "for readability"; the time
        // crate wants the letter.
        let mut s = text.to_owned();
        s.replace_range(10..11, "T");
        time::OffsetDateTime::parse(&s, &Rfc3339)
    } else {
        time::OffsetDateTime::parse(text, &Rfc3339)
    };
    t.map(time::OffsetDateTime::unix_timestamp_nanos)
        .map_err(|e| Rfc3339Error { why: why(&e) })
}

fn why(e: &time::error::Parse) -> &'static str {
    use time::error::{Parse, ParseFromDescription as D, TryFromParsed as P};
    match e {
        Parse::ParseFromDescription(D::InvalidComponent(c)) => c,
        Parse::TryFromParsed(P::ComponentRange(r)) => r.name(),
        _ => "expected YYYY-MM-DDTHH:MM:SS[.fraction] then Z or an offset like +02:00",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_errors() {
        let base = 1_700_000_000_000_000_000i128; // 2023-11-14T22:13:20Z
        assert_eq!(parse_rfc3339_ns("2023-11-14T22:13:20Z"), Ok(base));
        assert_eq!(parse_rfc3339_ns("2023-11-14t22:13:20z"), Ok(base));
        assert_eq!(parse_rfc3339_ns("2023-11-14 22:13:20Z"), Ok(base));
        assert_eq!(
            parse_rfc3339_ns("2023-11-15T00:13:20.000000001+02:00"),
            Ok(base + 1)
        );
        assert_eq!(parse_rfc3339_ns("1969-12-31T23:59:59Z"), Ok(-1_000_000_000));
        for bad in [
            "",
            "2023-11-14",
            "2023-02-29T00:00:00Z",
            "12345",
            "2023-11-14T22:13:20",
        ] {
            assert!(parse_rfc3339_ns(bad).is_err(), "{bad:?}");
        }
        let e = parse_rfc3339_ns("2023-13-01T00:00:00Z").unwrap_err();
        assert!(e.to_string().contains("month"), "{e}");
    }
}
