//! `scripts/package` assembles a function app the host can run, refuses a binary the Functions
//! Linux image cannot load (scripts/check-elf), and writes SHA256SUMS and a CycloneDX SBOM; the
//! Dockerfile ships the packaged binary. No release build here: `--binary` with small fixtures.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::{binary, read_json, repo_root};

/// The Functions v4 Linux image's glibc (Debian 12): the debug binary, built on Debian 12,
/// needs no newer one, so it can stand in for a release build where the test runs it.
const DEBIAN_12_GLIBC: &str = "2.36";

/// Runs `scripts/package --binary BINARY --out OUT` with `extra` arguments.
fn package(binary: &Path, out: &Path, extra: &[&str]) -> Output {
    Command::new(repo_root().join("scripts/package"))
        .arg("--binary")
        .arg(binary)
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .expect("run scripts/package")
}

/// Runs `scripts/check-elf PATH` with `extra` arguments.
fn check_elf(path: &Path, extra: &[&str]) -> Output {
    Command::new(repo_root().join("scripts/check-elf"))
        .arg(path)
        .args(extra)
        .output()
        .expect("run scripts/check-elf")
}

/// Compiles a two-line C program with `gcc` (`-static` or not) into the scratch directory.
fn c_program(scratch: &Scratch, name: &str, flags: &[&str]) -> PathBuf {
    let source = scratch.write(
        "hello.c",
        "#include <stdio.h>\nint main(void) { puts(\"hello\"); return 0; }\n",
    );
    let program = scratch.join(name);
    let status = Command::new("gcc")
        .args(flags)
        .arg("-o")
        .arg(&program)
        .arg(&source)
        .status()
        .expect("gcc (Debian's gcc and libc6-dev) builds the ELF fixtures");
    assert!(status.success(), "gcc {flags:?} failed");
    program
}

/// Every `GLIBC_x.y` named in `text`, as (x, y).
fn glibc_versions(text: &str) -> Vec<(u32, u32)> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|word| word.trim_end_matches('.').strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let (major, minor) = v.split_once('.')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
        .collect()
}

/// Asserts that packaging `binary` was refused with `reason` and wrote nothing.
fn assert_refused(binary: &Path, reason: &str) -> String {
    let scratch = Scratch::new("package-refused");
    let out = scratch.join("dist");
    let output = package(binary, &out, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(reason), "{stderr}");
    assert!(stderr.contains("not packaging"), "{stderr}");
    assert!(
        !out.join("cmk-guard.zip").exists(),
        "a refused binary was zipped"
    );
    assert!(
        !out.join("app/cmk-guard").exists(),
        "a refused binary was copied"
    );
    stderr
}

#[test]
fn package_assembles_the_app_folder_and_an_executable_zip() {
    let scratch = Scratch::new("package");
    let out = scratch.path();
    let policy = scratch.write("policy.toml", "[rules.\"key.expiry\"]\nwarn_days = 30\n");
    let policy = policy.to_str().unwrap_or_default();
    let output = package(
        &binary(),
        &out.join("dist"),
        &["--glibc-floor", DEBIAN_12_GLIBC, "--policy", policy],
    );
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out = out.join("dist");
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
    // The policy ships inside the zip the checksums cover.
    assert!(
        listing.lines().any(|l| l.starts_with("policy.toml ")),
        "{listing}"
    );
    let check = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&out)
        .status()
        .expect("sha256sum");
    assert!(check.success());
}

#[test]
fn a_policy_that_fails_policy_check_is_not_packaged() {
    let scratch = Scratch::new("package-bad-policy");
    let policy = scratch.write(
        "policy.toml",
        "[rules.\"key.expiry\"]\nwarn_days = \"soon\"\n",
    );
    let out = scratch.join("dist");
    let output = package(
        &binary(),
        &out,
        &[
            "--glibc-floor",
            DEBIAN_12_GLIBC,
            "--policy",
            policy.to_str().unwrap_or_default(),
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("does not pass policy check"), "{stderr}");
    assert!(!out.join("cmk-guard.zip").exists());
    assert!(!out.join("app").exists());
}

#[test]
fn a_binary_needing_a_glibc_above_the_floor_is_refused_naming_the_symbol_version() {
    // The debug binary links this machine's glibc (2.36): it needs versions above 2.28.
    let stderr = assert_refused(&binary(), "newer than the image's glibc floor 2.28");
    let named = glibc_versions(&stderr);
    assert!(!named.is_empty(), "no GLIBC_x.y named: {stderr}");
    assert!(named.iter().all(|v| *v > (2, 28)), "{named:?} in {stderr}");

    // A plain dynamic C program needs GLIBC_2.34 (__libc_start_main) on glibc 2.34 and newer.
    let scratch = Scratch::new("check-elf-dynamic");
    let program = c_program(&scratch, "dynamic", &[]);
    let output = check_elf(&program, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("needs GLIBC_2.34"), "{stderr}");
    // The same program passes against a floor it fits under.
    let output = check_elf(&program, &["--glibc-floor", DEBIAN_12_GLIBC]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("dynamic, newest glibc symbol GLIBC_2.34 (floor 2.36)"),
        "{stdout}"
    );
}

#[test]
fn a_static_binary_is_packaged_whatever_the_floor() {
    let scratch = Scratch::new("package-static");
    let program = c_program(&scratch, "static", &["-static"]);
    let output = check_elf(&program, &["--glibc-floor", "2.17"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("x86-64 ELF, statically linked"));

    let out = scratch.join("dist");
    let output = package(&program, &out, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let packaged = Command::new(out.join("app/cmk-guard"))
        .output()
        .expect("run the packaged static program");
    assert_eq!(String::from_utf8_lossy(&packaged.stdout), "hello\n");
}

#[test]
fn files_that_are_not_an_executable_x86_64_elf_are_refused() {
    let scratch = Scratch::new("package-not-elf");
    let script = scratch.write("script", "#!/bin/sh\necho hello\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_refused(&script, "not an ELF file");

    // An arm64 build (the ELF machine field patched to AArch64, 183) is refused as such.
    let program = c_program(&scratch, "static", &["-static"]);
    let elf = std::fs::read(&program).expect("read program");
    let mut bytes = elf.clone();
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
    let arm64 = scratch.write("arm64", &bytes);
    std::fs::set_permissions(&arm64, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    assert_refused(&arm64, "ELF machine 183 is not x86-64");

    // Cut short: a bounded error, not a Python traceback.
    let truncated = scratch.write("truncated", &elf[..100]);
    std::fs::set_permissions(&truncated, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let stderr = assert_refused(&truncated, "truncated or malformed ELF file");
    assert!(!stderr.contains("Traceback"), "{stderr}");

    // Not executable.
    let plain = scratch.write("plain", &elf);
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert_refused(&plain, "not executable");
    assert_refused(&scratch.join("missing"), "no such file");
}

#[test]
fn dist_gets_sha256sums_and_a_cyclonedx_sbom_of_exactly_the_shipped_crates() {
    let scratch = Scratch::new("package-sbom");
    let out = scratch.join("dist");
    // A small static stand-in for the binary: the SBOM describes Cargo.lock, not the file.
    let program = c_program(&scratch, "static", &["-static"]);
    let output = package(&program, &out, &[]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // SHA256SUMS verifies with sha256sum and covers the zip, the binary and the SBOM.
    let sums = std::fs::read_to_string(out.join("SHA256SUMS")).expect("SHA256SUMS");
    let files: BTreeSet<&str> = sums
        .lines()
        .filter_map(|l| l.split_once("  ").map(|(_, f)| f))
        .collect();
    assert_eq!(
        files,
        BTreeSet::from(["app/cmk-guard", "cmk-guard.cdx.json", "cmk-guard.zip"])
    );
    let check = Command::new("sha256sum")
        .args(["--check", "--strict", "SHA256SUMS"])
        .current_dir(&out)
        .output()
        .expect("sha256sum");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let bom = read_json(&out.join("cmk-guard.cdx.json"));
    assert_eq!(bom["bomFormat"], "CycloneDX");
    assert_eq!(bom["specVersion"], "1.5");
    assert_eq!(
        bom["metadata"]["component"]["purl"],
        "pkg:cargo/cmk-guard@0.1.0"
    );
    let components = bom["components"].as_array().expect("components");
    let purls: BTreeSet<&str> = components
        .iter()
        .map(|c| c["purl"].as_str().expect("every component has a purl"))
        .collect();
    for c in components {
        let expected = format!(
            "pkg:cargo/{}@{}",
            c["name"].as_str().unwrap_or_default(),
            c["version"].as_str().unwrap_or_default()
        );
        assert_eq!(c["purl"], expected.as_str());
    }

    // Every crate cargo builds into the handler for the image's target is listed.
    let tree = Command::new("cargo")
        .args([
            "tree",
            "--locked",
            "--offline",
            "-p",
            "cmk-guard",
            "-e",
            "normal",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .current_dir(repo_root())
        .output()
        .expect("cargo tree");
    assert!(
        tree.status.success(),
        "{}",
        String::from_utf8_lossy(&tree.stderr)
    );
    let crates: BTreeSet<String> = String::from_utf8_lossy(&tree.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next()?;
            let version = words.next()?.strip_prefix('v')?;
            (name != "cmk-guard").then(|| format!("pkg:cargo/{name}@{version}"))
        })
        .collect();
    assert!(crates.len() > 100, "{crates:?}");
    let listed: BTreeSet<String> = purls.iter().map(|p| (*p).to_owned()).collect();
    let missing: Vec<&String> = crates.difference(&listed).collect();
    assert!(missing.is_empty(), "not in the SBOM: {missing:?}");
    let extra: Vec<&String> = listed.difference(&crates).collect();
    assert!(extra.is_empty(), "in the SBOM but not built: {extra:?}");
    // The dependency graph names only listed crates (and the application).
    for dependency in bom["dependencies"].as_array().expect("dependencies") {
        for on in dependency["dependsOn"].as_array().expect("dependsOn") {
            assert!(listed.contains(on.as_str().unwrap_or_default()), "{on}");
        }
    }
    assert!(
        purls.iter().any(|p| p.starts_with("pkg:cargo/ring@")),
        "ring (C code) is listed"
    );
}

#[test]
fn the_dockerfile_runs_the_packaged_binary_as_a_non_root_user() {
    let dockerfile = std::fs::read_to_string(repo_root().join("Dockerfile")).expect("Dockerfile");
    let instructions: Vec<(&str, &str)> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once(' '))
        .collect();
    let only = |keyword: &str| -> Vec<&str> {
        instructions
            .iter()
            .filter(|(k, _)| *k == keyword)
            .map(|(_, v)| *v)
            .collect()
    };
    // One stage, from a distroless (or scratch) base: no shell, no package manager.
    let from = only("FROM");
    assert_eq!(from.len(), 1, "{from:?}");
    assert!(
        from[0].starts_with("gcr.io/distroless/") || from[0] == "scratch",
        "{from:?}"
    );
    assert!(
        only("RUN").is_empty(),
        "nothing is built or installed in the image"
    );

    // It copies the file scripts/package writes (dist/app/cmk-guard, packaged by the first test).
    let copy = only("COPY");
    assert_eq!(copy.len(), 1, "{copy:?}");
    let words: Vec<&str> = copy[0]
        .split_whitespace()
        .filter(|w| !w.starts_with("--"))
        .collect();
    assert_eq!(words.first(), Some(&"dist/app/cmk-guard"));
    let installed = words.last().copied().unwrap_or_default();

    // The binary is the entrypoint; `scan` the default command.
    let entrypoint: Vec<String> =
        serde_json::from_str(only("ENTRYPOINT").first().copied().unwrap_or("[]"))
            .expect("exec form");
    assert_eq!(entrypoint, [installed]);
    let cmd: Vec<String> =
        serde_json::from_str(only("CMD").first().copied().unwrap_or("[]")).expect("exec form");
    assert_eq!(cmd, ["scan"]);

    // The last USER is numeric and not root.
    let user = only("USER").last().copied().expect("a USER instruction");
    let uid = user.split(':').next().unwrap_or_default();
    assert!(uid.parse::<u32>().is_ok_and(|uid| uid != 0), "USER {user}");

    // The build context is only that file: .dockerignore excludes everything else.
    let ignore = std::fs::read_to_string(repo_root().join(".dockerignore")).expect(".dockerignore");
    let rules: Vec<&str> = ignore
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect();
    assert_eq!(rules, ["*", "!dist/app/cmk-guard"]);
}
