//! Edge: this machine's host name, for the snapshot subject and body.

/// The host name from `gethostname(2)`, or `unknown` if it fails or is
/// empty. Not sanitised: [`super::metrics_subject`] does that.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole
    // call, and gethostname writes at most that many.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_owned();
    }
    // POSIX leaves a truncated name without its NUL: stop at the buffer end.
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..len]).trim().to_owned();
    if name.is_empty() {
        "unknown".to_owned()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn hostname_is_not_empty() {
        let h = super::hostname();
        assert!(!h.is_empty());
        assert!(!h.contains('\0'));
    }
}
