//! Asking before a deletion, as az does: on a terminal the user answers y/n; elsewhere nobody
//! can answer, so `--yes` is required.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use anyhow::{Context as _, bail};

/// Whether to delete the `what` (`task`, `agent`) named `name`: `yes`, or the user said so. A
/// "no" is said on stderr and is no error.
pub(super) fn delete_confirmed(what: &str, name: &str, yes: bool) -> anyhow::Result<bool> {
    if yes {
        return Ok(true);
    }
    if !std::io::stdin().is_terminal() {
        bail!("deleting {what} {name} needs confirmation: pass --yes");
    }
    eprint!("Are you sure you want to delete the {what} '{name}'? (y/n): ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer).context("reading the answer")?;
    let confirmed = matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes");
    if !confirmed {
        let mut chars = what.chars();
        let capitalised: String =
            chars.next().into_iter().flat_map(char::to_uppercase).chain(chars).collect();
        eprintln!("{capitalised} {name} was not deleted.");
    }
    Ok(confirmed)
}
