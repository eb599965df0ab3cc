//! Pure: how a failed batch write is retried. The database edge classifies
//! each error by its SQLSTATE (or as lost contact when it has none); the
//! batcher acts on the class.

/// Whether writing the same rows again can succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// The server or the connection failed, not the rows: write the same
    /// batch again after a backoff (reconnecting first).
    Transient,
    /// PostgreSQL refused the rows themselves and will again: narrow the
    /// batch down to the refused rows and send those to the rejects table.
    Permanent,
}

/// A batch write that did not commit, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct CommitFailure {
    pub retry: Retry,
    /// What the server (or the connection) said, with the SQLSTATE when
    /// there is one; this becomes the reject's reason.
    pub reason: String,
}

/// The retry class of a SQLSTATE (PostgreSQL, Appendix A "Error Codes").
///
/// Permanent, the data's fault: `22` data exception (a value out of a
/// column's range, bad encoding), `23` integrity constraint violation (a
/// CHECK, NOT NULL or foreign key; unique keys are covered by ON CONFLICT),
/// `44` WITH CHECK OPTION violation, `P0` an exception raised by a
/// PL/pgSQL trigger or function (`RAISE`).
///
/// Everything else is transient: `08` connection, `40` serialization
/// failure or deadlock, `53` insufficient resources (disk full, too many
/// connections), `55` lock not available, `57` operator intervention
/// (shutdown, cancel), `58` I/O error, and also `42` (an undefined table or
/// a missing privilege) and unknown classes: the schema or the server is
/// wrong, not the rows, so rejecting them all would empty the archive into
/// the rejects table while an operator could fix the cause. Those stall the
/// stream and say why in the log, as before.
pub fn classify_sqlstate(code: &str) -> Retry {
    match code.get(..2) {
        Some("22" | "23" | "44" | "P0") => Retry::Permanent,
        _ => Retry::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        for c in [
            "22003", "22P02", "23514", "23502", "23503", "44000", "P0001",
        ] {
            assert_eq!(classify_sqlstate(c), Retry::Permanent, "{c}");
        }
        for c in [
            "08006", "08003", "40001", "40P01", "53100", "53300", "55P03", "57P01", "57014",
            "58030", "42P01", "42501", "XX000", "", "2",
        ] {
            assert_eq!(classify_sqlstate(c), Retry::Transient, "{c}");
        }
    }
}
