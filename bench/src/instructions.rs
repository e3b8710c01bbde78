//! Instructions per event, counted by Valgrind's callgrind on the handler process (every
//! thread): deterministic where the throughput and CPU figures follow the machine's load, so a
//! change to the hot paths can be judged on a busy machine. The handler runs under
//! `valgrind --tool=callgrind`; after a warm-up the counters are zeroed, a fixed number of
//! events is sent one at a time, and the counters are dumped (`callgrind_control`).

use std::path::{Path, PathBuf};
use std::process::Command;

use azure_sim::Sim;

use crate::load;
use crate::phases::Setup;
use crate::process::Server;
use crate::report::{Section, fixed};
use crate::scenario;

/// Events sent before counting (caches filled, statements prepared, pools warm).
const WARM_UP: usize = 50;

/// Instructions per irrelevant and per relevant event, `events` of each.
pub async fn instructions(setup: &Setup, sim: &Sim, events: usize) -> Section {
    let mut section = Section::new("Instructions per event (callgrind)");
    let found = |tool: &str| {
        Command::new(tool)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !found("valgrind") || !found("callgrind_control") {
        return Section::failed(
            &section.title,
            "valgrind is not installed (Debian package `valgrind`)",
        );
    }
    let out = setup.scratch.join("callgrind.out");
    let mut args = vec![
        "--tool=callgrind".to_owned(),
        format!("--callgrind-out-file={}", out.display()),
    ];
    args.push(setup.handler.display().to_string());
    args.push("serve".to_owned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let handler = match Server::start(Path::new("valgrind"), &args, &setup.handler_env(sim, &[])) {
        Ok(server) => server,
        Err(error) => return Section::failed(&section.title, &error),
    };
    let client = match load::client() {
        Ok(c) => c,
        Err(error) => return Section::failed(&section.title, &error),
    };
    let url = format!("{}/OnSubscriptionEvent", handler.base_url());
    let irrelevant = |n: usize| {
        scenario::envelope(
            &scenario::irrelevant(&format!("irrelevant-{n}")),
            "OnSubscriptionEvent",
        )
    };
    let relevant = |n: usize| {
        scenario::envelope(
            &scenario::workspace_write(n % 10, &format!("counted-{n}-{}", uuid::Uuid::new_v4())),
            "OnSubscriptionEvent",
        )
    };
    for n in 0..WARM_UP {
        for body in [irrelevant(n), relevant(n)] {
            if let Err(error) = load::invoke(&client, &url, body).await {
                return Section::failed(&section.title, &error);
            }
        }
    }
    let mut per_event = Vec::new();
    for (dump, (name, make)) in [
        ("irrelevant", &irrelevant as &dyn Fn(usize) -> Vec<u8>),
        ("relevant", &relevant),
    ]
    .into_iter()
    .enumerate()
    {
        match count(&handler, (&client, &url), make, events, (&out, dump + 1)).await {
            Ok(total) => per_event.push((name, total as f64 / events as f64)),
            Err(error) => return Section::failed(&section.title, &error),
        }
    }
    section.row(
        "events counted (each kind, sequential, after a warm-up of 50)",
        events,
    );
    for (name, instructions) in &per_event {
        section.row(
            &format!("instructions per {name} event (all threads)"),
            fixed(*instructions, 0),
        );
    }
    section.note(
        "Counted under valgrind: deterministic to within a few percent between runs, unlike \
         the wall-clock figures; it counts the handler's work per event, not its speed.",
    );
    section
}

/// Zeroes the handler's counters, sends `events` bodies from `make` one at a time, dumps the
/// counters (dump number `dump`, written to `<out>.<dump>`) and returns the instructions
/// counted.
async fn count(
    handler: &Server,
    target: (&reqwest::Client, &str),
    make: &dyn Fn(usize) -> Vec<u8>,
    events: usize,
    (out, dump): (&Path, usize),
) -> Result<u64, String> {
    let (client, url) = target;
    callgrind_control(handler.pid, "--zero")?;
    for n in 0..events {
        match load::invoke(client, url, make(WARM_UP + n)).await {
            Ok((200, _)) => {}
            Ok((status, _)) => return Err(format!("an event was answered {status}")),
            Err(error) => return Err(error),
        }
    }
    callgrind_control(handler.pid, "--dump")?;
    let file = PathBuf::from(format!("{}.{dump}", out.display()));
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("summary:"))
        .and_then(|n| n.trim().parse().ok())
        .ok_or_else(|| format!("{}: no summary line", file.display()))
}

fn callgrind_control(pid: u32, action: &str) -> Result<String, String> {
    let output = Command::new("callgrind_control")
        .arg(action)
        .arg(pid.to_string())
        .output()
        .map_err(|e| format!("callgrind_control: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "callgrind_control {action} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
