//! `scripts/package` assembles a function app the host can run.

use std::process::Command;

use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::{binary, repo_root};

#[test]
fn package_assembles_the_app_folder_and_an_executable_zip() {
    let scratch = Scratch::new("package");
    let out = scratch.path();
    let status = Command::new(repo_root().join("scripts/package"))
        .args([
            "--binary",
            binary().to_str().unwrap_or_default(),
            "--out",
            out.to_str().unwrap_or_default(),
        ])
        .status()
        .expect("run scripts/package");
    assert!(status.success());
    let app = out.join("app");
    for file in [
        "host.json",
        "cmk-guard",
        "OnSubscriptionEvent/function.json",
        "OnKeyVaultEvent/function.json",
        "Sweep/function.json",
        "Evaluate/function.json",
    ] {
        assert!(app.join(file).is_file(), "{file} missing");
    }
    // The packaged binary is the handler and runs.
    let version = Command::new(app.join("cmk-guard"))
        .arg("--version")
        .output()
        .expect("run packaged binary");
    assert!(String::from_utf8_lossy(&version.stdout).starts_with("cmk-guard "));

    // The zip keeps the executable bit (checked with Python's zipfile, as the script writes it).
    let listing = Command::new("python3")
        .args(["-c", "import sys,zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist(): print(i.filename, oct((i.external_attr >> 16) & 0o777))"])
        .arg(out.join("cmk-guard.zip"))
        .output()
        .expect("python3");
    let listing = String::from_utf8_lossy(&listing.stdout);
    assert!(listing.lines().any(|l| l == "cmk-guard 0o755"), "{listing}");
    assert!(
        listing.lines().any(|l| l.starts_with("host.json ")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("Evaluate/function.json ")),
        "{listing}"
    );
}
