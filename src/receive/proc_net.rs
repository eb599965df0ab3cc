//! What the kernel says about UDP sockets, from `/proc/net/udp` and
//! `/proc/net/udp6`: our sockets' drop counters, and who holds a port.
//!
//! **Holders.** When a port is taken (`socket.rs` refuses to share it),
//! the rows whose local port is that port give the holding sockets' inodes
//! and owners (`uid`); the process holding each is found by reading the
//! links of `/proc/<pid>/fd/*`, where a socket reads `socket:[<inode>]`.
//! Only processes of the same user (or all, as root) can be read; a holder
//! found in the table but in no readable process is named by its uid and
//! inode. Bounded: at most [`PROCESSES_MAX`] processes and
//! [`FDS_PER_PROCESS_MAX`] descriptors each are looked at, once, at start.
//!
//! **Drops.**
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
const LOCAL_COLUMN: usize = 1;
const UID_COLUMN: usize = 7;
const INODE_COLUMN: usize = 9;
const DROPS_COLUMN: usize = 12;

/// Processes looked at, at most, when naming a port's holder.
pub(crate) const PROCESSES_MAX: usize = 1 << 16;
/// Descriptors of one process looked at, at most.
pub(crate) const FDS_PER_PROCESS_MAX: usize = 1 << 16;
/// Holders named in one message, at most.
const HOLDERS_NAMED_MAX: usize = 4;
/// Characters of a holder's command line kept.
pub(crate) const COMMAND_LEN_MAX: usize = 160;

/// One socket row of `/proc/net/udp{,6}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SocketRow {
    /// Local port (the hex after the colon of `local_address`).
    pub(crate) port: u16,
    pub(crate) uid: u32,
    pub(crate) inode: u64,
    pub(crate) drops: u64,
}

/// One socket row; `None` for the header or a row that does not parse.
pub(crate) fn parse_socket_row(line: &str) -> Option<SocketRow> {
    let (mut port, mut uid, mut inode) = (None, None, None);
    for (i, field) in line.split_ascii_whitespace().enumerate() {
        match i {
            LOCAL_COLUMN => {
                let (_, p) = field.rsplit_once(':')?;
                port = Some(u16::from_str_radix(p, 16).ok()?);
            }
            UID_COLUMN => uid = Some(field.parse().ok()?),
            INODE_COLUMN => inode = Some(field.parse().ok()?),
            DROPS_COLUMN => {
                return Some(SocketRow {
                    port: port?,
                    uid: uid?,
                    inode: inode?,
                    drops: field.parse().ok()?,
                });
            }
            _ => {}
        }
    }
    None
}

/// `(inode, drops)` of one socket row; `None` for the header or a row that
/// does not parse.
pub(crate) fn parse_row(line: &str) -> Option<(u64, u64)> {
    parse_socket_row(line).map(|r| (r.inode, r.drops))
}

/// The inode a `/proc/<pid>/fd/<n>` link names, when it is a socket's
/// (`socket:[12345]`).
pub(crate) fn socket_inode(link: &str) -> Option<u64> {
    link.strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// A process's command line for a message: `/proc/<pid>/cmdline`'s
/// arguments joined by spaces, at most [`COMMAND_LEN_MAX`] characters (an
/// ellipsis marks a cut); `[comm]` when it has none (a kernel thread, a
/// zombie).
pub(crate) fn describe_command(cmdline: &[u8], comm: &str) -> String {
    let text = String::from_utf8_lossy(cmdline);
    let args: Vec<&str> = text.split('\0').filter(|a| !a.is_empty()).collect();
    if args.is_empty() {
        return format!("[{}]", comm.trim());
    }
    let joined = args.join(" ");
    match joined.char_indices().nth(COMMAND_LEN_MAX) {
        Some((cut, _)) => format!("{}...", &joined[..cut]),
        None => joined,
    }
}

/// The rows of both files whose local port is `port` (a missing or
/// unreadable file gives none).
pub(crate) fn rows_on_port(port: u16) -> Vec<SocketRow> {
    PATHS
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|text| {
            text.lines()
                .filter_map(parse_socket_row)
                .filter(|r| r.port == port)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The processes (pid, command) holding any of `inodes`, by pid; those
/// whose descriptors cannot be read are not found.
pub(crate) fn processes_holding(inodes: &[u64]) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in procs.take(PROCESSES_MAX).flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds.take(FDS_PER_PROCESS_MAX).flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .ok()
                .and_then(|l| l.to_str().and_then(socket_inode))
                .is_some_and(|inode| inodes.contains(&inode))
        });
        if holds {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            found.push((pid, describe_command(&cmdline, &comm)));
        }
    }
    found.sort_unstable();
    found
}

/// Who holds `port`, for an error message: `pid 1234 (tspi ingest ...)`,
/// several joined by commas; else the sockets' owners when no process
/// could be read; else `another socket`.
pub(crate) fn describe_holders(port: u16) -> String {
    let rows = rows_on_port(port);
    let inodes: Vec<u64> = rows.iter().map(|r| r.inode).filter(|&i| i != 0).collect();
    describe(&rows, &processes_holding(&inodes))
}

/// [`describe_holders`] from what was read.
pub(crate) fn describe(rows: &[SocketRow], processes: &[(u32, String)]) -> String {
    if !processes.is_empty() {
        let mut named: Vec<String> = processes
            .iter()
            .take(HOLDERS_NAMED_MAX)
            .map(|(pid, cmd)| format!("pid {pid} ({cmd})"))
            .collect();
        if processes.len() > HOLDERS_NAMED_MAX {
            named.push(format!(
                "{} more processes",
                processes.len() - HOLDERS_NAMED_MAX
            ));
        }
        return named.join(", ");
    }
    match rows.first() {
        Some(r) => format!(
            "a socket of uid {} (inode {}; unknown holder: its process cannot be read by this user)",
            r.uid, r.inode
        ),
        None => "another socket (unknown holder)".to_owned(),
    }
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
    fn parses_ports_owners_and_inodes() {
        let rows: Vec<SocketRow> = SAMPLE_V4.lines().filter_map(parse_socket_row).collect();
        assert_eq!(
            rows,
            [
                SocketRow {
                    port: 0xD610,
                    uid: 0,
                    inode: 86856,
                    drops: 48
                },
                SocketRow {
                    port: 68,
                    uid: 0,
                    inode: 17,
                    drops: 0
                },
            ]
        );
        let v6: Vec<SocketRow> = SAMPLE_V6.lines().filter_map(parse_socket_row).collect();
        assert_eq!(v6[0].port, 0xDAAB);
        assert_eq!(v6[0].inode, 86860);
        assert_eq!(parse_socket_row(" 1: 0100007F 00000000:0000 07"), None);
        assert_eq!(
            parse_socket_row(" 1: 0100007F:XYZ0 00000000:0000 07 0:0 0:0 0 1000 0 5 2 0 0"),
            None
        );
    }

    #[test]
    fn socket_links_and_command_lines() {
        assert_eq!(socket_inode("socket:[86856]"), Some(86856));
        assert_eq!(socket_inode("pipe:[86856]"), None);
        assert_eq!(socket_inode("socket:[x]"), None);
        assert_eq!(socket_inode("/dev/null"), None);
        assert_eq!(
            describe_command(b"tspi\0ingest\0--udp\x000.0.0.0:5000\0", "tspi\n"),
            "tspi ingest --udp 0.0.0.0:5000"
        );
        assert_eq!(describe_command(b"", "kworker/0:1\n"), "[kworker/0:1]");
        let long = vec![b'a'; 500];
        let d = describe_command(&long, "a");
        assert_eq!(d.chars().count(), COMMAND_LEN_MAX + 3);
        assert!(d.ends_with("..."));
        // Cut on a character boundary.
        let wide = "é".repeat(300);
        assert!(describe_command(wide.as_bytes(), "x").ends_with("é..."));
    }

    #[test]
    fn holders_are_named_by_pid_then_by_owner() {
        let row = SocketRow {
            port: 5000,
            uid: 1001,
            inode: 77,
            drops: 0,
        };
        assert_eq!(
            describe(&[row], &[(1234, "tspi ingest".into())]),
            "pid 1234 (tspi ingest)"
        );
        let many: Vec<(u32, String)> = (1..=6).map(|p| (p, "x".to_owned())).collect();
        assert_eq!(
            describe(&[row], &many),
            "pid 1 (x), pid 2 (x), pid 3 (x), pid 4 (x), 2 more processes"
        );
        assert!(describe(&[row], &[]).contains("uid 1001 (inode 77; unknown holder"));
        assert_eq!(describe(&[], &[]), "another socket (unknown holder)");
    }

    /// A socket this process holds is found, with this process's pid.
    #[test]
    fn live_holder_is_this_process() {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = s.local_addr().unwrap().port();
        let inode = super::super::socket::inode(&s).unwrap();
        let rows = rows_on_port(port);
        assert!(rows.iter().any(|r| r.inode == inode), "{rows:?}");
        let d = describe_holders(port);
        assert!(
            d.starts_with(&format!("pid {} (", std::process::id())),
            "{d}"
        );
    }

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
