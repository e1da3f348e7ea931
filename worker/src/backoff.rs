//! The engine's retry delay (§8.5): 250 ms × 2^attempt, capped at 5 s — used between push
//! attempts and remote-context download attempts, as ACR does for login, push and downloads.

use std::time::Duration;

const BASE: Duration = Duration::from_millis(250);
const CAP: Duration = Duration::from_secs(5);

/// The delay after failed attempt number `attempt` (0 for the first failure).
pub fn delay(attempt: u32) -> Duration {
    BASE.saturating_mul(1u32.checked_shl(attempt).unwrap_or(u32::MAX)).min(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_and_caps() {
        assert_eq!(delay(0), Duration::from_millis(250));
        assert_eq!(delay(1), Duration::from_millis(500));
        assert_eq!(delay(4), Duration::from_secs(4));
        assert_eq!(delay(5), Duration::from_secs(5));
        assert_eq!(delay(31), Duration::from_secs(5));
        assert_eq!(delay(u32::MAX), Duration::from_secs(5));
    }
}
