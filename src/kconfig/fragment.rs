//! One kernel config fragment, parsed strictly: every line is blank, a comment, `CONFIG_X=value`,
//! `# CONFIG_X is not set`, or the boardsmith marker `# boardsmith: optional [reason]`, which marks the
//! assignment on the next line as optional (its failure in the kernel check becomes a warning).
//!
//! The marker is a comment line of its own so that fragments stay valid input for the kernel's
//! `scripts/kconfig/merge_config.sh`, which compares whole lines and would misreport a trailing marker.
//! Anything else is rejected with file:line:col; the kernel's own parser would skip it with at most a
//! warning, and a fragment line that is silently skipped is exactly what this module exists to prevent.

use super::value::{Tri, Value};

/// The marker that makes the next assignment optional.
pub const OPTIONAL_MARKER: &str = "# boardsmith: optional";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}:{col}: {message}\n    {text}")]
pub struct ParseError {
    pub file: String,
    pub line: usize,
    pub col: usize,
    pub message: String,
    /// The offending line, as written.
    pub text: String,
}

/// One assignment in a fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Symbol name without the `CONFIG_` prefix.
    pub symbol: String,
    pub value: Value,
    /// 1-based line in the fragment.
    pub line: usize,
    /// `Some(reason)` (possibly empty) when marked with [`OPTIONAL_MARKER`].
    pub optional: Option<String>,
    /// The comment block directly above (the marker aside): what the option enables, for release notes.
    pub description: Option<String>,
}

/// A parsed fragment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fragment {
    /// Short name used in messages: `usb-net` for an embedded fragment, the path for a file.
    pub name: String,
    /// Where it was read: `embedded:kernel-configs/usb-net.config` or a path on disk.
    pub origin: String,
    pub entries: Vec<Entry>,
}

impl Fragment {
    /// `origin:line`, for messages.
    pub fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.origin)
    }
}

fn is_symbol_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Parses fragment text. `origin` names the file in errors.
pub fn parse(name: &str, origin: &str, text: &str) -> Result<Fragment, ParseError> {
    let mut entries = Vec::new();
    // Line and reason of a marker waiting for its assignment.
    let mut pending: Option<(usize, String, String)> = None;
    let mut comment: Option<String> = None;
    for (i, raw) in text.split('\n').enumerate() {
        let line_no = i + 1;
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        let err = |col: usize, message: String| ParseError {
            file: origin.to_string(),
            line: line_no,
            col,
            message,
            text: line.to_string(),
        };
        let parsed = parse_line(line).map_err(|(off, m)| err(col_of(line, off), m))?;
        if let Some((marker_line, marker_text, _)) = &pending
            && !matches!(parsed, Line::Assignment(..))
        {
            return Err(ParseError {
                file: origin.to_string(),
                line: *marker_line,
                col: 1,
                message: format!(
                    "`{OPTIONAL_MARKER}` must be followed directly by the CONFIG_ line it marks (line {line_no} is not one)"
                ),
                text: marker_text.clone(),
            });
        }
        match parsed {
            Line::Blank => comment = None,
            // A comment block (consecutive lines) describes the assignment right after it.
            Line::Comment(text) => {
                comment = Some(match comment.take() {
                    Some(block) => format!("{block} {text}"),
                    None => text,
                })
            }
            Line::Optional(reason) => pending = Some((line_no, line.to_string(), reason)),
            Line::Assignment(symbol, value) => entries.push(Entry {
                symbol,
                value,
                line: line_no,
                optional: pending.take().map(|(_, _, reason)| reason),
                description: comment.take(),
            }),
        }
    }
    if let Some((marker_line, marker_text, _)) = pending {
        return Err(ParseError {
            file: origin.to_string(),
            line: marker_line,
            col: 1,
            message: format!(
                "`{OPTIONAL_MARKER}` must be followed directly by the CONFIG_ line it marks (the file ends instead)"
            ),
            text: marker_text,
        });
    }
    Ok(Fragment {
        name: name.to_string(),
        origin: origin.to_string(),
        entries,
    })
}

enum Line {
    Blank,
    Comment(String),
    Optional(String),
    Assignment(String, Value),
}

/// 1-based character column of a byte offset.
fn col_of(line: &str, off: usize) -> usize {
    let mut off = off.min(line.len());
    while !line.is_char_boundary(off) {
        off -= 1;
    }
    line[..off].chars().count() + 1
}

/// Parses one line; errors carry the byte offset of the problem.
fn parse_line(line: &str) -> Result<Line, (usize, String)> {
    if line.trim().is_empty() {
        return Ok(Line::Blank);
    }
    if let Some(rest) = line.strip_prefix('#') {
        return parse_comment(line, rest);
    }
    if let Some(rest) = line.strip_prefix("CONFIG_") {
        let name_len = rest
            .find(|c: char| !is_symbol_char(c))
            .unwrap_or(rest.len());
        let name = &rest[..name_len];
        if name.is_empty() {
            return Err((7, "missing symbol name after `CONFIG_`".into()));
        }
        let after = &rest[name_len..];
        let Some(value_text) = after.strip_prefix('=') else {
            return Err((
                7 + name.len(),
                format!(
                    "expected `=` right after CONFIG_{name} (no spaces), as in `CONFIG_{name}=y`"
                ),
            ));
        };
        let value_off = 8 + name.len();
        let value = parse_value(value_text).map_err(|(c, m)| (value_off + c, m))?;
        return Ok(Line::Assignment(name.to_string(), value));
    }
    Err((
        line.len() - line.trim_start().len(),
        "expected `CONFIG_NAME=value`, `# CONFIG_NAME is not set`, a `#` comment or a blank line \
         (lines start in column 1)"
            .into(),
    ))
}

fn parse_comment(line: &str, rest: &str) -> Result<Line, (usize, String)> {
    let body = rest.trim_start();
    let body_off = line.len() - body.len();
    if let Some(directive) = body.strip_prefix("boardsmith:") {
        let d = directive.trim_start();
        if let Some(reason) = d.strip_prefix("optional")
            && (reason.is_empty() || reason.starts_with(char::is_whitespace))
        {
            return Ok(Line::Optional(reason.trim().to_string()));
        }
        return Err((
            body_off,
            format!("unknown boardsmith directive; the only one is `{OPTIONAL_MARKER} [reason]`"),
        ));
    }
    // `# CONFIG_X is not set`, exactly as Kconfig writes it; near misses are errors, since Kconfig
    // would take them for plain comments and the value would silently not apply.
    if let Some(after) = body.strip_prefix("CONFIG_") {
        let name_len = after
            .find(|c: char| !is_symbol_char(c))
            .unwrap_or(after.len());
        let name = &after[..name_len];
        let tail = &after[name_len..];
        let words: Vec<&str> = tail.split_whitespace().collect();
        if words == ["is", "not", "set"] && !name.is_empty() {
            if line.trim_end() == format!("# CONFIG_{name} is not set") {
                return Ok(Line::Assignment(name.to_string(), Value::Tri(Tri::N)));
            }
            return Err((
                0,
                format!(
                    "write exactly `# CONFIG_{name} is not set` (one space after `#`, single spaces); \
                     Kconfig ignores other spellings"
                ),
            ));
        }
        if words.first() == Some(&"is") {
            return Err((
                body_off,
                format!(
                    "looks like `# CONFIG_{name} is not set` but is not exactly that; Kconfig would ignore it"
                ),
            ));
        }
    }
    Ok(Line::Comment(rest.trim().to_string()))
}

/// Parses what follows `=`; errors carry a 0-based column offset into `text`.
fn parse_value(text: &str) -> Result<Value, (usize, String)> {
    let trimmed = text.trim_end();
    if trimmed.is_empty() {
        return Err((
            0,
            "missing value after `=`: use y, m, n, a quoted string or a number".into(),
        ));
    }
    if let Some(t) = Tri::parse(trimmed) {
        return Ok(Value::Tri(t));
    }
    if let Some(inner) = trimmed.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, e)) => out.push(e),
                    None => return Err((i + 1, "unterminated string: `\\` at end of line".into())),
                },
                '"' => {
                    let after = &inner[i + 1..];
                    if !after.is_empty() {
                        return Err((
                            i + 2,
                            "unexpected text after the closing quote (comments go on their own line)"
                                .into(),
                        ));
                    }
                    return Ok(Value::Str(out));
                }
                c => out.push(c),
            }
        }
        return Err((0, "unterminated string: missing closing `\"`".into()));
    }
    if super::value::parse_number(trimmed).is_some() {
        return Ok(Value::Number(trimmed.to_string()));
    }
    let hint = match trimmed {
        s if s.eq_ignore_ascii_case("yes") || s.eq_ignore_ascii_case("true") => {
            " (did you mean y?)"
        }
        s if s.eq_ignore_ascii_case("no") || s.eq_ignore_ascii_case("false") => {
            " (did you mean n?)"
        }
        "Y" | "M" | "N" => " (values are lower case)",
        s if s.contains('#') => " (comments go on their own line)",
        _ => "",
    };
    Err((
        0,
        format!(
            "value `{trimmed}` is not y, m, n, a quoted string or a decimal/0x-hex number{hint}"
        ),
    ))
}

/// Renders entries back to fragment text (markers on the line before the entry they mark).
pub fn render_entry(e: &Entry, out: &mut String) {
    if let Some(reason) = &e.optional {
        out.push_str(OPTIONAL_MARKER);
        if !reason.is_empty() {
            out.push(' ');
            out.push_str(reason);
        }
        out.push('\n');
    }
    out.push_str(&e.value.config_line(&e.symbol));
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comment_blocks_describe_the_next_assignment() {
        let f = parse(
            "t",
            "t",
            "# USB networking\nCONFIG_USBNET=m\nCONFIG_PLAIN=y\n\n# QF9700: a vendor\n# driver\n# boardsmith: optional not in mainline\nCONFIG_QF9700=m\n# stale\n\nCONFIG_X=y\n",
        )
        .unwrap();
        let d: Vec<Option<&str>> = f.entries.iter().map(|e| e.description.as_deref()).collect();
        assert_eq!(
            d,
            [
                Some("USB networking"),
                None,
                Some("QF9700: a vendor driver"),
                None
            ]
        );
        assert_eq!(f.entries[2].optional.as_deref(), Some("not in mainline"));
    }

    fn p(text: &str) -> Result<Fragment, ParseError> {
        parse("t", "t.config", text)
    }

    fn entries(text: &str) -> Vec<(String, Value, Option<String>)> {
        p(text)
            .expect("parses")
            .entries
            .into_iter()
            .map(|e| (e.symbol, e.value, e.optional))
            .collect()
    }

    #[test]
    fn accepts_every_line_form() {
        let text = "# a comment\n\nCONFIG_A=y\nCONFIG_B=m\nCONFIG_C=n\n# CONFIG_D is not set\n\
                    CONFIG_E=\"x \\\"q\\\" \\\\\"\nCONFIG_F=-12\nCONFIG_G=0x1F\r\n# CONFIG_H=y (commented out)\n\
                    #\n# boardsmith: optional vendor driver\nCONFIG_Q=m\n";
        let e = entries(text);
        assert_eq!(
            e,
            vec![
                ("A".into(), Value::Tri(Tri::Y), None),
                ("B".into(), Value::Tri(Tri::M), None),
                ("C".into(), Value::Tri(Tri::N), None),
                ("D".into(), Value::Tri(Tri::N), None),
                ("E".into(), Value::Str("x \"q\" \\".into()), None),
                ("F".into(), Value::Number("-12".into()), None),
                ("G".into(), Value::Number("0x1F".into()), None),
                ("Q".into(), Value::Tri(Tri::M), Some("vendor driver".into())),
            ]
        );
        let f = p(text).expect("parses");
        assert_eq!(f.entries[0].line, 3);
        assert_eq!(f.entries[7].line, 13);
    }

    #[test]
    fn is_not_set_equals_n() {
        assert_eq!(
            entries("# CONFIG_X is not set\n")[0].1,
            entries("CONFIG_X=n\n")[0].1
        );
    }

    fn fails(text: &str) -> ParseError {
        p(text).expect_err("must be rejected")
    }

    #[test]
    fn malformed_lines_are_rejected_with_file_line_col() {
        let e = fails("CONFIG_A=y\nCONFIG_B=yes\n");
        assert_eq!((e.file.as_str(), e.line, e.col), ("t.config", 2, 10));
        assert!(e.message.contains("did you mean y"), "{}", e.message);
        assert!(e.to_string().starts_with("t.config:2:10: "));

        let cases: &[(&str, usize, usize, &str)] = &[
            ("CONFIG_A = y", 1, 9, "expected `=`"),
            ("CONFIG_=y", 1, 8, "missing symbol name"),
            ("CONFIG_A=", 1, 10, "missing value"),
            ("CONFIG_A=y # why", 1, 10, "comments go on their own line"),
            ("CONFIG_A=\"abc", 1, 10, "unterminated string"),
            ("CONFIG_A=\"abc\" x", 1, 15, "after the closing quote"),
            ("  CONFIG_A=y", 1, 3, "lines start in column 1"),
            ("USB_NET=y", 1, 1, "expected `CONFIG_NAME=value`"),
            ("\n\nCONFIG_A=Y", 3, 10, "lower case"),
            ("#CONFIG_A is not set", 1, 1, "write exactly"),
            ("# CONFIG_A  is not set", 1, 1, "write exactly"),
            ("# CONFIG_A is not set!", 1, 3, "not exactly"),
            (
                "# boardsmith: optinal",
                1,
                3,
                "unknown boardsmith directive",
            ),
            (
                "# boardsmith: optional\n\nCONFIG_A=m",
                1,
                1,
                "followed directly",
            ),
            (
                "# boardsmith: optional\n# x\nCONFIG_A=m",
                1,
                1,
                "followed directly",
            ),
            ("CONFIG_A=m\n# boardsmith: optional", 2, 1, "the file ends"),
        ];
        for (text, line, col, needle) in cases {
            let e = fails(text);
            assert_eq!((e.line, e.col), (*line, *col), "{text:?}: {e}");
            assert!(e.message.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn render_round_trips() {
        let text = "# boardsmith: optional because\nCONFIG_Q=m\nCONFIG_S=\"a\\\"b\"\n# CONFIG_N is not set\n";
        let f = p(text).expect("parses");
        let mut out = String::new();
        for e in &f.entries {
            render_entry(e, &mut out);
        }
        assert_eq!(out, text);
    }
}
