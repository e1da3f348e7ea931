//! Platform names (`os/arch[/variant]`, OCI's spelling) and when two name the same platform.
//! The dispatcher matches a run's platform with what agents declare, and the worker an image's
//! platform with the run's, by this one rule.

/// Two platforms are one: same OS and architecture, and the same variant when both name one
/// (`linux/arm64` is `linux/arm64/v8`). Case is ignored (ACR's REST API writes `Linux`).
pub fn matches(a: &str, b: &str) -> bool {
    let split = |p: &str| -> Vec<String> { p.split('/').map(str::to_ascii_lowercase).collect() };
    let (a, b) = (split(a), split(b));
    a.len() >= 2
        && b.len() >= 2
        && a[..2] == b[..2]
        && match (a.get(2), b.get(2)) {
            (Some(x), Some(y)) => x == y,
            _ => true,
        }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_match_by_os_arch_and_variant_when_both_name_one() {
        assert!(matches("linux/amd64", "linux/amd64"));
        assert!(matches("linux/arm64", "linux/arm64/v8"));
        assert!(matches("Linux/ARM64/v8", "linux/arm64"));
        assert!(!matches("linux/arm/v7", "linux/arm/v6"));
        assert!(!matches("linux/amd64", "windows/amd64"));
        assert!(!matches("linux/amd64", "linux/arm64"));
        assert!(!matches("linux", "linux/amd64"));
    }
}
