//! Progress of long work (`scan`) on stderr, only when stderr is a terminal and not `--quiet`,
//! so that what stdout carries stays clean.

/// Where progress goes, if anywhere.
pub struct Progress {
    terminal: bool,
}

impl Progress {
    /// Progress on stderr when it is a terminal and `quiet` is not set.
    pub fn on_stderr(quiet: bool) -> Self {
        Self {
            terminal: !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    /// `done` of `total` workspaces are checked.
    pub fn workspaces(&self, done: usize, total: usize) {
        if self.terminal {
            eprint!("\rscanned {done}/{total} workspaces");
        }
    }

    /// The work is over: ends the progress line.
    pub fn finish(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}
