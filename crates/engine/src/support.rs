//! Figures as people read them, in log lines and on the programs' screens. (Logging set-up and
//! signals are the programs' business: the `shoal-cli` crate.)

/// Bytes as a short human figure: `512 KiB`, `1.00 GiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.2} {}", UNITS[u])
    }
}
