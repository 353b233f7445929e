//! How many NUMA nodes: `/sys/devices/system/node/online`.

/// Number of node ids to size per-node arrays for (the kernel's
/// `nr_node_ids`): the highest online node + 1, from
/// `/sys/devices/system/node/online` (a list like `0-3,5`); 1 when the file
/// is missing or unreadable (no NUMA support, or not Linux).
pub(crate) fn online_nodes() -> usize {
    std::fs::read_to_string("/sys/devices/system/node/online")
        .ok()
        .and_then(|s| parse_node_list(&s))
        .unwrap_or(1)
}

/// Highest node in a kernel cpulist/nodelist + 1; `None` if malformed.
pub(crate) fn parse_node_list(s: &str) -> Option<usize> {
    let mut max: Option<usize> = None;
    for part in s.trim().split(',').filter(|p| !p.is_empty()) {
        let hi = match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (
                    lo.trim().parse::<usize>().ok()?,
                    hi.trim().parse::<usize>().ok()?,
                );
                if lo > hi {
                    return None;
                }
                hi
            }
            None => part.trim().parse::<usize>().ok()?,
        };
        max = Some(max.map_or(hi, |m| m.max(hi)));
    }
    max.and_then(|m| m.checked_add(1))
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn parses_kernel_node_lists() {
        assert_eq!(parse_node_list("0\n"), Some(1));
        assert_eq!(parse_node_list("0-3\n"), Some(4));
        assert_eq!(parse_node_list("0-1,3"), Some(4));
        assert_eq!(parse_node_list("2,0"), Some(3));
        assert_eq!(parse_node_list(""), None);
        assert_eq!(parse_node_list("x"), None);
        assert_eq!(parse_node_list("3-1"), None);
    }

    #[test]
    #[cfg_attr(miri, ignore)] // reads /sys
    fn this_machine_has_a_node() {
        assert!(online_nodes() >= 1);
    }
}
