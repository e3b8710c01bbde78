//! Teams cards rendered for real: the official Adaptive Cards JavaScript renderer (npm
//! `adaptivecards`, pinned in `tests/render/package.json`, installed into `.tools/render` by
//! `scripts/test-tools`) in headless Chromium (Debian's `chromium`, `/usr/bin/chromium` or
//! `CMKGUARD_CHROMIUM`). `tests/render/render.html` renders one card and writes a verdict into
//! the DOM; Chromium's `--dump-dom` prints it, and `--screenshot` takes a picture of the card.
//! Each Chromium run gets a new empty profile directory and a time limit; a run that overstays
//! is killed with its whole process group. Missing Chromium or renderer is a failure, not a
//! skip: `scripts/test` installs both.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::scratch::Scratch;

/// How long one Chromium run may take.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(60);
/// The width of the card's frame in the page plus its margins.
const WINDOW_WIDTH: u32 = 752;

/// What the renderer said about one card.
#[derive(Debug, Clone, Deserialize)]
pub struct Verdict {
    /// JSON errors and every event of the renderer's parse.
    pub errors: Vec<String>,
    /// Every event of the renderer's validation.
    pub warnings: Vec<String>,
    /// The rendered card's `innerText`.
    pub text: String,
    /// The page's height in pixels, for the screenshot.
    #[serde(default)]
    pub height: u32,
}

/// Chromium: `CMKGUARD_CHROMIUM`, else `/usr/bin/chromium`.
pub fn chromium() -> PathBuf {
    let path = std::env::var_os("CMKGUARD_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.is_file(),
        "Chromium is not installed at {}: run scripts/test-tools (it installs Debian's chromium) \
         or set CMKGUARD_CHROMIUM",
        path.display()
    );
    path
}

/// The renderer's bundle under `.tools/render` (or `CMKGUARD_TOOLS/render`).
pub fn renderer() -> PathBuf {
    let tools = std::env::var_os("CMKGUARD_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join(".tools"));
    let bundle = tools.join("render/node_modules/adaptivecards/dist/adaptivecards.min.js");
    assert!(
        bundle.is_file(),
        "the Adaptive Cards renderer is not installed at {}: run scripts/test-tools",
        bundle.display()
    );
    bundle
}

/// The render page's URL for `card` (a card or a Teams message carrying one).
pub fn page_url(card: &Value) -> String {
    let page = crate::repo_root().join("tests/render/render.html");
    assert!(page.is_file(), "{} is missing", page.display());
    let file_url = |path: &Path| {
        url::Url::from_file_path(path)
            .unwrap_or_else(|()| panic!("{} is not an absolute path", path.display()))
    };
    format!(
        "{}?lib={}#{}",
        file_url(&page),
        encode(file_url(&renderer()).as_str()),
        encode(&card.to_string())
    )
}

/// Renders `card` and returns the renderer's verdict.
pub fn render(card: &Value) -> Verdict {
    let url = page_url(card);
    let dom = run_chromium(&["--dump-dom", &url]);
    let start = dom
        .find("<pre id=\"verdict\">")
        .map(|i| i + "<pre id=\"verdict\">".len())
        .unwrap_or_else(|| panic!("no verdict in the rendered page: {dom}"));
    let end = dom[start..]
        .find("</pre>")
        .map(|i| start + i)
        .unwrap_or_else(|| panic!("an unterminated verdict: {dom}"));
    let json = unescape(&dom[start..end]);
    serde_json::from_str(&json).unwrap_or_else(|e| panic!("the verdict {json:?}: {e}"))
}

/// Renders `card` into a PNG at `png`, `height` pixels tall (a verdict's `height`).
pub fn screenshot(card: &Value, height: u32, png: &Path) {
    let url = page_url(card);
    let _ = std::fs::remove_file(png);
    run_chromium(&[
        &format!("--screenshot={}", png.display()),
        &format!("--window-size={WINDOW_WIDTH},{}", height.clamp(100, 8000)),
        "--hide-scrollbars",
        &url,
    ]);
    assert!(
        png.is_file(),
        "Chromium wrote no screenshot at {}",
        png.display()
    );
}

/// Runs headless Chromium with a new empty profile and returns its standard output (also for
/// pages other than cards: the HTML report's `--dump-dom` and `--screenshot`).
pub fn run_chromium(args: &[&str]) -> String {
    let profile = Scratch::new("chromium-profile");
    let mut command = Command::new(chromium());
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--allow-file-access-from-files",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command
        .spawn()
        .unwrap_or_else(|e| panic!("starting Chromium: {e}"));
    let mut running = Running(child);
    let mut stdout = running.0.stdout.take().expect("stdout");
    let mut stderr = running.0.stderr.take().expect("stderr");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let read = stdout.read_to_string(&mut out);
        let _ = tx.send(read.map(|_| out));
    });
    let errors = std::thread::spawn(move || {
        let mut err = String::new();
        let _ = stderr.read_to_string(&mut err);
        err
    });
    let out = rx
        .recv_timeout(CHROMIUM_TIMEOUT)
        .unwrap_or_else(|_| panic!("Chromium took over {CHROMIUM_TIMEOUT:?}: killed"))
        .unwrap_or_else(|e| panic!("reading Chromium's output: {e}"));
    let status = running.0.wait().expect("waiting for Chromium");
    let errors = errors.join().unwrap_or_default();
    assert!(status.success(), "Chromium failed ({status}): {errors}");
    out
}

/// A Chromium process group, killed if still running when dropped (a failure or a timeout).
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0.id())])
                .status();
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters (for `decodeURIComponent`).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 3);
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Undoes the HTML serializer's escapes in a text node.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_leaves_only_unreserved_characters() {
        assert_eq!(encode("a b%\"#?é"), "a%20b%25%22%23%3F%C3%A9");
    }

    #[test]
    fn unescaping_restores_the_text() {
        assert_eq!(unescape("&lt;a&gt; &amp;lt; x"), "<a> &lt; x");
    }
}
