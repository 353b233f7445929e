//! `shrinkctl`: look at and steer a live process through its control socket
//! (`shrinker::control`), and the demo that shows what the project is for.
//!
//! The binary is a thin command line over this library, so that every
//! screen is a function of its inputs and tested as such: [`render`] (the
//! tables, `top`), [`client`] (the JSON-lines client), [`host`] (the host
//! program of `cargo run -p shrinkctl --example host`) and [`demo`].

pub mod client;
pub mod demo;
pub mod host;
pub mod render;

/// Parse a byte count: a number with an optional binary suffix `K`, `M`,
/// `G` (`KiB`, `MiB`, `GiB` and lower case accepted).
///
/// # Errors
///
/// A message for anything else, or an overflow.
///
/// ```
/// assert_eq!(shrinkctl::parse_bytes("64M"), Ok(64 << 20));
/// assert_eq!(shrinkctl::parse_bytes("4096"), Ok(4096));
/// assert!(shrinkctl::parse_bytes("x").is_err());
/// ```
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let lower = t.to_ascii_lowercase();
    let lower = lower.trim_end_matches("ib").trim_end_matches('b');
    let (num, shift) = match lower.chars().last() {
        Some('k') => (&lower[..lower.len() - 1], 10),
        Some('m') => (&lower[..lower.len() - 1], 20),
        Some('g') => (&lower[..lower.len() - 1], 30),
        Some('t') => (&lower[..lower.len() - 1], 40),
        _ => (lower, 0),
    };
    let n: u64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count (e.g. 4096, 64K, 16M, 1G)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Bytes in a short human form: `812 B`, `4.0 KiB`, `63.9 MiB`, `1.2 GiB`.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
