//! Configuration is read once, at start: an alert channel that cannot be used stops `serve`
//! like any other invalid variable — one paragraph naming the variable, exit code 2 — before
//! the port is bound, so the host never sees a ready handler that cannot alert.

use std::io::Read;
use std::net::TcpStream;
use std::process::Child;
use std::time::{Duration, Instant};

use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::{free_port, spawn};

/// The exit code of a configuration error (`cmk-guard --help` documents it).
const CONFIGURATION: i32 = 2;
/// Far longer than parsing the settings takes; a handler still running then has started.
const EXIT_WITHIN: Duration = Duration::from_secs(30);

#[test]
fn serve_with_an_unusable_alert_channel_stops_before_it_listens() {
    let sig = "S3cr3tSig";
    let teams_http = format!(
        "http://prod.westeurope.environment.api.powerplatform.com/workflows/w1/triggers/manual/paths/invoke?sig={sig}"
    );
    let retired_connector = format!("https://contoso.webhook.office.com/webhookb2/x?sig={sig}");
    let smtps = format!("smtps://alerts:{sig}@smtp.contoso.com");
    let cases: [(&[(&str, &str)], &str); 3] = [
        (
            &[("CMKGUARD_TEAMS_WEBHOOK_URL", &teams_http)],
            "CMKGUARD_TEAMS_WEBHOOK_URL",
        ),
        (
            &[("CMKGUARD_TEAMS_WEBHOOK_URL", &retired_connector)],
            "CMKGUARD_TEAMS_WEBHOOK_URL",
        ),
        (
            &[
                ("CMKGUARD_EMAIL_TO", "oncall@contoso.com"),
                ("CMKGUARD_EMAIL_FROM", "cmk-guard@contoso.com"),
                ("CMKGUARD_SMTP_URL", &smtps),
            ],
            "CMKGUARD_SMTP_URL",
        ),
    ];
    for (channel, variable) in cases {
        let scratch = Scratch::new("settings");
        let state = scratch.sqlite_state("state.db");
        let mut env = vec![("CMKGUARD_STATE", state.as_str())];
        env.extend_from_slice(channel);
        let port = free_port();
        let mut child = spawn(port, &env, &["serve"]);

        let (code, listened) = wait_watching_the_port(&mut child, port);
        let stderr = read_all(child.stderr.take());
        let stdout = read_all(child.stdout.take());

        assert_eq!(code, Some(CONFIGURATION), "{variable}: {stderr}");
        assert!(!listened, "{variable}: something answered on port {port}");
        let prefix = format!("cmk-guard: invalid configuration: {variable}: ");
        assert!(stderr.starts_with(&prefix), "{stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "one paragraph: {stderr}"
        );
        assert!(
            !stderr.contains(sig),
            "the secret is never echoed: {stderr}"
        );
        assert!(!stdout.contains("Listening."), "{stdout}");
        assert!(
            !scratch.join("state.db").exists(),
            "the state store was opened before the settings were checked"
        );
    }
}

#[test]
fn serve_with_a_state_store_that_cannot_open_stops_before_it_listens() {
    let scratch = Scratch::new("settings");
    // A file where the database's folder should be: the path is valid, the store is not.
    std::fs::write(scratch.join("not-a-folder"), b"").expect("write a file");
    let state = format!(
        "sqlite:{}",
        scratch.join("not-a-folder").join("state.db").display()
    );
    let port = free_port();
    let mut child = spawn(port, &[("CMKGUARD_STATE", state.as_str())], &["serve"]);

    let (code, listened) = wait_watching_the_port(&mut child, port);
    let stderr = read_all(child.stderr.take());

    assert_eq!(code, Some(CONFIGURATION), "{stderr}");
    assert!(!listened, "something answered on port {port}");
    assert!(
        stderr.contains("cmk-guard: cannot start: CMKGUARD_STATE"),
        "{stderr}"
    );
}

/// Waits for `child` to exit, trying to connect to `port` meanwhile: (exit code, whether a
/// connection was ever accepted). Kills a child that does not exit in time.
fn wait_watching_the_port(child: &mut Child, port: u16) -> (Option<i32>, bool) {
    let started = Instant::now();
    let mut listened = false;
    loop {
        if let Some(status) = child.try_wait().expect("wait for cmk-guard") {
            return (status.code(), listened);
        }
        if started.elapsed() > EXIT_WITHIN {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cmk-guard serve did not stop within {EXIT_WITHIN:?}");
        }
        let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        listened |= TcpStream::connect_timeout(&address, Duration::from_millis(100)).is_ok();
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn read_all(pipe: Option<impl Read>) -> String {
    let mut text = String::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_string(&mut text).expect("read a pipe");
    }
    text
}
