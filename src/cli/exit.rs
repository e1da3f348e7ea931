//! The CLI's edge: how a command's failure becomes the one message and the exit status the user
//! sees, the same for every command. 0 is success; 1 means the server refused (an unknown run
//! or task, a refused token, a taken name, an unreachable server) or the run did not succeed;
//! 2 means a usage or local input error, found before anything was sent.
//!
//! Commands return `anyhow` errors; what decides the status is the typed error inside them:
//! a [`ClientError`] (the server's answer, or none) or a [`Refusal`] a command words itself.
//! Anything else is local input.

use std::process::ExitCode;

use crate::client::ClientError;

/// Exit status 1: the server refused or the run failed.
pub const FAILED: u8 = 1;
/// Exit status 2: a usage or local input error.
pub const USAGE: u8 = 2;

/// A refusal the CLI words itself from what the server answered (a task that has no runs, a
/// run that already finished): exit status 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refusal(pub String);

/// The exit status of a failed command.
pub fn status(error: &anyhow::Error) -> u8 {
    for cause in error.chain() {
        if let Some(e) = cause.downcast_ref::<ClientError>() {
            return if e.is_local() { USAGE } else { FAILED };
        }
        // The server refused or could not be reached (an agent's calls).
        if cause.is::<Refusal>() || cause.is::<kiln_api::control::ControlError>() {
            return FAILED;
        }
    }
    USAGE
}

/// The error and its causes on one line, each said once: a cause whose text an outer message
/// already contains (`cannot read x: No such file…` over the `io::Error` it quotes) is left out.
pub fn message(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// Prints `error` and returns its exit status.
pub fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("kiln: {}", message(error));
    ExitCode::from(status(error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn a_cause_is_never_said_twice() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let text = io.to_string();
        let error =
            anyhow::Error::new(ClientError::ReadFile { path: "ctx.tgz".into(), source: io });
        assert_eq!(message(&error), format!("cannot read ctx.tgz: {text}"));
        let error = Err::<(), _>(std::io::Error::from(std::io::ErrorKind::NotFound))
            .context("reading the token")
            .unwrap_err();
        assert_eq!(message(&error), format!("reading the token: {text}"));
    }

    #[test]
    fn refusals_exit_1_and_local_errors_exit_2() {
        let refused = anyhow::Error::new(ClientError::RunNotFound { id: "ka9".into() });
        assert_eq!(status(&refused), FAILED);
        assert_eq!(status(&refused.context("showing the run")), FAILED);
        let unreachable = ClientError::Unreachable { server: "s".into(), reason: "r".into() };
        assert_eq!(status(&unreachable.into()), FAILED);
        assert_eq!(status(&Refusal("task t has no runs yet".into()).into()), FAILED);
        assert_eq!(status(&anyhow::anyhow!("cannot find the task file x")), USAGE);
        let config = ClientError::ConfigRead { path: "c.toml".into(), reason: "bad".into() };
        assert_eq!(status(&config.into()), USAGE);
    }
}
