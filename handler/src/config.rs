//! The error of a configuration value that cannot be used, shared by every module that reads
//! configuration (`settings`, and the alert channels' settings in `notify`). A leaf: it sits
//! below all of them, so that none has to import another to say a variable is wrong.

/// A configuration value that cannot be used: the variable and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{variable}: {message}")]
pub struct ConfigError {
    pub variable: &'static str,
    pub message: String,
}

impl ConfigError {
    /// `variable` cannot be used, because of `message`.
    pub fn new(variable: &'static str, message: impl Into<String>) -> Self {
        Self {
            variable,
            message: message.into(),
        }
    }
}
