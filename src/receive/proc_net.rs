//! The kernel's per-socket drop counters, from `/proc/net/udp` and
//! `/proc/net/udp6`.
//!
//! Their last column, `drops`, is the socket's `sk_drops`: datagrams the
//! kernel discarded on their way into that socket's receive queue because
//! the queue was full (`SO_RCVBUF`, see `net.core.rmem_max`), UDP memory was
//! under pressure (`net.ipv4.udp_mem`), or a socket filter refused them.
//! A worker never sees those datagrams, so they are not in
//! [`super::ReceiverCounts`]. The files list the sockets of the reading
//! process's network namespace; a row is ours when its `inode` column is
//! the inode `fstat` gives for one of our socket descriptors.

use std::io;

/// Files read, IPv4 then IPv6.
pub(crate) const PATHS: [&str; 2] = ["/proc/net/udp", "/proc/net/udp6"];

/// Column numbers (0-based, whitespace-separated) in both files:
/// `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt
/// uid timeout inode ref pointer drops`.
const INODE_COLUMN: usize = 9;
const DROPS_COLUMN: usize = 12;

/// `(inode, drops)` of one socket row; `None` for the header or a row that
/// does not parse.
pub(crate) fn parse_row(line: &str) -> Option<(u64, u64)> {
    let mut inode = None;
    for (i, field) in line.split_ascii_whitespace().enumerate() {
        match i {
            INODE_COLUMN => inode = Some(field.parse().ok()?),
            DROPS_COLUMN => return Some((inode?, field.parse().ok()?)),
            _ => {}
        }
    }
    None
}

/// Sum of `drops` over the rows whose inode is in `inodes`.
pub(crate) fn sum_drops(text: &str, inodes: &[u64]) -> u64 {
    text.lines()
        .filter_map(parse_row)
        .filter(|(inode, _)| inodes.contains(inode))
        .map(|(_, drops)| drops)
        .sum()
}

/// Read both files and sum the drops of `inodes`. A missing IPv6 file (IPv6
/// disabled) counts as no rows.
pub(crate) fn read_drops(inodes: &[u64]) -> io::Result<u64> {
    let mut total = 0;
    for (i, path) in PATHS.iter().enumerate() {
        match std::fs::read_to_string(path) {
            Ok(text) => total += sum_drops(&text, inodes),
            Err(e) if i == 1 && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io::Error::new(e.kind(), format!("{path}: {e}"))),
        }
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Captured on the development box (kernel 6.18): the headers, a v4
    /// socket with a 1 KiB `SO_RCVBUF` that dropped 48 of 50 datagrams, and
    /// a v6 socket; the second v4 row and the v6 drops (3, was 0) are edited
    /// in.
    const SAMPLE_V4: &str = concat!(
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops            \n",
        " 6215: 0100007F:D610 00000000:0000 07 00000000:00000680 00:00000000 00000000     0        0 86856 2 000000008c6563ae 48        \n",
        "  456: 00000000:0044 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 17 2 000000001c0a2b3d 0        \n",
    );
    const SAMPLE_V6: &str = concat!(
        "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n",
        " 7394: 00000000000000000000000001000000:DAAB 00000000000000000000000000000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 86860 2 0000000044ee3640 3\n",
    );

    #[test]
    fn parses_rows_and_skips_headers() {
        let mut rows = SAMPLE_V4.lines().filter_map(parse_row);
        assert_eq!(rows.next(), Some((86856, 48)));
        assert_eq!(rows.next(), Some((17, 0)));
        assert_eq!(rows.next(), None);
        assert_eq!(
            SAMPLE_V6.lines().filter_map(parse_row).collect::<Vec<_>>(),
            [(86860, 3)]
        );
        assert_eq!(parse_row("1: too short"), None);
    }

    #[test]
    fn sums_only_our_inodes() {
        assert_eq!(sum_drops(SAMPLE_V4, &[86856, 17]), 48);
        assert_eq!(sum_drops(SAMPLE_V4, &[17]), 0);
        assert_eq!(sum_drops(SAMPLE_V6, &[86860, 86856]), 3);
        assert_eq!(sum_drops(SAMPLE_V4, &[]), 0);
    }

    /// The live file lists a socket we open, under the inode fstat gives.
    #[test]
    fn live_file_lists_our_socket() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let inode = super::super::socket::inode(&s).unwrap();
        let text = std::fs::read_to_string(PATHS[0]).unwrap();
        let row = text
            .lines()
            .filter_map(parse_row)
            .find(|(i, _)| *i == inode);
        assert_eq!(row, Some((inode, 0)), "inode {inode} not in {}", PATHS[0]);
        assert_eq!(read_drops(&[inode]).unwrap(), 0);
    }
}
