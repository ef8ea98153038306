//! The documentation's links. README.md, ARCHITECTURE.md, deploy/README.md and every page of
//! the book (docs/src, built by `scripts/docs.sh build`) link only to files that exist and
//! to headings those files have, and every page of the book is in its SUMMARY.md. Anchors
//! are GitHub's and mdBook's heading ids: the heading's text, lower case, spaces as `-`,
//! punctuation other than `-` and `_` dropped, `-1`, `-2` … after a repeated one.
#![allow(missing_docs)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use test_support::markdown::anchor;

/// The front page stays one a newcomer reads in two minutes; the reference is the book.
const README_MOST_LINES: usize = 100;

fn root() -> PathBuf {
    test_support::workspace_root()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// docs/src's Markdown files, SUMMARY.md included, relative to the workspace root.
fn book_pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, found: &mut Vec<PathBuf>) {
        let entries = std::fs::read_dir(root().join(dir))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
            let path = dir.join(entry.file_name());
            if entry.path().is_dir() {
                walk(&path, found);
            } else if path.extension().is_some_and(|e| e == "md") {
                found.push(path);
            }
        }
    }
    let mut pages = Vec::new();
    walk(Path::new("docs/src"), &mut pages);
    pages.sort();
    pages
}

/// Every document whose links are checked.
fn documents() -> Vec<PathBuf> {
    let mut documents: Vec<PathBuf> = ["README.md", "ARCHITECTURE.md", "deploy/README.md"]
        .iter()
        .map(PathBuf::from)
        .collect();
    documents.extend(book_pages());
    documents
}

/// The text outside fenced code blocks, line by line (a fenced line becomes empty, so line
/// numbers stay right).
fn prose_lines(text: &str) -> Vec<&str> {
    let mut fence: Option<&str> = None;
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            match fence {
                Some(marker) => {
                    if trimmed.starts_with(marker) {
                        fence = None;
                    }
                    ""
                }
                None if trimmed.starts_with("```") || trimmed.starts_with("~~~") => {
                    fence = Some(&trimmed[..3]);
                    ""
                }
                None => line,
            }
        })
        .collect()
}

/// `text` without its inline code spans (a run of backticks up to the next run of the same
/// length); an unmatched run stays as it is.
fn without_code_spans(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'`' {
            let next = text[i..].find('`').map_or(text.len(), |n| i + n);
            out.push_str(&text[i..next]);
            i = next;
            continue;
        }
        let run = bytes[i..].iter().take_while(|&&b| b == b'`').count();
        let mut j = i + run;
        let mut close = None;
        while j < bytes.len() {
            if bytes[j] == b'`' {
                let other = bytes[j..].iter().take_while(|&&b| b == b'`').count();
                if other == run {
                    close = Some(j + other);
                    break;
                }
                j += other;
            } else {
                j += 1;
            }
        }
        match close {
            Some(end) => {
                // Keep the line breaks the span held, for the line numbers.
                out.extend(text[i..end].chars().filter(|&c| c == '\n'));
                i = end;
            }
            None => {
                out.push_str(&text[i..i + run]);
                i += run;
            }
        }
    }
    out
}

/// An ATX heading's text (`## Text ##` → `Text`), if `line` is one.
fn heading(line: &str) -> Option<&str> {
    let hashes = line.bytes().take_while(|&b| b == b'#').count();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    let rest = &line[hashes..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some(rest.trim().trim_end_matches('#').trim_end())
}

/// The anchors of a Markdown file's headings.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut anchors = BTreeSet::new();
    for line in prose_lines(text) {
        let Some(heading) = heading(line) else {
            continue;
        };
        let base = anchor(heading);
        let count = seen.entry(base.clone()).or_insert(0);
        anchors.insert(if *count == 0 {
            base
        } else {
            format!("{base}-{count}")
        });
        *count += 1;
    }
    anchors
}

/// A link: its line (1-based) and its target as written.
struct Link {
    line: usize,
    target: String,
}

/// The links of a Markdown text: inline `[text](target)` and `![alt](target)`, and
/// reference definitions `[label]: target`; none in code.
fn links(text: &str) -> Vec<Link> {
    let prose = without_code_spans(&prose_lines(text).join("\n"));
    let mut links = Vec::new();
    let line_of = |offset: usize| prose[..offset].matches('\n').count() + 1;
    let mut from = 0;
    while let Some(found) = prose[from..].find("](") {
        let start = from + found + 2;
        let mut depth = 0usize;
        let mut end = None;
        for (i, c) in prose[start..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' if depth == 0 => {
                    end = Some(start + i);
                    break;
                }
                ')' => depth -= 1,
                '\n' => break,
                _ => {}
            }
        }
        let Some(end) = end else {
            from = start;
            continue;
        };
        // `(<target> "title")` or `(target "title")`: the target is the first word.
        let inner = prose[start..end].trim();
        let target = match inner.strip_prefix('<') {
            Some(rest) => rest.split('>').next().unwrap_or_default(),
            None => inner.split_whitespace().next().unwrap_or_default(),
        };
        links.push(Link {
            line: line_of(start),
            target: target.to_string(),
        });
        from = end;
    }
    for (i, line) in prose.lines().enumerate() {
        let indented = line.len() - line.trim_start().len();
        let line = line.trim_start();
        if indented > 3 || !line.starts_with('[') {
            continue;
        }
        if let Some(close) = line.find("]:") {
            if let Some(target) = line[close + 2..].split_whitespace().next() {
                links.push(Link {
                    line: i + 1,
                    target: target.trim_matches(['<', '>']).to_string(),
                });
            }
        }
    }
    links
}

/// `path` with its `.` and `..` resolved, without touching the file system.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// What is wrong with each link of `document` (a path relative to the workspace root).
fn broken_links(document: &Path) -> Vec<String> {
    let text = read(document);
    let here = document.parent().unwrap_or(Path::new(""));
    let mut broken = Vec::new();
    for Link { line, target } in links(&text) {
        let at = format!("{}:{line}: ({target})", document.display());
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        if target.is_empty() {
            broken.push(format!("{at} an empty link"));
            continue;
        }
        if target.starts_with('/') {
            broken.push(format!(
                "{at} an absolute path: GitHub and mdBook read it differently; link relatively"
            ));
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() {
            document.to_path_buf()
        } else {
            match normalize(&here.join(path)) {
                Some(file) => file,
                None => {
                    broken.push(format!("{at} leaves the repository"));
                    continue;
                }
            }
        };
        if !root().join(&file).exists() {
            broken.push(format!("{at} no such file: {}", file.display()));
            continue;
        }
        let Some(anchor) = anchor else {
            continue;
        };
        if file.extension().is_none_or(|e| e != "md") {
            broken.push(format!("{at} an anchor into a file that isn't Markdown"));
            continue;
        }
        if !anchors(&read(&file)).contains(anchor) {
            broken.push(format!(
                "{at} {} has no heading whose anchor is #{anchor}",
                file.display()
            ));
        }
    }
    broken
}

#[test]
fn every_link_of_the_documentation_points_at_a_file_and_heading_that_exist() {
    let documents = documents();
    assert!(
        documents.len() > 5,
        "no book pages found under docs/src: {documents:?}"
    );
    let broken: Vec<String> = documents.iter().flat_map(|d| broken_links(d)).collect();
    assert!(
        broken.is_empty(),
        "{} broken links:\n{}",
        broken.len(),
        broken.join("\n")
    );
}

#[test]
fn every_page_of_the_book_is_in_its_summary() {
    let summary_path = Path::new("docs/src/SUMMARY.md");
    let listed: BTreeSet<PathBuf> = links(&read(summary_path))
        .into_iter()
        .filter_map(|link| normalize(&Path::new("docs/src").join(&link.target)))
        .collect();
    let missing: Vec<String> = book_pages()
        .into_iter()
        .filter(|page| page != summary_path && !listed.contains(page))
        .map(|page| page.display().to_string())
        .collect();
    assert!(
        missing.is_empty(),
        "pages mdBook would leave out of the book (add them to docs/src/SUMMARY.md): {missing:?}"
    );
}

#[test]
fn the_readme_stays_a_front_page() {
    let lines = read(Path::new("README.md")).lines().count();
    assert!(
        lines <= README_MOST_LINES,
        "README.md has {lines} lines: keep it a front page (what it is, the two commands, the \
         picture, links) and put the reference in a page of docs/src"
    );
}

#[test]
fn the_link_reader_knows_headings_code_and_links() {
    let text = "# Hello, `world`!\n\n## Bounding `webhook_events`\n\n## The store's work\n\n\
                ## Twice\n\n## Twice\n\n```sh\n# not a heading [x](nowhere.md)\n```\n\n\
                See [a](b.md#c) and `[not](a-link.md)`, ``[nor](this.md)``, \
                [nested (parens)](d.md \"title\").\n\n[ref]: e.md#f\n";
    let expected: BTreeSet<String> = [
        "hello-world",
        "bounding-webhook_events",
        "the-stores-work",
        "twice",
        "twice-1",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(anchors(text), expected);
    let targets: Vec<String> = links(text).into_iter().map(|l| l.target).collect();
    assert_eq!(targets, ["b.md#c", "d.md", "e.md#f"]);
    assert_eq!(
        anchor(r#"Reading "the organizations of user X with their roles""#),
        "reading-the-organizations-of-user-x-with-their-roles"
    );
    assert_eq!(
        normalize(Path::new("docs/src/../../deploy/README.md")),
        Some(PathBuf::from("deploy/README.md"))
    );
}
