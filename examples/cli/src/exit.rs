//! [`Exit`] codes and the [`Fatal`] errors that end a command.

use std::fmt;
use std::process::ExitCode;

/// How a command ended; the numbers are documented in `--help` and the README.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Everything asked for was done.
    Ok,
    /// Some of it failed (the output says what).
    Failed,
    /// A flag, variable, secret or file is unusable.
    Usage,
    /// The request does not verify.
    Unverified,
    /// Nothing matches (`dlq show`).
    NotFound,
    /// Ctrl-C stopped the command cleanly.
    Interrupted,
}

impl Exit {
    pub(crate) const fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Failed => 1,
            Self::Usage => 2,
            Self::Unverified => 3,
            Self::NotFound => 4,
            Self::Interrupted => 130,
        }
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit.code())
    }
}

/// An error that ends a command: what to print and the exit code.
#[derive(Debug)]
pub(crate) struct Fatal {
    exit: Exit,
    message: String,
}

impl Fatal {
    /// A usage or configuration error (exit 2).
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Usage,
            message: message.into(),
        }
    }

    /// A failure talking to a broker or the gateway (exit 1).
    pub(crate) fn failed(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::Failed,
            message: message.into(),
        }
    }

    /// `context` and `err` with its sources (exit 1).
    pub(crate) fn broker(context: &str, err: &(dyn std::error::Error + 'static)) -> Self {
        Self::failed(format!("{context}: {}", crate::chain(err)))
    }

    /// Nothing found (exit 4).
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self {
            exit: Exit::NotFound,
            message: message.into(),
        }
    }

    pub(crate) fn exit(&self) -> Exit {
        self.exit
    }
}

impl fmt::Display for Fatal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// A file argument: `@path` reads the file, `-` reads standard input, anything else is the
/// value itself.
pub(crate) fn read_argument(value: &str, what: &str) -> Result<Vec<u8>, Fatal> {
    if value == "-" {
        let mut out = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut out).map_err(|e| {
            Fatal::usage(format!("cannot read the {what} from standard input: {e}"))
        })?;
        return Ok(out);
    }
    match value.strip_prefix('@') {
        Some(path) => std::fs::read(path)
            .map_err(|e| Fatal::usage(format!("cannot read the {what} from {path}: {e}"))),
        None => Ok(value.as_bytes().to_vec()),
    }
}

/// A secret argument: `@path` reads it from the file (one secret, surrounding whitespace
/// trimmed), so it need not appear in the shell history or the process list.
pub(crate) fn read_secret(value: &str) -> Result<String, Fatal> {
    match value.strip_prefix('@') {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Fatal::usage(format!("cannot read the secret file {path}: {e}")))?;
            Ok(text.trim().to_owned())
        }
        None => Ok(value.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_the_documented_ones() {
        let all = [
            (Exit::Ok, 0),
            (Exit::Failed, 1),
            (Exit::Usage, 2),
            (Exit::Unverified, 3),
            (Exit::NotFound, 4),
            (Exit::Interrupted, 130),
        ];
        for (exit, code) in all {
            assert_eq!(exit.code(), code);
        }
    }

    #[test]
    fn arguments_are_literal_or_files() {
        assert_eq!(read_argument("{}", "body").unwrap(), b"{}");
        let path = std::env::temp_dir().join(format!("firefly-arg-{}", std::process::id()));
        std::fs::write(&path, "from a file\n").unwrap();
        let at = format!("@{}", path.display());
        assert_eq!(read_argument(&at, "body").unwrap(), b"from a file\n");
        assert_eq!(read_secret(&at).unwrap(), "from a file");
        std::fs::remove_file(&path).unwrap();
        let err = read_argument("@/nonexistent/firefly", "body").unwrap_err();
        assert_eq!(err.exit(), Exit::Usage);
    }
}
