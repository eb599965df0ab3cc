//! Minimal hex helpers (the decode tool's `--hex` input and test vectors).

/// A byte that is not a hex digit, or an odd number of digits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HexError {
    #[error("character {ch:?} at column {col} is not a hex digit")]
    Digit { ch: char, col: usize },
    #[error("odd number of hex digits ({len})")]
    Odd { len: usize },
}

fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decode hex digits; ASCII whitespace between digits is ignored, so
/// `c1 04 01 f5` and `c10401f5` both work.
pub fn decode(text: &str) -> Result<Vec<u8>, HexError> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<u8> = None;
    let mut digits = 0usize;
    for (col, ch) in text.char_indices() {
        if ch.is_ascii_whitespace() {
            continue;
        }
        let n = u8::try_from(ch)
            .ok()
            .and_then(nibble)
            .ok_or(HexError::Digit { ch, col: col + 1 })?;
        digits += 1;
        match high.take() {
            None => high = Some(n),
            Some(h) => out.push(h << 4 | n),
        }
    }
    if high.is_some() {
        return Err(HexError::Odd { len: digits });
    }
    Ok(out)
}

/// Lower-case hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_whitespace() {
        assert_eq!(decode("c1 04\t01F5").unwrap(), vec![0xc1, 0x04, 0x01, 0xf5]);
        assert_eq!(encode(&[0xc1, 0x04, 0x0a]), "c1040a");
        assert_eq!(decode(""), Ok(vec![]));
    }

    #[test]
    fn errors_say_where() {
        assert_eq!(decode("c1zz"), Err(HexError::Digit { ch: 'z', col: 3 }));
        assert_eq!(decode("c10"), Err(HexError::Odd { len: 3 }));
        assert!(matches!(
            decode("c1é0"),
            Err(HexError::Digit { ch: 'é', col: 3 })
        ));
    }
}
