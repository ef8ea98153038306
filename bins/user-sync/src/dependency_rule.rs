//! The dependency rule at the top of `lib.rs`, held against the sources: the table there is
//! read as it is written, so the rule and its check can't drift apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Room → the rooms it may import, from the table at the top of `lib.rs`.
type Rule = BTreeMap<String, BTreeSet<String>>;

fn rule(lib: &str) -> Rule {
    lib.lines()
        .filter_map(|line| line.strip_prefix("//! | `"))
        .map(|row| {
            let cells: Vec<&str> = row.split('|').collect();
            let room = cells[0].trim().trim_end_matches('`').to_string();
            let allowed = cells[2]
                .split(',')
                .map(|r| r.trim().trim_matches('`'))
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .collect();
            (room, allowed)
        })
        .collect()
}

/// Names `lib.rs` re-exports at the crate root (`crate::Error`), each with its room.
fn root_names(lib: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for statement in lib.split(';') {
        let Some(path) = statement.trim().strip_prefix("pub use ") else {
            continue;
        };
        let room = path
            .split("::")
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        for name in path.split(|c: char| !(c.is_alphanumeric() || c == '_')) {
            if !name.is_empty() && name != room {
                names.insert(name.to_string(), room.clone());
            }
        }
    }
    names
}

/// `source` with its comments and the contents of its string and character literals
/// blanked (newlines kept), so that neither a comment nor a string counts as an import.
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let (c, next) = (chars[i], chars.get(i + 1).copied());
        let end = match (c, next) {
            ('/', Some('/')) => (i..chars.len())
                .find(|&k| chars[k] == '\n')
                .unwrap_or(chars.len()),
            ('/', Some('*')) => (i + 2..chars.len())
                .find(|&k| chars[k - 1] == '*' && chars[k] == '/')
                .map_or(chars.len(), |k| k + 1),
            ('"', _) => {
                let mut k = i + 1;
                while k < chars.len() && chars[k] != '"' {
                    k += if chars[k] == '\\' { 2 } else { 1 };
                }
                k.min(chars.len() - 1) + 1
            }
            // A character literal ('x', '\n'), not a lifetime ('a).
            ('\'', Some('\\')) => (i + 2..chars.len())
                .find(|&k| chars[k] == '\'')
                .map_or(i + 1, |k| k + 1),
            ('\'', Some(_)) if chars.get(i + 2) == Some(&'\'') => i + 3,
            _ => {
                out.push(c);
                i += 1;
                continue;
            }
        };
        out.extend(chars[i..end].iter().map(|&c| blank(c)));
        i = end;
    }
    out
}

/// The first segment of every `crate::` path in `source` (each name of a `crate::{…}`
/// group), with its line.
fn crate_paths(source: &str) -> Vec<(usize, String)> {
    let code = code_only(source);
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        // `crate::` may end a line, its path going on in the next.
        let rest = code[at + "crate::".len()..].trim_start();
        match rest.strip_prefix('{') {
            Some(group) => found.extend(
                group_heads(group)
                    .into_iter()
                    .map(|name| (line_of(at), name)),
            ),
            None => found.push((line_of(at), identifier(rest))),
        }
    }
    found
}

/// The first name of each path in a `{…}` group, `text` starting after its brace.
fn group_heads(text: &str) -> Vec<String> {
    let (mut heads, mut depth, mut start) = (Vec::new(), 0, true);
    for (i, c) in text.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && (c.is_alphanumeric() || c == '_') => {
                heads.push(identifier(&text[i..]));
                start = false;
            }
            _ => {}
        }
    }
    heads
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

/// Lines of `source` (a file `depth` modules below the crate root) whose `super::` paths
/// climb to the crate root, where the rule can't see which room they reach. An inline
/// `mod tests` (at the end of a file) is one module deeper.
fn climbs_out(depth: usize, source: &str) -> Vec<usize> {
    let code = code_only(source);
    let tests = code.find("mod tests {").unwrap_or(code.len());
    let mut lines = Vec::new();
    for (at, _) in code.match_indices("super::") {
        if at >= "super::".len() && &code[at - "super::".len()..at] == "super::" {
            continue; // counted from the chain's first `super::`
        }
        let chain = code[at..]
            .split("super::")
            .skip(1)
            .take_while(|s| s.is_empty())
            .count()
            + 1;
        if chain >= depth + usize::from(at > tests) {
            lines.push(code[..at].matches('\n').count() + 1);
        }
    }
    lines
}

/// What `source`, in `room`, imports that the rule doesn't allow.
fn violations(
    room: &str,
    file: &str,
    source: &str,
    rule: &Rule,
    root: &BTreeMap<String, String>,
) -> Vec<String> {
    let allowed = &rule[room];
    crate_paths(source)
        .into_iter()
        .filter_map(|(line, first)| {
            let Some(target) = rule
                .get_key_value(&first)
                .map(|(r, _)| r)
                .or(root.get(&first))
            else {
                return Some(format!(
                    "{file}:{line}: `crate::{first}` names no room of lib.rs's table"
                ));
            };
            (target != room && !allowed.contains(target)).then(|| {
                format!("{file}:{line}: `{room}` imports `crate::{first}` (room `{target}`)")
            })
        })
        .collect()
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("src is readable") {
        let path = entry.expect("src is readable").path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[test]
fn the_rooms_import_only_what_the_rule_allows() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let rule = rule(&lib);
    let root = root_names(&lib);
    assert!(rule.len() >= 7, "the table at the top of lib.rs: {rule:?}");
    let mut problems = Vec::new();
    for path in sources(&src) {
        let file = path.strip_prefix(&src).expect("under src");
        let first = file.components().next().expect("a path");
        let room = first.as_os_str().to_string_lossy();
        let room = room.trim_end_matches(".rs");
        // The crate root and the binary wire the rooms together.
        if file.components().count() == 1 && matches!(room, "lib" | "main" | "dependency_rule") {
            continue;
        }
        if !rule.contains_key(room) {
            problems.push(format!(
                "{}: room `{room}` is not in lib.rs's table",
                file.display()
            ));
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("a source file");
        problems.extend(violations(
            room,
            &file.display().to_string(),
            &source,
            &rule,
            &root,
        ));
    }
    assert!(
        problems.is_empty(),
        "imports the rule forbids:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_rule_has_no_cycle() {
    let lib = include_str!("lib.rs");
    let mut rule = rule(lib);
    // Take away, round by round, the rooms whose imports are all taken away already.
    while !rule.is_empty() {
        let done: Vec<String> = rule
            .iter()
            .filter(|(_, allowed)| allowed.iter().all(|a| !rule.contains_key(a)))
            .map(|(room, _)| room.clone())
            .collect();
        assert!(!done.is_empty(), "the rule has a cycle among {rule:?}");
        for room in done {
            rule.remove(&room);
        }
    }
}

#[test]
fn a_forbidden_import_is_caught() {
    let lib = include_str!("lib.rs");
    let (rule, root) = (rule(lib), root_names(lib));
    let store = "use crate::domain::Entity;\nuse crate::{config::MongoConfig, consumer::run};\n";
    assert_eq!(
        violations("store", "store/x.rs", store, &rule, &root),
        ["store/x.rs:2: `store` imports `crate::consumer` (room `consumer`)"]
    );
    let ops = "// crate::consumer in a comment is no import\nfn f() { crate::run(); }\n";
    assert_eq!(
        violations("ops", "ops/x.rs", ops, &rule, &root),
        ["ops/x.rs:2: `ops` imports `crate::run` (room `consumer`)"]
    );
    let domain = "use crate::{\n    entity::{Entity, Slot},\n    Result,\n};\n";
    assert_eq!(
        violations("domain", "domain/x.rs", domain, &rule, &root),
        [
            "domain/x.rs:1: `crate::entity` names no room of lib.rs's table",
            "domain/x.rs:1: `domain` imports `crate::Result` (room `error`)"
        ]
    );
    let config = "let uri = \"mongodb://h\"; use crate::\n    store::Store;\n";
    assert_eq!(
        violations("config", "config/x.rs", config, &rule, &root),
        ["config/x.rs:1: `config` imports `crate::store` (room `store`)"]
    );
    // From store/link.rs, two modules down: `super::` is the room, `super::super::` the root.
    let link = "use super::Store;\nuse super::super::consumer::Applier;\nmod tests {\n    use super::super::Store;\n}\n";
    assert_eq!(climbs_out(2, link), [2]);
}
