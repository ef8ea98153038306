//! Markdown, as the documentation tests read it.

/// The id GitHub and mdBook give a heading: the heading's text (a link's by its text),
/// lower case, spaces as `-`, punctuation other than `-` and `_` dropped.
pub fn anchor(heading: &str) -> String {
    // A link in a heading counts by its text.
    let mut text = String::new();
    let mut rest = heading;
    while let Some(start) = rest.find("](") {
        let Some(len) = rest[start..].find(')') else {
            break;
        };
        text.push_str(&rest[..start]);
        rest = &rest[start + len + 1..];
    }
    text.push_str(rest);
    text.to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}
