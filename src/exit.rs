//! How a command ends: its exit code ([`Exit`]) and, when it did not get its way, the
//! error it says ([`Failure`]), written to standard error in one place ([`finish`]).

use std::fmt;
use std::io::Write as _;

/// The exit codes of every command (the README's command table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done: the run completed, the file is valid, the command did what was asked.
    Ok = 0,
    /// Invalid input (a runbook or a value that fails validation), or a command refused.
    Invalid = 1,
    /// Bad usage: unknown flags, malformed flag values (as clap uses).
    Usage = 2,
    /// The run rolled back.
    RolledBack = 3,
    /// The run failed, was aborted, or waits for a person's decision.
    NeedsAPerson = 4,
}

impl From<Exit> for std::process::ExitCode {
    fn from(exit: Exit) -> Self {
        Self::from(exit as u8)
    }
}

/// What a command that did not get its way says, and its exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub exit: Exit,
    /// The whole text for standard error, its line ends included.
    text: String,
}

impl Failure {
    /// `error: MESSAGE`, exit 1.
    pub fn invalid(message: impl fmt::Display) -> Self {
        Self::error(Exit::Invalid, message)
    }

    /// `error: MESSAGE` with this exit code.
    pub fn error(exit: Exit, message: impl fmt::Display) -> Self {
        Self {
            exit,
            text: format!("error: {message}\n"),
        }
    }

    /// Text already rendered (a runbook's diagnostics), exit 1.
    pub fn rendered(text: impl Into<String>) -> Self {
        Self {
            exit: Exit::Invalid,
            text: text.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for Failure {}

/// What a command returns: how it ended, or the error to say.
pub type Outcome = Result<Exit, Failure>;

/// Says a failure on standard error (control characters escaped) and gives the exit code.
pub fn finish(outcome: Outcome) -> Exit {
    match outcome {
        Ok(exit) => exit,
        Err(failure) => {
            let _ = std::io::stderr()
                .lock()
                .write_all(crate::terminal::safe(&failure.text).as_bytes());
            failure.exit
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        let codes: Vec<u8> = [
            Exit::Ok,
            Exit::Invalid,
            Exit::Usage,
            Exit::RolledBack,
            Exit::NeedsAPerson,
        ]
        .into_iter()
        .map(|e| e as u8)
        .collect();
        assert_eq!(codes, [0, 1, 2, 3, 4]);
    }

    #[test]
    fn a_failure_says_error_and_keeps_rendered_text() {
        assert_eq!(Failure::invalid("no").to_string(), "error: no\n");
        assert_eq!(
            Failure::error(Exit::NeedsAPerson, "wait").exit,
            Exit::NeedsAPerson
        );
        assert_eq!(Failure::rendered("a:1:1: x\n").to_string(), "a:1:1: x\n");
    }
}
