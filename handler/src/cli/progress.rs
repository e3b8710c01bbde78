//! Progress of long work (`scan`) on stderr, only when stderr is a terminal and not `--quiet`,
//! so that what stdout carries stays clean and a pipeline's logs get no redraws. One line,
//! redrawn in place (`\r`, then erase the line) at most [`REDRAW`] apart, ended with a newline:
//!
//! ```text
//! subs 3/40, workspaces 1204/5000, reads 2311, throttled 12 (4s), 1m20s left
//! ```
//!
//! Only numbers are printed: nothing Azure returned reaches the terminal.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::azure::pacing::{self, Activity};
use crate::engine::{ScanObserver, ScanProgress};

/// The shortest time between two redraws (a terminal redrawn thousands of times a second
/// slows the scan and flickers).
const REDRAW: Duration = Duration::from_millis(200);

/// The longest line drawn: a line wider than the terminal wraps, and `\r` would then redraw
/// only its last part. Narrower than the classic 80 columns.
const WIDTH: usize = 79;

/// Where progress goes, if anywhere.
pub struct Progress {
    /// `None`: progress is not shown.
    line: Option<Mutex<Line>>,
}

/// What is on the terminal.
struct Line {
    /// When the workspaces were listed (the estimate of time left counts from there).
    listed: Option<Instant>,
    last_drawn: Option<Instant>,
    last: ScanProgress,
}

impl Progress {
    /// Progress on stderr when it is a terminal and `quiet` is not set.
    pub fn on_stderr(quiet: bool) -> Self {
        let shown = !quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
        Self {
            line: shown.then(|| {
                Mutex::new(Line {
                    listed: None,
                    last_drawn: None,
                    last: ScanProgress::default(),
                })
            }),
        }
    }

    /// The work is over: draws the final counts and ends the line (nothing when nothing was
    /// drawn, e.g. the list of workspaces could not be read).
    pub fn finish(&self) {
        let Some(line) = &self.line else { return };
        let line = line.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(listed) = line.listed {
            let text = describe(&line.last, &pacing::activity(), None);
            let took = format!("{text}, took {}", duration(listed.elapsed()));
            draw(&format!("{}\n", fit(&took)));
        }
    }
}

impl ScanObserver for Progress {
    fn progress(&self, progress: ScanProgress) {
        let Some(line) = &self.line else { return };
        let mut line = line.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = Instant::now();
        let listed = *line.listed.get_or_insert(now);
        line.last = progress;
        let due = line
            .last_drawn
            .is_none_or(|at| now.duration_since(at) >= REDRAW);
        if !due {
            return;
        }
        line.last_drawn = Some(now);
        let left = time_left(&progress, now.duration_since(listed));
        draw(&fit(&describe(&progress, &pacing::activity(), Some(left))));
    }
}

/// Replaces the line on stderr with `text` (errors writing progress are ignored: it is only
/// progress).
fn draw(text: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = write!(stderr, "\r\x1b[2K{text}");
    let _ = stderr.flush();
}

/// The progress line. `left` is `None` once the work is over, `Some(None)` while there is no
/// estimate yet.
fn describe(
    progress: &ScanProgress,
    activity: &Activity,
    left: Option<Option<Duration>>,
) -> String {
    let mut text = format!(
        "subs {}/{}, workspaces {}/{}, reads {}",
        progress.subscriptions_done,
        progress.subscriptions_total,
        progress.workspaces_done,
        progress.workspaces_total,
        activity.requests,
    );
    if activity.waits > 0 {
        text.push_str(&format!(
            ", throttled {} ({})",
            activity.waits,
            duration(activity.waited)
        ));
    }
    match left {
        Some(Some(left)) => text.push_str(&format!(", {} left", duration(left))),
        Some(None) => text.push_str(", estimating time left"),
        None => {}
    }
    text
}

/// At most [`WIDTH`] characters.
fn fit(text: &str) -> String {
    text.chars().take(WIDTH).collect()
}

/// The time left at the pace so far, once there is a pace to go by (a workspace done and a
/// second passed).
fn time_left(progress: &ScanProgress, elapsed: Duration) -> Option<Duration> {
    let done = progress.workspaces_done;
    let left = progress.workspaces_total.saturating_sub(done);
    if left == 0 {
        return Some(Duration::ZERO);
    }
    if done == 0 || elapsed < Duration::from_secs(1) {
        return None;
    }
    let per_workspace = elapsed.as_secs_f64() / done as f64;
    Some(Duration::from_secs_f64(per_workspace * left as f64))
}

/// `45s`, `12m05s`, `2h03m`: short enough for one line, whole seconds.
fn duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64().round() as u64;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds / 60 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(workspaces_done: usize, workspaces_total: usize) -> ScanProgress {
        ScanProgress {
            subscriptions_done: 1,
            subscriptions_total: 3,
            workspaces_done,
            workspaces_total,
        }
    }

    #[test]
    fn durations_are_short_and_whole() {
        let s = Duration::from_secs;
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_millis(4_400)), "4s");
        assert_eq!(duration(s(59)), "59s");
        assert_eq!(duration(s(60)), "1m00s");
        assert_eq!(duration(s(725)), "12m05s");
        assert_eq!(duration(s(3600 * 2 + 180 + 59)), "2h03m");
    }

    #[test]
    fn time_left_follows_the_pace_once_there_is_one() {
        let s = Duration::from_secs;
        assert_eq!(time_left(&at(0, 100), s(30)), None, "nothing done yet");
        assert_eq!(
            time_left(&at(10, 100), Duration::from_millis(500)),
            None,
            "too early to tell"
        );
        assert_eq!(time_left(&at(25, 100), s(10)), Some(s(30)));
        assert_eq!(time_left(&at(100, 100), s(40)), Some(Duration::ZERO));
        assert_eq!(time_left(&at(0, 0), Duration::ZERO), Some(Duration::ZERO));
    }

    #[test]
    fn the_line_names_every_count() {
        let quiet = Activity {
            requests: 2311,
            waits: 0,
            waited: Duration::ZERO,
        };
        assert_eq!(
            describe(&at(1204, 5000), &quiet, Some(None)),
            "subs 1/3, workspaces 1204/5000, reads 2311, estimating time left"
        );
        let throttled = Activity {
            requests: 2311,
            waits: 12,
            waited: Duration::from_millis(4_200),
        };
        assert_eq!(
            describe(
                &at(1204, 5000),
                &throttled,
                Some(Some(Duration::from_secs(80)))
            ),
            "subs 1/3, workspaces 1204/5000, reads 2311, throttled 12 (4s), 1m20s left"
        );
        assert_eq!(
            describe(&at(5000, 5000), &throttled, None),
            "subs 1/3, workspaces 5000/5000, reads 2311, throttled 12 (4s)"
        );
    }

    #[test]
    fn the_line_fits_a_narrow_terminal() {
        let huge = ScanProgress {
            subscriptions_done: 123_456,
            subscriptions_total: 123_456,
            workspaces_done: 1_234_567,
            workspaces_total: 1_234_567,
        };
        let busy = Activity {
            requests: 12_345_678,
            waits: 123_456,
            waited: Duration::from_secs(86_400),
        };
        let text = fit(&describe(
            &huge,
            &busy,
            Some(Some(Duration::from_secs(7200))),
        ));
        assert_eq!(text.chars().count(), WIDTH);
        assert!(!text.contains('\n') && !text.contains('\r'));
    }
}
