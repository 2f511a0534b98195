//! Reading a process's resident memory from `/proc`.

use crate::Error;

/// `VmRSS` in KiB from the text of `/proc/PID/status`, if present.
pub fn parse_vm_rss_kib(status: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix("VmRSS:")?;
        let mut words = rest.split_whitespace();
        let n: u64 = words.next()?.parse().ok()?;
        // The kernel always says "kB"; anything else means we misread the file.
        (words.next() == Some("kB")).then_some(n)
    })
}

/// The current `VmRSS` of `pid` in KiB.
pub fn vm_rss_kib(pid: u32) -> Result<u64, Error> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(format!("read {path}"), e))?;
    parse_vm_rss_kib(&text).ok_or_else(|| Error::Protocol(format!("no VmRSS line in {path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    // The VmRSS line is found among the others and its kB value returned.
    #[test]
    fn finds_vm_rss() {
        let s = "Name:\ttwemproxy\nVmPeak:\t  99999 kB\nVmRSS:\t    4242 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss_kib(s), Some(4242));
    }

    // A kernel thread has no VmRSS line: None, not 0.
    #[test]
    fn missing_line_is_none() {
        assert_eq!(parse_vm_rss_kib("Name:\tkthreadd\nState:\tS\n"), None);
    }

    // A value in an unexpected unit is not taken as KiB.
    #[test]
    fn wrong_unit_is_none() {
        assert_eq!(parse_vm_rss_kib("VmRSS:\t12 MB\n"), None);
    }

    // Our own process has a readable, non-zero RSS.
    #[test]
    fn own_process_has_rss() {
        assert!(vm_rss_kib(std::process::id()).unwrap() > 0);
    }
}
