//! The architecture check (issue 15): `handler/src` keeps the shape the layout promises.
//!
//! - No two sibling modules depend on each other in a cycle, at any level. A reference to
//!   `crate::a::b::x` from inside `crate::a::c` is the edge `a::c → a::b`; `super::` and `self::`
//!   paths and `use` trees (groups included) count the same way.
//! - `lib.rs` declares its modules bottom-up: each may depend only on modules declared above it.
//! - No non-test file is over 700 lines, and the engine stays under 300.
//! - No `Result<…, String>`: errors are typed.
//!
//! This is a small scanner, not a Rust parser. Comments, string and character literals are
//! blanked first; items marked `#[cfg(test)]` are dropped, and so are test-only files
//! (`tests.rs`, `test_support.rs`, files whose `mod` line is `#[cfg(test)]`). Paths that start
//! with `crate`, `super` or `self`, and `use` paths that start with a child module, are read;
//! anything else names another crate. Its own tests below feed it small synthetic trees, so the
//! check cannot pass by reading nothing.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs;
use std::path::{Path, PathBuf};

/// No non-test file in `handler/src` may be longer than this.
const FILE_LINES_MAX: usize = 700;
/// The engine must be shorter than this.
const ENGINE_LINES_LIMIT: usize = 300;
/// Where the engine may live, relative to `handler/src`.
const ENGINE_FILES: [&str; 2] = ["engine.rs", "engine/mod.rs"];
/// File names that hold only tests wherever they are.
const TEST_FILE_NAMES: [&str; 2] = ["tests.rs", "test_support.rs"];

#[test]
fn sibling_modules_do_not_depend_on_each_other_in_a_cycle() {
    let offenders = handler().cycles();
    assert!(
        offenders.is_empty(),
        "import cycles between sibling modules of handler/src (break each one so dependencies \
         flow one way):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn lib_rs_declares_its_modules_bottom_up() {
    let offenders = handler().lib_order();
    assert!(
        offenders.is_empty(),
        "handler/src/lib.rs must declare each module below the modules it depends on:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn no_non_test_file_is_over_the_line_limit() {
    let offenders = handler().oversized_files();
    assert!(
        offenders.is_empty(),
        "non-test files in handler/src over {FILE_LINES_MAX} lines (split them by concern):\n{}",
        offenders.join("\n")
    );
}

#[test]
fn the_engine_stays_small() {
    let offenders = handler().oversized_engine();
    assert!(offenders.is_empty(), "{}", offenders.join("\n"));
}

#[test]
fn errors_are_typed_not_strings() {
    let offenders = handler().string_errors();
    assert!(
        offenders.is_empty(),
        "`Result<…, String>` in handler/src (use an error enum that carries its cause):\n{}",
        offenders.join("\n")
    );
}

/// The handler's sources, analysed.
fn handler() -> Analysis {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../handler/src");
    let mut files = Vec::new();
    collect_sources(&root, &root, &mut files);
    assert!(
        files.iter().any(|file| file.path == "lib.rs"),
        "no lib.rs under {}",
        root.display()
    );
    Analysis::new(files)
}

/// Every `.rs` file under `dir`, with its path relative to `root` ('/'-separated).
fn collect_sources(root: &Path, dir: &Path, out: &mut Vec<SourceFile>) {
    let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let mut paths: Vec<PathBuf> = entries
        .map(|entry| entry.expect("a directory entry").path())
        .collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect_sources(root, &path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            let relative = path.strip_prefix(root).expect("under the root");
            let parts: Vec<String> = relative
                .components()
                .map(|part| part.as_os_str().to_string_lossy().into_owned())
                .collect();
            let text =
                fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push(SourceFile {
                path: parts.join("/"),
                text,
            });
        }
    }
}

/// One source file: its path relative to the crate's `src` and its text.
struct SourceFile {
    path: String,
    text: String,
}

/// A module's path from the crate root: `["azure", "arm"]` is `crate::azure::arm`.
type ModPath = Vec<String>;

/// Where a reference was read.
#[derive(Clone, Debug)]
struct Place {
    file: String,
    line: usize,
}

impl std::fmt::Display for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

fn show(module: &[String]) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// What the checks read from a crate's sources.
struct Analysis {
    files: Vec<SourceFile>,
    /// Test-only files (exempt from the size limit, not read for dependencies).
    test_files: BTreeSet<String>,
    /// Edges between sibling modules, each with the places that make it.
    edges: BTreeMap<(ModPath, ModPath), Vec<Place>>,
    /// The modules `lib.rs` declares, in order.
    lib_modules: Vec<String>,
}

impl Analysis {
    fn new(files: Vec<SourceFile>) -> Analysis {
        // Pass 1: every file's module and what it declares, so test modules are known.
        let mut scans = BTreeMap::new();
        let mut test_modules: BTreeSet<ModPath> = BTreeSet::new();
        let mut modules: BTreeSet<ModPath> = BTreeSet::new();
        for file in &files {
            let Some(module) = file_module(&file.path) else {
                continue;
            };
            let scan = scan(&module, &file.text);
            test_modules.extend(scan.test_modules.iter().cloned());
            modules.insert(module.clone());
            modules.extend(scan.inline_modules.iter().cloned());
            scans.insert(file.path.clone(), (module, scan));
        }
        // The library's files that are not test-only: the ones read for dependencies.
        let mut library_files = BTreeSet::new();
        let mut test_files = BTreeSet::new();
        for file in &files {
            let name = file.path.rsplit('/').next().unwrap_or(&file.path);
            let module = file_module(&file.path);
            let test_only = TEST_FILE_NAMES.contains(&name)
                || module.as_ref().is_some_and(|module| {
                    test_modules
                        .iter()
                        .any(|test| module.starts_with(test.as_slice()))
                });
            if test_only {
                test_files.insert(file.path.clone());
            } else if module.is_some() {
                library_files.insert(file.path.clone());
            }
        }
        // Pass 2: resolve the references of the library's non-test files into sibling edges.
        let mut edges: BTreeMap<(ModPath, ModPath), Vec<Place>> = BTreeMap::new();
        for (path, (_, scan)) in &scans {
            if !library_files.contains(path) {
                continue;
            }
            for reference in &scan.references {
                let Some(target) = resolve(&modules, &reference.from, &reference.path) else {
                    continue;
                };
                if let Some(edge) = sibling_edge(&reference.from, &target) {
                    let places = edges.entry(edge).or_default();
                    let seen = places
                        .iter()
                        .any(|place| place.file == *path && place.line == reference.line);
                    if !seen {
                        places.push(Place {
                            file: path.clone(),
                            line: reference.line,
                        });
                    }
                }
            }
        }
        let lib_modules = scans
            .get("lib.rs")
            .map(|(_, scan)| {
                scan.declared
                    .iter()
                    .filter(|module| module.len() == 1)
                    .map(|module| module[0].clone())
                    .collect()
            })
            .unwrap_or_default();
        Analysis {
            files,
            test_files,
            edges,
            lib_modules,
        }
    }

    /// Each set of sibling modules that depend on each other in a cycle, with its edges.
    fn cycles(&self) -> Vec<String> {
        let mut graph: BTreeMap<&ModPath, Vec<&ModPath>> = BTreeMap::new();
        for (from, to) in self.edges.keys() {
            graph.entry(from).or_default().push(to);
            graph.entry(to).or_default();
        }
        strongly_connected(&graph)
            .into_iter()
            .filter(|component| component.len() > 1)
            .map(|component| {
                let members: BTreeSet<&ModPath> = component.iter().copied().collect();
                let parent = &component[0][..component[0].len() - 1];
                let mut text = format!(
                    "- {} modules under `{}` form a cycle: {}",
                    component.len(),
                    show(parent),
                    members
                        .iter()
                        .map(|m| show(m))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                if let Some(shortest) = shortest_cycle(&graph, &members) {
                    text.push_str("\n    shortest: ");
                    text.push_str(
                        &shortest
                            .iter()
                            .map(|m| show(m))
                            .collect::<Vec<_>>()
                            .join(" → "),
                    );
                }
                for ((from, to), places) in &self.edges {
                    if members.contains(from) && members.contains(to) {
                        text.push_str(&format!(
                            "\n    {} → {} ({})",
                            show(from),
                            show(to),
                            places_text(places)
                        ));
                    }
                }
                text
            })
            .collect()
    }

    /// Each module `lib.rs` declares above a module it depends on.
    fn lib_order(&self) -> Vec<String> {
        let position = |name: &str| self.lib_modules.iter().position(|m| m == name);
        self.edges
            .iter()
            .filter(|((from, to), _)| from.len() == 1 && to.len() == 1)
            .filter_map(|((from, to), places)| {
                let (from_at, to_at) = (position(&from[0])?, position(&to[0])?);
                (to_at > from_at).then(|| {
                    format!(
                        "- `{}` is declared before `{}`, which it uses ({})",
                        from[0],
                        to[0],
                        places_text(places)
                    )
                })
            })
            .collect()
    }

    /// Each non-test file over [`FILE_LINES_MAX`] lines.
    fn oversized_files(&self) -> Vec<String> {
        self.files
            .iter()
            .filter(|file| !self.test_files.contains(&file.path))
            .filter_map(|file| {
                let lines = file.text.lines().count();
                (lines > FILE_LINES_MAX).then(|| format!("- {}: {lines} lines", file.path))
            })
            .collect()
    }

    /// The engine's file when it has [`ENGINE_LINES_LIMIT`] lines or more, or when there is none.
    fn oversized_engine(&self) -> Vec<String> {
        let Some(engine) = self
            .files
            .iter()
            .find(|file| ENGINE_FILES.contains(&file.path.as_str()))
        else {
            return vec![format!(
                "no engine at handler/src/{}: point this check at the engine",
                ENGINE_FILES.join(" or handler/src/")
            )];
        };
        let lines = engine.text.lines().count();
        if lines >= ENGINE_LINES_LIMIT {
            vec![format!(
                "handler/src/{} has {lines} lines; the engine must stay under \
                 {ENGINE_LINES_LIMIT} (move event, sweep, scan and evaluate into their own modules)",
                engine.path
            )]
        } else {
            Vec::new()
        }
    }

    /// Each `Result<…, String>` in any file, tests included.
    fn string_errors(&self) -> Vec<String> {
        self.files
            .iter()
            .flat_map(|file| {
                string_error_lines(&file.text)
                    .into_iter()
                    .map(move |line| format!("- {}:{line}", file.path))
            })
            .collect()
    }
}

fn places_text(places: &[Place]) -> String {
    const SHOWN: usize = 3;
    let mut text = places
        .iter()
        .take(SHOWN)
        .map(Place::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    if places.len() > SHOWN {
        text.push_str(&format!(", and {} more", places.len() - SHOWN));
    }
    text
}

/// The module a library file defines, or `None` for the binary's `main.rs`.
fn file_module(path: &str) -> Option<ModPath> {
    if path == "main.rs" {
        return None;
    }
    let mut parts: Vec<String> = path
        .trim_end_matches(".rs")
        .split('/')
        .map(str::to_owned)
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    Some(parts)
}

/// The module a reference lands in: the longest known module the resolved path starts with.
/// `None` for paths into other crates.
fn resolve(modules: &BTreeSet<ModPath>, from: &[String], path: &[String]) -> Option<ModPath> {
    let mut segments = path.iter().map(String::as_str).peekable();
    let mut resolved: ModPath = match *segments.peek()? {
        "crate" => {
            segments.next();
            Vec::new()
        }
        "self" => {
            segments.next();
            from.to_vec()
        }
        "super" => from.to_vec(),
        child => {
            let mut candidate = from.to_vec();
            candidate.push(child.to_owned());
            if !modules.contains(&candidate) {
                return None;
            }
            from.to_vec()
        }
    };
    while segments.peek() == Some(&"super") {
        segments.next();
        resolved.pop()?;
    }
    resolved.extend(
        segments
            .filter(|segment| *segment != "self")
            .map(str::to_owned),
    );
    while !resolved.is_empty() && !modules.contains(&resolved) {
        resolved.pop();
    }
    Some(resolved)
}

/// The edge between the two siblings under the deepest common parent of `from` and `to`;
/// `None` when one contains the other.
fn sibling_edge(from: &[String], to: &[String]) -> Option<(ModPath, ModPath)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    (common < from.len() && common < to.len())
        .then(|| (from[..=common].to_vec(), to[..=common].to_vec()))
}

/// Tarjan's strongly connected components, each in a stable order.
fn strongly_connected<'a>(
    graph: &BTreeMap<&'a ModPath, Vec<&'a ModPath>>,
) -> Vec<Vec<&'a ModPath>> {
    struct State<'a> {
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on_stack: BTreeSet<&'a ModPath>,
        components: Vec<Vec<&'a ModPath>>,
    }
    fn visit<'a>(
        node: &'a ModPath,
        graph: &BTreeMap<&'a ModPath, Vec<&'a ModPath>>,
        state: &mut State<'a>,
    ) {
        let index = state.index.len();
        state.index.insert(node, index);
        state.low.insert(node, index);
        state.stack.push(node);
        state.on_stack.insert(node);
        for &next in graph.get(node).into_iter().flatten() {
            if !state.index.contains_key(next) {
                visit(next, graph, state);
                let low = state.low[node].min(state.low[next]);
                state.low.insert(node, low);
            } else if state.on_stack.contains(next) {
                let low = state.low[node].min(state.index[next]);
                state.low.insert(node, low);
            }
        }
        if state.low[node] == state.index[node] {
            let mut component = Vec::new();
            while let Some(member) = state.stack.pop() {
                state.on_stack.remove(member);
                component.push(member);
                if member == node {
                    break;
                }
            }
            component.sort();
            state.components.push(component);
        }
    }
    let mut state = State {
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        components: Vec::new(),
    };
    for &node in graph.keys() {
        if !state.index.contains_key(node) {
            visit(node, graph, &mut state);
        }
    }
    state.components.sort();
    state.components
}

/// The shortest cycle through the first member of a component (breadth-first), as a path
/// that ends where it starts.
fn shortest_cycle<'a>(
    graph: &BTreeMap<&'a ModPath, Vec<&'a ModPath>>,
    members: &BTreeSet<&'a ModPath>,
) -> Option<Vec<&'a ModPath>> {
    let start = *members.iter().next()?;
    let mut came_from: BTreeMap<&ModPath, &ModPath> = BTreeMap::new();
    let mut queue = VecDeque::from([start]);
    while let Some(node) = queue.pop_front() {
        for &next in graph.get(node).into_iter().flatten() {
            if !members.contains(next) {
                continue;
            }
            if next == start {
                let mut path = vec![start, node];
                let mut at = node;
                while let Some(&previous) = came_from.get(at) {
                    path.push(previous);
                    at = previous;
                }
                // `path` runs backwards from the start: start ← node ← … ← start.
                if *path.last()? != start {
                    path.push(start);
                }
                path.reverse();
                return Some(path);
            }
            if !came_from.contains_key(next) && next != start {
                came_from.insert(next, node);
                queue.push_back(next);
            }
        }
    }
    None
}

/// The text with comments, string and character literals replaced by spaces; line breaks stay,
/// so line numbers do too.
fn blank(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank_range = |out: &mut String, range: &[char]| {
        out.extend(range.iter().map(|&c| if c == '\n' { '\n' } else { ' ' }));
    };
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        let after_ident = i > 0 && is_ident(chars[i - 1]);
        let end = if c == '/' && next == Some('/') {
            chars[i..]
                .iter()
                .position(|&c| c == '\n')
                .map_or(chars.len(), |n| i + n)
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            let mut j = i;
            while j < chars.len() {
                if chars[j] == '/' && chars.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if chars[j] == '*' && chars.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    j += 1;
                }
            }
            j
        } else if !after_ident && let Some(end) = raw_string_end(&chars, i) {
            end
        } else if c == '"' || (c == 'b' && next == Some('"') && !after_ident) {
            let mut j = if c == 'b' { i + 2 } else { i + 1 };
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            j + 1
        } else if c == '\'' && next == Some('\\') {
            // `'\n'`, `'\''`, `'\u{…}'`: the escaped character is at i + 2.
            let close = chars
                .get(i + 3..)
                .and_then(|rest| rest.iter().position(|&c| c == '\''));
            close.map_or(i + 1, |n| i + 3 + n + 1)
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i + 3
        } else {
            out.push(c);
            i += 1;
            continue;
        };
        let end = end.min(chars.len());
        blank_range(&mut out, &chars[i..end]);
        i = end;
    }
    out
}

/// Where a raw string literal (`r"…"`, `r#"…"#`, `br"…"`) that starts at `i` ends.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if chars.get(j) == Some(&'b') {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"'
            && chars[j + 1..]
                .iter()
                .take(hashes)
                .filter(|&&c| c == '#')
                .count()
                == hashes
        {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(chars.len())
}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    /// `::`
    PathSep,
    /// `->`
    Arrow,
    Punct(char),
}

#[derive(Clone, Debug)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Identifiers, `::`, `->` and single punctuation of already blanked text; numbers are dropped.
fn tokens(blanked: &str) -> Vec<Token> {
    let chars: Vec<char> = blanked.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            if !c.is_ascii_digit() {
                let word: String = chars[start..i].iter().collect();
                out.push(Token {
                    tok: Tok::Ident(word),
                    line,
                });
            }
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else if c == '-' && chars.get(i + 1) == Some(&'>') {
            out.push(Token {
                tok: Tok::Arrow,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        }
    }
    out
}

fn is_ident(token: Option<&Token>, word: &str) -> bool {
    matches!(token, Some(Token { tok: Tok::Ident(w), .. }) if w == word)
}

fn is_punct(token: Option<&Token>, c: char) -> bool {
    matches!(token, Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
}

fn ident(token: Option<&Token>) -> Option<&str> {
    match token {
        Some(Token {
            tok: Tok::Ident(word),
            ..
        }) => Some(word),
        _ => None,
    }
}

/// A path read in a module, not yet resolved.
#[derive(Debug)]
struct Reference {
    from: ModPath,
    path: Vec<String>,
    line: usize,
}

/// What one file declares and references, test items left out.
#[derive(Debug, Default)]
struct Scan {
    /// Out-of-line and inline modules declared outside test items, in order.
    declared: Vec<ModPath>,
    inline_modules: Vec<ModPath>,
    /// Modules declared under `#[cfg(test)]`.
    test_modules: Vec<ModPath>,
    references: Vec<Reference>,
}

/// Reads one file of module `module`.
fn scan(module: &[String], text: &str) -> Scan {
    let tokens = tokens(&blank(text));
    let mut scan = Scan::default();
    // Inline modules open at a brace depth and close when it returns there.
    let mut scopes: Vec<(String, usize)> = Vec::new();
    let current = |scopes: &[(String, usize)]| -> ModPath {
        let mut path = module.to_vec();
        path.extend(scopes.iter().map(|(name, _)| name.clone()));
        path
    };
    let mut depth = 0;
    let mut test_item = false;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        if is_punct(Some(token), '#') {
            // An attribute: `#[…]` or `#![…]`.
            let open = if is_punct(tokens.get(i + 1), '!') {
                i + 2
            } else {
                i + 1
            };
            if is_punct(tokens.get(open), '[') {
                let close = matching(&tokens, open);
                let inside: Vec<&Tok> = tokens[open + 1..close].iter().map(|t| &t.tok).collect();
                if inside
                    == [
                        &Tok::Ident("cfg".into()),
                        &Tok::Punct('('),
                        &Tok::Ident("test".into()),
                        &Tok::Punct(')'),
                    ]
                {
                    test_item = true;
                }
                i = close + 1;
                continue;
            }
        }
        if test_item {
            test_item = false;
            let end = item_end(&tokens, i);
            if let Some(name) = out_of_line_module(&tokens[i..end]) {
                let mut path = current(&scopes);
                path.push(name);
                scan.test_modules.push(path);
            }
            i = end;
            continue;
        }
        match &token.tok {
            Tok::Ident(word) if word == "mod" => {
                if let Some(name) = ident(tokens.get(i + 1)) {
                    let mut path = current(&scopes);
                    path.push(name.to_owned());
                    if is_punct(tokens.get(i + 2), '{') {
                        scan.inline_modules.push(path.clone());
                        scan.declared.push(path);
                        scopes.push((name.to_owned(), depth));
                        depth += 1;
                        i += 3;
                        continue;
                    }
                    if is_punct(tokens.get(i + 2), ';') {
                        scan.declared.push(path);
                        i += 3;
                        continue;
                    }
                }
            }
            Tok::Ident(word) if word == "use" => {
                let from = current(&scopes);
                let mut i_tree = i + 1;
                if tokens.get(i_tree).is_some_and(|t| t.tok == Tok::PathSep) {
                    // `use ::other_crate::…`
                    i = item_end(&tokens, i);
                    continue;
                }
                let mut paths = Vec::new();
                i_tree = use_tree(&tokens, i_tree, &[], &mut paths);
                for (path, line) in paths {
                    scan.references.push(Reference {
                        from: from.clone(),
                        path,
                        line,
                    });
                }
                i = i_tree.max(i + 1);
                continue;
            }
            Tok::Ident(word)
                if matches!(word.as_str(), "crate" | "super" | "self")
                    && tokens.get(i + 1).is_some_and(|t| t.tok == Tok::PathSep) =>
            {
                // `pub(in crate::a)` is a visibility, not a dependency.
                let visibility =
                    i >= 2 && is_ident(tokens.get(i - 1), "in") && is_punct(tokens.get(i - 2), '(');
                let mut path = vec![word.clone()];
                let mut j = i + 1;
                while tokens.get(j).is_some_and(|t| t.tok == Tok::PathSep) {
                    match ident(tokens.get(j + 1)) {
                        Some(segment) => {
                            path.push(segment.to_owned());
                            j += 2;
                        }
                        None => break,
                    }
                }
                if !visibility {
                    scan.references.push(Reference {
                        from: current(&scopes),
                        path,
                        line: token.line,
                    });
                }
                i = j;
                continue;
            }
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth = depth.saturating_sub(1);
                if scopes.last().is_some_and(|(_, open)| *open == depth) {
                    scopes.pop();
                }
            }
            _ => {}
        }
        i += 1;
    }
    scan
}

/// The index of the bracket that closes the one at `open`.
fn matching(tokens: &[Token], open: usize) -> usize {
    let mut depth = 0;
    for (i, token) in tokens.iter().enumerate().skip(open) {
        match token.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']' | '}') => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    tokens.len().saturating_sub(1)
}

/// Where the item that starts at `start` ends (exclusive): after its `;` or its closing brace.
fn item_end(tokens: &[Token], start: usize) -> usize {
    let mut depth = 0i32;
    for (i, token) in tokens.iter().enumerate().skip(start) {
        match token.tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth <= 0 {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            _ => {}
        }
    }
    tokens.len()
}

/// The name of `[pub[(…)]] mod name;`.
fn out_of_line_module(item: &[Token]) -> Option<String> {
    let mut i = 0;
    if is_ident(item.get(i), "pub") {
        i += 1;
        if is_punct(item.get(i), '(') {
            i = matching(item, i) + 1;
        }
    }
    (is_ident(item.get(i), "mod") && is_punct(item.get(i + 2), ';'))
        .then(|| ident(item.get(i + 1)).map(str::to_owned))
        .flatten()
}

/// Reads a `use` tree from `i` into full paths; returns where it stopped.
fn use_tree(
    tokens: &[Token],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, usize)>,
) -> usize {
    let mut path = prefix.to_vec();
    let line = tokens.get(i).map_or(0, |t| t.line);
    loop {
        match tokens.get(i).map(|t| &t.tok) {
            Some(Tok::Ident(segment)) if segment != "as" => {
                path.push(segment.clone());
                i += 1;
                if tokens.get(i).is_some_and(|t| t.tok == Tok::PathSep) {
                    i += 1;
                    continue;
                }
                break;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                while i < tokens.len()
                    && !is_punct(tokens.get(i), '}')
                    && !is_punct(tokens.get(i), ';')
                {
                    let next = use_tree(tokens, i, &path, out);
                    i = if is_punct(tokens.get(next), ',') {
                        next + 1
                    } else {
                        next.max(i + 1)
                    };
                }
                return i + 1;
            }
            Some(Tok::Punct('*')) => {
                out.push((path, line));
                return i + 1;
            }
            _ => break,
        }
    }
    if is_ident(tokens.get(i), "as") {
        i += 2;
    }
    if !path.is_empty() {
        out.push((path, line));
    }
    i
}

/// The lines of every `Result<…, String>` (a `Result` whose second argument is `String`).
fn string_error_lines(text: &str) -> Vec<usize> {
    let tokens = tokens(&blank(text));
    let mut lines = Vec::new();
    for (i, token) in tokens.iter().enumerate() {
        if !is_ident(Some(token), "Result") || !is_punct(tokens.get(i + 1), '<') {
            continue;
        }
        let mut depth = 0;
        let mut arguments: Vec<Vec<&Tok>> = vec![Vec::new()];
        for next in &tokens[i + 1..] {
            match &next.tok {
                Tok::Punct('<' | '(' | '[') => {
                    depth += 1;
                    if depth == 1 {
                        continue;
                    }
                }
                Tok::Punct('>' | ')' | ']') => {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                Tok::Punct(',') if depth == 1 => {
                    arguments.push(Vec::new());
                    continue;
                }
                Tok::Punct(';' | '{') => break,
                _ => {}
            }
            if let Some(argument) = arguments.last_mut() {
                argument.push(&next.tok);
            }
        }
        let is_string = arguments.get(1).is_some_and(|argument| {
            argument.last() == Some(&&Tok::Ident("String".into()))
                && argument
                    .iter()
                    .all(|tok| matches!(tok, Tok::Ident(_) | Tok::PathSep))
        });
        if is_string {
            lines.push(token.line);
        }
    }
    lines
}

/// The scanner on small synthetic crates, so that a check that reads nothing cannot pass.
mod scanner {
    use super::*;

    fn analyse(files: &[(&str, &str)]) -> Analysis {
        Analysis::new(
            files
                .iter()
                .map(|(path, text)| SourceFile {
                    path: (*path).to_owned(),
                    text: (*text).to_owned(),
                })
                .collect(),
        )
    }

    fn edges(analysis: &Analysis) -> Vec<String> {
        analysis
            .edges
            .keys()
            .map(|(from, to)| format!("{} -> {}", show(from), show(to)))
            .collect()
    }

    #[test]
    fn finds_a_cycle_between_two_top_level_modules() {
        let analysis = analyse(&[
            ("lib.rs", "pub mod a;\npub mod b;\n"),
            ("a.rs", "use crate::b::Thing;\npub fn f() {}\n"),
            ("b.rs", "pub struct Thing;\nfn g() { crate::a::f() }\n"),
        ]);
        assert_eq!(edges(&analysis), ["a -> b", "b -> a"]);
        let cycles = analysis.cycles();
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert!(cycles[0].contains("a → b (a.rs:1)"), "{}", cycles[0]);
        assert!(cycles[0].contains("b → a (b.rs:2)"), "{}", cycles[0]);
    }

    #[test]
    fn finds_a_cycle_of_three_through_super_and_self_paths() {
        let analysis = analyse(&[
            ("lib.rs", "mod p;\n"),
            ("p/mod.rs", "mod x;\nmod y;\nmod z;\n"),
            ("p/x.rs", "use super::y::Y;\n"),
            ("p/y.rs", "pub struct Y;\nfn f() { super::z::g() }\n"),
            ("p/z.rs", "pub fn g() {}\nuse crate::p::x;\n"),
        ]);
        assert_eq!(
            edges(&analysis),
            ["p::x -> p::y", "p::y -> p::z", "p::z -> p::x"]
        );
        let cycles = analysis.cycles();
        assert_eq!(cycles.len(), 1, "{cycles:?}");
        assert!(cycles[0].contains("3 modules under `p`"), "{}", cycles[0]);
        assert!(
            cycles[0].contains("shortest: p::x → p::y → p::z → p::x"),
            "{}",
            cycles[0]
        );
    }

    #[test]
    fn a_deep_reference_is_an_edge_between_the_siblings_under_the_common_parent() {
        let analysis = analyse(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            ("a/mod.rs", "mod c;\n"),
            ("a/c.rs", "fn f() { let _ = crate::b::d::e::item(); }\n"),
            ("b/mod.rs", "pub mod d;\n"),
            ("b/d/mod.rs", "pub mod e;\n"),
            ("b/d/e.rs", "pub fn item() {}\n"),
        ]);
        assert_eq!(edges(&analysis), ["a -> b"]);
    }

    #[test]
    fn use_groups_make_no_false_edges() {
        // `a` inside the group is c's function, not the module `a`; `self` is `c` itself.
        let analysis = analyse(&[
            ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
            ("a.rs", "use crate::b;\n"),
            (
                "b.rs",
                "use crate::{c::{self, a}, c::a as renamed};\nuse std::{fs, io::Read};\n",
            ),
            ("c.rs", "pub fn a() {}\n"),
        ]);
        assert_eq!(edges(&analysis), ["a -> b", "b -> c"]);
        assert!(analysis.cycles().is_empty());
    }

    #[test]
    fn use_groups_spanning_modules_make_every_edge() {
        let analysis = analyse(&[
            ("lib.rs", "mod a;\nmod b;\nmod c;\n"),
            (
                "a.rs",
                "use crate::{\n    b::{Thing, other::More},\n    c,\n};\n",
            ),
            ("b/mod.rs", "pub mod other;\npub struct Thing;\n"),
            ("b/other.rs", "pub struct More;\n"),
            ("c.rs", ""),
        ]);
        assert_eq!(edges(&analysis), ["a -> b", "a -> c"]);
    }

    #[test]
    fn test_modules_and_test_files_are_ignored() {
        let analysis = analyse(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            (
                "a.rs",
                "pub fn f() {}\n#[cfg(test)]\nmod tests {\n    use crate::b::g;\n    fn t() { crate::b::g() }\n}\n#[cfg(test)]\nmod more;\n",
            ),
            ("a/more.rs", "use crate::b::g;\n"),
            (
                "b.rs",
                "pub fn g() { crate::a::f() }\n#[cfg(test)]\nmod tests;\n",
            ),
            ("b/tests.rs", "use crate::a::f;\n"),
        ]);
        assert_eq!(edges(&analysis), ["b -> a"]);
        assert!(analysis.cycles().is_empty());
        assert!(analysis.test_files.contains("a/more.rs"));
        assert!(analysis.test_files.contains("b/tests.rs"));
    }

    #[test]
    fn comments_strings_and_visibilities_are_not_dependencies() {
        let analysis = analyse(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            (
                "a.rs",
                "//! See [`crate::b`].\n/// Uses [`crate::b::g`].\n/* crate::b::g() /* nested crate::b */ */\nconst S: &str = \"crate::b::g\";\nconst R: &str = r#\"crate::b \"quoted\" \"#;\nconst C: char = '\"';\npub(in crate::b) fn f<'a>(x: &'a str) -> &'a str { x }\n",
            ),
            ("b.rs", "pub fn g() { crate::a::f(\"\") }\n"),
        ]);
        assert_eq!(edges(&analysis), ["b -> a"]);
    }

    #[test]
    fn inline_modules_resolve_super_from_where_they_are() {
        let analysis = analyse(&[
            ("lib.rs", "mod a;\nmod b;\n"),
            (
                "a.rs",
                "pub struct X;\nmod exit {\n    use super::X;\n    fn f() { crate::b::g() }\n}\n",
            ),
            ("b.rs", "pub fn g() {}\n"),
        ]);
        assert_eq!(edges(&analysis), ["a -> b"]);
    }

    #[test]
    fn lib_rs_must_declare_dependencies_first() {
        let files = |lib: &'static str| {
            analyse(&[
                ("lib.rs", lib),
                ("low.rs", "pub fn f() {}\n"),
                ("high.rs", "use crate::low::f;\n"),
            ])
        };
        assert!(
            files("pub mod low;\npub mod high;\n")
                .lib_order()
                .is_empty()
        );
        let offenders = files("pub mod high;\npub mod low;\n").lib_order();
        assert_eq!(
            offenders,
            ["- `high` is declared before `low`, which it uses (high.rs:1)"]
        );
    }

    #[test]
    fn file_sizes_count_inline_tests_and_exempt_test_files() {
        let lines = |n: usize, tail: &str| format!("{}{tail}", "fn f() {}\n".repeat(n));
        let long = lines(FILE_LINES_MAX + 1, "");
        let exact = lines(FILE_LINES_MAX, "");
        let with_tests = lines(FILE_LINES_MAX - 1, "#[cfg(test)]\nmod tests {}\n");
        let analysis = analyse(&[
            (
                "lib.rs",
                "mod long;\nmod exact;\nmod inline;\nmod support;\n#[cfg(test)]\nmod fixtures;\n",
            ),
            ("long.rs", long.as_str()),
            ("exact.rs", exact.as_str()),
            ("inline.rs", with_tests.as_str()),
            ("support.rs", "#[cfg(test)]\nmod tests;\n"),
            ("support/tests.rs", long.as_str()),
            ("fixtures.rs", long.as_str()),
            ("main.rs", long.as_str()),
        ]);
        assert_eq!(
            analysis.oversized_files(),
            [
                format!("- long.rs: {} lines", FILE_LINES_MAX + 1),
                format!("- inline.rs: {} lines", FILE_LINES_MAX + 1),
                format!("- main.rs: {} lines", FILE_LINES_MAX + 1),
            ]
        );
    }

    #[test]
    fn the_engine_limit_is_strict_and_a_missing_engine_fails() {
        let engine = |path: &'static str, n: usize| {
            let text = "fn f() {}\n".repeat(n);
            analyse(&[("lib.rs", "mod engine;\n"), (path, text.as_str())]).oversized_engine()
        };
        assert!(engine("engine.rs", ENGINE_LINES_LIMIT - 1).is_empty());
        assert_eq!(engine("engine.rs", ENGINE_LINES_LIMIT).len(), 1);
        assert_eq!(engine("engine/mod.rs", ENGINE_LINES_LIMIT).len(), 1);
        assert!(engine("engine/mod.rs", ENGINE_LINES_LIMIT - 1).is_empty());
        assert_eq!(engine("motor.rs", 1).len(), 1);
    }

    #[test]
    fn finds_string_errors_only_in_code() {
        let text = "\
fn a() -> Result<Vec<u8>, String> { todo!() }
fn b() -> Result<String, Error> { todo!() }
fn c() -> Result<Box<dyn Fn(u8) -> u8>, std::string::String> { todo!() }
// fn d() -> Result<(), String>
const E: &str = \"Result<(), String>\";
type F<T> = std::result::Result<T, String>;
fn g() -> io::Result<String> { todo!() }
fn h() -> Result<(), Vec<String>> { todo!() }
fn i() -> Result<
    (),
    String,
> { todo!() }
";
        assert_eq!(string_error_lines(text), [1, 3, 6, 9]);
    }
}
