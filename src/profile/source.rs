//! Where a profile value came from: which file (embedded or on disk) and which byte span, so that every
//! error can name file, line, column and field.

use std::cell::RefCell;
use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};

/// One profile file as it was read.
#[derive(Debug)]
pub struct SourceFile {
    /// `embedded:boards/cubieboard.toml` or a path on disk.
    pub name: String,
    pub path: Option<PathBuf>,
    pub text: String,
}

impl SourceFile {
    /// 1-based line and column of a byte offset (column counted in characters).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(&self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        (line, col)
    }
}

/// What is wrong at a place in a TOML file: the one error profiles and rootfs recipes share.
#[derive(Debug, thiserror::Error)]
pub enum LocError {
    /// A TOML syntax or type error: where (`file:line:col`, or the file name when the error has no
    /// span) and the parser's message.
    #[error("{at}: {message}")]
    Syntax { at: String, message: String },
    #[error("{at}: `{field}`: {message}")]
    Invalid {
        at: String,
        field: String,
        message: String,
    },
}

impl LocError {
    fn syntax(file: &SourceFile, e: &toml::de::Error) -> LocError {
        let at = match e.span() {
            Some(span) => {
                let (l, c) = file.line_col(span.start);
                format!("{}:{l}:{c}", file.name)
            }
            None => file.name.clone(),
        };
        LocError::Syntax {
            at,
            message: e.message().trim().to_string(),
        }
    }

    /// A value that parsed but is not allowed, named by where it stands and its field.
    pub fn invalid<T>(
        loc: &Loc<T>,
        field: impl Into<String>,
        message: impl Into<String>,
    ) -> LocError {
        LocError::Invalid {
            at: loc.at(),
            field: field.into(),
            message: message.into(),
        }
    }
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// A location inside a loaded profile file.
#[derive(Clone, Debug)]
pub struct Origin {
    pub file: Arc<SourceFile>,
    pub span: Range<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (line, col) = self.file.line_col(self.span.start);
        write!(f, "{}:{}:{}", self.file.name, line, col)
    }
}

thread_local! {
    // The file being deserialized. `Loc<T>` picks it up so that merged profile layers keep their origin.
    static CURRENT: RefCell<Option<Arc<SourceFile>>> = const { RefCell::new(None) };
}

/// Deserializes `text` as `T`, tagging every `Loc` inside with `file`.
pub fn parse_with_origin<T: for<'de> Deserialize<'de>>(
    file: &Arc<SourceFile>,
) -> Result<T, LocError> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            CURRENT.with(|c| c.borrow_mut().take());
        }
    }
    CURRENT.with(|c| *c.borrow_mut() = Some(Arc::clone(file)));
    let _reset = Reset;
    toml::from_str(&file.text).map_err(|e| LocError::syntax(file, &e))
}

/// A value with the place it was written.
#[derive(Clone, Debug)]
pub struct Loc<T> {
    pub value: T,
    pub origin: Option<Origin>,
}

impl<T> Loc<T> {
    /// A value that no file wrote (a built-in default).
    pub fn builtin(value: T) -> Self {
        Loc {
            value,
            origin: None,
        }
    }

    pub fn at(&self) -> String {
        match &self.origin {
            Some(o) => o.to_string(),
            None => "built-in default".to_string(),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Loc<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = toml::Spanned::<T>::deserialize(d)?;
        let span = spanned.span();
        let origin = CURRENT
            .with(|c| c.borrow().clone())
            .map(|file| Origin { file, span });
        Ok(Loc {
            value: spanned.into_inner(),
            origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one() {
        let f = SourceFile {
            name: "x".into(),
            path: None,
            text: "a = 1\nbé = 2\n".into(),
        };
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(6), (2, 1));
        assert_eq!(f.line_col(9), (2, 3));
    }
}
