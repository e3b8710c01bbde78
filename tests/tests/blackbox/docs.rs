//! Docs that run: every policy the documentation shows passes `cmk-guard policy check`, and
//! every `cmk-guard` command line and `--flag` the README shows exists in the binary's `--help`.
//!
//! A ```` ```toml ```` block in README.md or docs/*.md is a policy file. A block that is
//! deliberately partial or invalid says so in its info string, ```` ```toml excerpt ````, and
//! is skipped (README.md, *Prerequisites and testing*).

use std::collections::BTreeSet;

use cmk_guard_blackbox::scratch::Scratch;
use cmk_guard_blackbox::{repo_root, run_cli as run};

/// The info-string word that exempts a toml block from `policy check`.
const EXCERPT: &str = "excerpt";

/// A fenced code block of a Markdown file.
#[derive(Debug)]
struct Block {
    /// `file:line` of the opening fence.
    place: String,
    /// The info string's words (`toml`, `excerpt`, …).
    info: Vec<String>,
    body: String,
}

/// Splits Markdown into its fenced code blocks and the text outside them.
fn parse(name: &str, text: &str) -> (Vec<Block>, String) {
    let mut blocks = Vec::new();
    let mut prose = String::new();
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let indent = line.len() - line.trim_start().len();
        let trimmed = line.trim_start();
        let fence = if trimmed.starts_with("```") {
            "```"
        } else if trimmed.starts_with("~~~") {
            "~~~"
        } else {
            prose.push_str(line);
            prose.push('\n');
            continue;
        };
        let info = trimmed.trim_start_matches(fence.chars().next().unwrap_or('`'));
        let mut body = String::new();
        for (_, inner) in lines.by_ref() {
            if inner.trim_start().starts_with(fence) {
                break;
            }
            // Content indented like its fence (a block inside a list) loses that indentation.
            let cut = inner.len() - inner.trim_start().len();
            body.push_str(&inner[cut.min(indent)..]);
            body.push('\n');
        }
        blocks.push(Block {
            place: format!("{name}:{}", index + 1),
            info: info.split_whitespace().map(str::to_owned).collect(),
            body,
        });
    }
    (blocks, prose)
}

/// The inline code spans of Markdown prose, as CommonMark reads them: a run of backticks opens
/// a span that the next run of the same length closes, across line breaks; whitespace is
/// collapsed.
fn code_spans(prose: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut rest = prose;
    while let Some(start) = rest.find('`') {
        let after = &rest[start..];
        let run = after.len() - after.trim_start_matches('`').len();
        let inside = &after[run..];
        let mut search = 0;
        let mut closed = None;
        while let Some(found) = inside[search..].find('`') {
            let at = search + found;
            let length = inside[at..].len() - inside[at..].trim_start_matches('`').len();
            if length == run {
                closed = Some(at);
                break;
            }
            search = at + length;
        }
        match closed {
            Some(end) => {
                spans.push(
                    inside[..end]
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                );
                rest = &inside[end + run..];
            }
            None => rest = inside,
        }
    }
    spans
}

/// README.md and every docs/*.md, with their names relative to the repository.
fn documents() -> Vec<(String, String)> {
    let root = repo_root();
    let mut names = vec!["README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .filter_map(Result::ok)
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".md"))
        .map(|name| format!("docs/{name}"))
        .collect();
    docs.sort();
    names.extend(docs);
    names
        .into_iter()
        .map(|name| {
            let text =
                std::fs::read_to_string(root.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, text)
        })
        .collect()
}

#[test]
fn the_markdown_reader_finds_blocks_their_info_and_the_prose_around_them() {
    let text = "intro `cmk-guard scan`\n\n- a list\n  ```toml excerpt\n  [notify]\n  ```\n\n~~~sh\ncmk-guard serve\n~~~\nend\n";
    let (blocks, prose) = parse("x.md", text);
    assert_eq!(blocks.len(), 2);
    assert_eq!(blocks[0].place, "x.md:4");
    assert_eq!(blocks[0].info, ["toml", EXCERPT]);
    assert_eq!(blocks[0].body, "[notify]\n");
    assert_eq!(blocks[1].info, ["sh"]);
    assert_eq!(blocks[1].body, "cmk-guard serve\n");
    assert_eq!(prose, "intro `cmk-guard scan`\n\n- a list\n\nend\n");
    assert_eq!(
        code_spans("a `one` and ```` ```toml excerpt ```` and `two\nlines` and a lone ` tick"),
        ["one", "```toml excerpt", "two lines"]
    );
}

#[test]
fn every_policy_in_the_docs_passes_policy_check() {
    let scratch = Scratch::new("docs");
    let mut checked = Vec::new();
    let mut failures = Vec::new();
    for (name, text) in documents() {
        let (blocks, _) = parse(&name, &text);
        for block in blocks {
            if block.info.first().map(String::as_str) != Some("toml")
                || block.info.iter().any(|word| word == EXCERPT)
            {
                continue;
            }
            let file = scratch.join(&format!("policy-{}.toml", checked.len()));
            std::fs::write(&file, &block.body).expect("write policy");
            let (code, out, err) = run(&["policy", "check", &file.to_string_lossy()]);
            if code != Some(0) || !out.starts_with("ok: ") {
                failures.push(format!("{}: exit {code:?}: {out}{err}", block.place));
            }
            checked.push(block.place);
        }
    }
    assert!(
        checked.iter().any(|place| place.starts_with("README.md:"))
            && checked.iter().any(|place| place.starts_with("docs/")),
        "the README and the docs show policies: {checked:?}"
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// What one `--help` says: the subcommands, and each option with its possible values.
#[derive(Debug, Default)]
struct Help {
    commands: BTreeSet<String>,
    /// (`--flag`, possible values; empty when the option takes any value or none).
    options: Vec<(String, BTreeSet<String>)>,
}

impl Help {
    /// `cmk-guard <path…> --help`, parsed.
    fn of(path: &[&str]) -> Help {
        let mut args = path.to_vec();
        args.push("--help");
        let (code, out, err) = run(&args);
        assert_eq!(code, Some(0), "cmk-guard {}: {out}{err}", args.join(" "));
        let mut help = Help::default();
        let mut section = "";
        for line in out.lines() {
            if !line.starts_with(' ') && line.ends_with(':') {
                section = line;
                continue;
            }
            let trimmed = line.trim();
            match section {
                "Commands:" => {
                    if let Some(command) = trimmed.split_whitespace().next() {
                        help.commands.insert(command.to_owned());
                    }
                }
                "Options:" if trimmed.starts_with('-') && !trimmed.starts_with("- ") => {
                    for flag in trimmed
                        .split_whitespace()
                        .take_while(|word| word.starts_with('-') || word.starts_with('<'))
                        .map(|word| word.trim_end_matches(','))
                        .filter(|word| word.starts_with("--"))
                    {
                        help.options.push((flag.to_owned(), BTreeSet::new()));
                    }
                }
                "Options:" => {
                    let Some((_, values)) = help.options.last_mut() else {
                        continue;
                    };
                    // `- json: …` (long help) or `[possible values: low, medium]`.
                    if let Some(value) = trimmed
                        .strip_prefix("- ")
                        .and_then(|rest| rest.split(':').next())
                    {
                        values.insert(value.to_owned());
                    }
                    if let Some(list) = trimmed
                        .strip_prefix("[possible values: ")
                        .and_then(|rest| rest.strip_suffix(']'))
                    {
                        values.extend(list.split(", ").map(str::to_owned));
                    }
                }
                _ => {}
            }
        }
        help
    }

    fn option(&self, flag: &str) -> Option<&BTreeSet<String>> {
        self.options
            .iter()
            .find(|(name, _)| name == flag)
            .map(|(_, values)| values)
    }
}

/// Checks one command line the README shows (the text after `cmk-guard`): its subcommands,
/// its flags (also those its comment names) and the values it gives flags that have a fixed
/// set. Returns what does not exist.
fn check_command_line(line: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let (command, comment) = line.split_once(" #").unwrap_or((line, ""));
    let words = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .map(|word| {
                word.trim_matches(|c: char| "[]()…,;".contains(c))
                    .to_owned()
            })
            .filter(|word| !word.is_empty() && word != "|")
            .collect()
    };
    let mut path: Vec<String> = Vec::new();
    let mut help = Help::of(&[]);
    let words_of_command = words(command);
    let mut index = 0;
    while let Some(word) = words_of_command.get(index) {
        index += 1;
        if word.starts_with("--") {
            match help.option(word) {
                None => problems.push(format!("`{line}`: {word} is not an option of it")),
                Some(values) if !values.is_empty() => {
                    if let Some(given) = words_of_command.get(index)
                        && given.chars().all(|c| c.is_ascii_lowercase() || c == '|')
                    {
                        index += 1;
                        for value in given.split('|').filter(|v| !values.contains(*v)) {
                            problems.push(format!(
                                "`{line}`: {word} does not take `{value}` ({values:?})"
                            ));
                        }
                    }
                }
                Some(_) => {}
            }
        } else if !help.commands.is_empty()
            && word.chars().all(|c| c.is_ascii_lowercase() || c == '-')
        {
            if !help.commands.contains(word) {
                problems.push(format!("`{line}`: {word} is not a command"));
                return problems;
            }
            path.push(word.clone());
            let path: Vec<&str> = path.iter().map(String::as_str).collect();
            help = Help::of(&path);
        }
    }
    for flag in words(comment).iter().filter(|word| word.starts_with("--")) {
        if help.option(flag).is_none() {
            problems.push(format!("`{line}`: its comment names {flag}, not an option"));
        }
    }
    problems
}

/// Every option of every command of the binary.
fn all_options(path: &mut Vec<String>, into: &mut BTreeSet<String>) {
    let borrowed: Vec<&str> = path.iter().map(String::as_str).collect();
    let help = Help::of(&borrowed);
    into.extend(help.options.iter().map(|(flag, _)| flag.clone()));
    for command in help.commands.iter().filter(|c| *c != "help") {
        path.push(command.clone());
        all_options(path, into);
        path.pop();
    }
}

#[test]
fn every_command_and_flag_the_readme_shows_exists() {
    let text =
        std::fs::read_to_string(repo_root().join("README.md")).expect("README.md is readable");
    let (blocks, prose) = parse("README.md", &text);
    // Command lines: lines of shell blocks and inline code that start with the binary's name.
    let mut lines: Vec<String> = blocks
        .iter()
        .filter(|block| {
            matches!(
                block.info.first().map(String::as_str),
                None | Some("sh" | "bash" | "console")
            )
        })
        .flat_map(|block| block.body.lines().map(str::trim).map(str::to_owned))
        .collect();
    let spans = code_spans(&prose);
    lines.extend(spans.iter().cloned());
    let commands: Vec<&str> = lines
        .iter()
        .filter_map(|line| line.strip_prefix("cmk-guard "))
        .collect();
    let mut problems: Vec<String> = commands
        .iter()
        .flat_map(|line| check_command_line(line))
        .collect();
    let shown: BTreeSet<&str> = commands
        .iter()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    for expected in ["serve", "evaluate", "scan", "policy", "--help"] {
        assert!(
            shown.contains(expected),
            "the README shows `cmk-guard {expected}`: {commands:?}"
        );
    }

    // A flag alone in inline code (`--fail-on`) is an option of some command.
    let mut options = BTreeSet::new();
    all_options(&mut Vec::new(), &mut options);
    for span in spans.iter().filter(|span| span.starts_with("--")) {
        let flag = span.split_whitespace().next().unwrap_or_default();
        if !options.contains(flag) {
            problems.push(format!("`{span}`: {flag} is not an option of any command"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_command_line_check_catches_what_does_not_exist() {
    assert_eq!(
        check_command_line("scan [--format table|json] # --fail-on SEVERITY"),
        Vec::<String>::new()
    );
    let problems = [
        check_command_line("sacn"),
        check_command_line("scan --format yaml"),
        check_command_line("policy lint FILE"),
        check_command_line("evaluate --resource ID # see --verbose"),
        check_command_line("serve --fail-on high"),
    ];
    for problem in &problems {
        assert_eq!(problem.len(), 1, "{problems:?}");
    }
}
