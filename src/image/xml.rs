//! A small pull tokenizer for the XML subset bmap files use: declaration, comments, elements with
//! attributes, text, CDATA and the predefined/numeric entities. No DTDs (so no entity expansion).
//! Every step consumes input, so it ends on any input; errors carry the byte offset they refer to.

use std::borrow::Cow;

/// One token, with the byte offset where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token<'a> {
    Start {
        name: &'a str,
        attrs: Vec<Attr<'a>>,
        /// `<name/>`: no separate end token follows.
        empty: bool,
        offset: usize,
    },
    End {
        name: &'a str,
        offset: usize,
    },
    /// Character data; `raw` is the undecoded span `start..end` of the input.
    Text {
        text: Cow<'a, str>,
        start: usize,
        end: usize,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr<'a> {
    pub name: &'a str,
    pub value: Cow<'a, str>,
    pub offset: usize,
}

/// A syntax error at a byte offset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XmlError {
    pub offset: usize,
    pub message: String,
}

pub struct Tokenizer<'a> {
    src: &'a str,
    pos: usize,
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':' || c >= 0x80
}

fn is_name_char(c: u8) -> bool {
    is_name_start(c) || c.is_ascii_digit() || c == b'-' || c == b'.'
}

impl<'a> Tokenizer<'a> {
    pub fn new(src: &'a str) -> Tokenizer<'a> {
        let pos = if src.starts_with('\u{feff}') { 3 } else { 0 };
        Tokenizer { src, pos }
    }

    fn err<T>(&self, offset: usize, message: impl Into<String>) -> Result<T, XmlError> {
        Err(XmlError {
            offset,
            message: message.into(),
        })
    }

    fn bytes(&self) -> &'a [u8] {
        self.src.as_bytes()
    }

    fn skip_ws(&mut self) {
        while self.pos < self.src.len() && self.bytes()[self.pos].is_ascii_whitespace() {
            self.pos += 1;
        }
    }

    fn name(&mut self) -> Result<&'a str, XmlError> {
        let start = self.pos;
        let b = self.bytes();
        if start >= b.len() || !is_name_start(b[start]) {
            return self.err(start, "expected a name");
        }
        let mut end = start + 1;
        while end < b.len() && is_name_char(b[end]) {
            end += 1;
        }
        // Names end at ASCII bytes, so `end` is a char boundary.
        self.pos = end;
        Ok(&self.src[start..end])
    }

    /// Finds `pat` from the current position; returns its offset.
    fn find(&self, pat: &str) -> Option<usize> {
        self.src[self.pos..].find(pat).map(|i| self.pos + i)
    }

    /// The next token, or `None` at the end of input.
    pub fn next_token(&mut self) -> Result<Option<Token<'a>>, XmlError> {
        loop {
            if self.pos >= self.src.len() {
                return Ok(None);
            }
            let rest = &self.src[self.pos..];
            let start = self.pos;
            if rest.starts_with("<!--") {
                let Some(end) = self.src[self.pos + 4..].find("-->") else {
                    return self.err(
                        start,
                        "the file ends inside this comment (missing \"-->\"; truncated?)",
                    );
                };
                self.pos += 4 + end + 3;
                continue;
            }
            if rest.starts_with("<?") {
                let Some(end) = self.find("?>") else {
                    return self.err(start, "the file ends inside this processing instruction (missing \"?>\"; truncated?)");
                };
                self.pos = end + 2;
                continue;
            }
            if rest.starts_with("<![CDATA[") {
                let body = self.pos + 9;
                let Some(end) = self.src[body..].find("]]>") else {
                    return self.err(
                        start,
                        "the file ends inside this CDATA section (missing \"]]>\"; truncated?)",
                    );
                };
                self.pos = body + end + 3;
                return Ok(Some(Token::Text {
                    text: Cow::Borrowed(&self.src[body..body + end]),
                    start: body,
                    end: body + end,
                }));
            }
            if rest.starts_with("<!") {
                return self.err(
                    start,
                    "DOCTYPE and other declarations are not allowed in a bmap file",
                );
            }
            if rest.starts_with("</") {
                self.pos += 2;
                let name = self.name()?;
                self.skip_ws();
                if self.bytes().get(self.pos) != Some(&b'>') {
                    return self.err(self.pos, format!("expected \">\" to close </{name}"));
                }
                self.pos += 1;
                return Ok(Some(Token::End {
                    name,
                    offset: start,
                }));
            }
            if rest.starts_with('<') {
                self.pos += 1;
                let name = self.name()?;
                let mut attrs = Vec::new();
                loop {
                    let before = self.pos;
                    self.skip_ws();
                    match self.bytes().get(self.pos) {
                        None => {
                            return self.err(
                                start,
                                format!("the file ends inside the tag <{name} (truncated?)"),
                            );
                        }
                        Some(b'>') => {
                            self.pos += 1;
                            return Ok(Some(Token::Start {
                                name,
                                attrs,
                                empty: false,
                                offset: start,
                            }));
                        }
                        Some(b'/') => {
                            if self.bytes().get(self.pos + 1) != Some(&b'>') {
                                return self.err(self.pos, "expected \"/>\"");
                            }
                            self.pos += 2;
                            return Ok(Some(Token::Start {
                                name,
                                attrs,
                                empty: true,
                                offset: start,
                            }));
                        }
                        Some(_) => {
                            if self.pos == before {
                                return self.err(
                                    self.pos,
                                    format!("expected whitespace before an attribute in <{name}>"),
                                );
                            }
                            let at = self.pos;
                            let aname = self.name()?;
                            self.skip_ws();
                            if self.bytes().get(self.pos) != Some(&b'=') {
                                return self.err(
                                    self.pos,
                                    format!("expected \"=\" after attribute {aname}"),
                                );
                            }
                            self.pos += 1;
                            self.skip_ws();
                            let quote = match self.bytes().get(self.pos) {
                                Some(&q @ (b'"' | b'\'')) => q,
                                _ => {
                                    return self.err(
                                        self.pos,
                                        format!("value of attribute {aname} must be quoted"),
                                    );
                                }
                            };
                            let vstart = self.pos + 1;
                            let Some(len) = self.src[vstart..].find(quote as char) else {
                                return self.err(
                                    self.pos,
                                    format!(
                                        "value of attribute {aname} is not closed (truncated?)"
                                    ),
                                );
                            };
                            let raw = &self.src[vstart..vstart + len];
                            if raw.contains('<') {
                                return self.err(vstart, "\"<\" inside an attribute value");
                            }
                            let value = decode(raw, vstart)?;
                            self.pos = vstart + len + 1;
                            if attrs.iter().any(|a: &Attr<'_>| a.name == aname) {
                                return self.err(
                                    at,
                                    format!("attribute {aname} appears twice in <{name}>"),
                                );
                            }
                            attrs.push(Attr {
                                name: aname,
                                value,
                                offset: at,
                            });
                        }
                    }
                }
            }
            // Character data up to the next '<'.
            let end = self.find("<").unwrap_or(self.src.len());
            let raw = &self.src[start..end];
            self.pos = end;
            return Ok(Some(Token::Text {
                text: decode(raw, start)?,
                start,
                end,
            }));
        }
    }
}

/// Replaces entity references in `raw` (found at byte `at` of the input).
fn decode(raw: &str, at: usize) -> Result<Cow<'_, str>, XmlError> {
    if !raw.contains('&') {
        return Ok(Cow::Borrowed(raw));
    }
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    let mut off = at;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let Some(semi) = after.find(';').filter(|&s| s <= 10) else {
            return Err(XmlError {
                offset: off + i,
                message: "\"&\" does not start an entity reference (write &amp;)".into(),
            });
        };
        let ent = &after[..semi];
        let c = match ent {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(h) = ent.strip_prefix("#x") {
                    u32::from_str_radix(h, 16).ok()
                } else if let Some(d) = ent.strip_prefix('#') {
                    d.parse::<u32>().ok()
                } else {
                    None
                };
                match code.and_then(char::from_u32) {
                    Some(c) => c,
                    None => {
                        return Err(XmlError {
                            offset: off + i,
                            message: format!("unknown entity &{ent};"),
                        });
                    }
                }
            }
        };
        out.push(c);
        let consumed = i + 1 + semi + 1;
        rest = &rest[consumed..];
        off += consumed;
    }
    out.push_str(rest);
    Ok(Cow::Owned(out))
}

/// 1-based line and column (in characters) of byte `offset` in `src`.
pub fn line_col(src: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(src.len());
    while !src.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &src[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let col = before
        .rfind('\n')
        .map_or(before, |i| &before[i + 1..])
        .chars()
        .count()
        + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(src: &str) -> Result<Vec<Token<'_>>, XmlError> {
        let mut t = Tokenizer::new(src);
        let mut v = Vec::new();
        while let Some(tok) = t.next_token()? {
            v.push(tok);
        }
        Ok(v)
    }

    #[test]
    fn tokens_of_a_small_document() {
        let toks = all("<?xml version=\"1.0\"?><!-- c --><a x='1 &amp; 2'><b/>t&lt;</a>").unwrap();
        assert_eq!(toks.len(), 4);
        match &toks[0] {
            Token::Start { name, attrs, .. } => {
                assert_eq!(*name, "a");
                assert_eq!(attrs[0].value, "1 & 2");
            }
            t => panic!("{t:?}"),
        }
        assert!(matches!(
            &toks[1],
            Token::Start {
                name: "b",
                empty: true,
                ..
            }
        ));
        assert!(matches!(&toks[2], Token::Text { text, .. } if text == "t<"));
        assert!(matches!(&toks[3], Token::End { name: "a", .. }));
    }

    #[test]
    fn errors_name_the_offset() {
        let e = all("<a>\n<b x=1></b></a>").unwrap_err();
        assert_eq!(e.offset, 9);
        assert_eq!(line_col("<a>\n<b x=1></b></a>", e.offset), (2, 6));
        assert!(all("<!DOCTYPE x [<!ENTITY a 'b'>]><x/>").is_err());
        assert!(all("<a><!-- never closed").is_err());
        assert!(all("<a b=\"1\" b=\"2\"/>").is_err());
        assert!(all("<a>&bogus;</a>").is_err());
    }
}
