//! What the host machine has: memory available to a new allocation, and this process's peak
//! resident set. Linux (`/proc`); elsewhere both are unknown (`None`).

/// Memory the kernel can hand out without swapping (`MemAvailable` in /proc/meminfo).
pub fn available_memory() -> Option<u64> {
    meminfo_kib(
        &std::fs::read_to_string("/proc/meminfo").ok()?,
        "MemAvailable:",
    )
}

/// Peak resident set size from /proc/self/status (VmHWM).
pub fn peak_rss_bytes() -> Option<u64> {
    meminfo_kib(
        &std::fs::read_to_string("/proc/self/status").ok()?,
        "VmHWM:",
    )
}

/// The value of a `Key:   123 kB` line, in bytes.
fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_kib_lines() {
        let text = "MemTotal:  100 kB\nMemAvailable:   2048 kB\n";
        assert_eq!(super::meminfo_kib(text, "MemAvailable:"), Some(2048 * 1024));
        assert_eq!(super::meminfo_kib(text, "VmHWM:"), None);
    }

    #[test]
    fn this_machine_reports_memory() {
        if cfg!(target_os = "linux") {
            assert!(super::available_memory().is_some_and(|b| b > 0));
            assert!(super::peak_rss_bytes().is_some_and(|b| b > 0));
        }
    }
}
