//! Values a config line can carry: `y`/`m`/`n`, a quoted string, or a number.

use std::fmt;

use serde::Serialize;

/// Kconfig's three-valued logic, ordered n < m < y.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Tri {
    #[serde(rename = "n")]
    N,
    #[serde(rename = "m")]
    M,
    #[serde(rename = "y")]
    Y,
}

impl Tri {
    pub fn parse(s: &str) -> Option<Tri> {
        match s {
            "y" => Some(Tri::Y),
            "m" => Some(Tri::M),
            "n" => Some(Tri::N),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tri::Y => "y",
            Tri::M => "m",
            Tri::N => "n",
        }
    }
}

impl std::ops::Not for Tri {
    type Output = Tri;
    /// Kconfig's `!`: y ↔ n, m stays m.
    fn not(self) -> Tri {
        match self {
            Tri::Y => Tri::N,
            Tri::M => Tri::M,
            Tri::N => Tri::Y,
        }
    }
}

impl fmt::Display for Tri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The value of one `CONFIG_X=...` line (`# CONFIG_X is not set` is `Tri(N)`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Tri(Tri),
    /// A quoted string, unescaped.
    Str(String),
    /// A decimal or `0x` hexadecimal number, as written.
    Number(String),
}

impl Value {
    /// The value as Kconfig's .config spells it after `CONFIG_X=` (strings quoted and escaped).
    pub fn config_text(&self) -> String {
        match self {
            Value::Tri(t) => t.as_str().to_string(),
            Value::Str(s) => {
                let mut out = String::with_capacity(s.len() + 2);
                out.push('"');
                for c in s.chars() {
                    if c == '"' || c == '\\' {
                        out.push('\\');
                    }
                    out.push(c);
                }
                out.push('"');
                out
            }
            Value::Number(n) => n.clone(),
        }
    }

    /// The full .config line for `symbol` (without `CONFIG_`), `n` written as `# CONFIG_X is not set`.
    pub fn config_line(&self, symbol: &str) -> String {
        match self {
            Value::Tri(Tri::N) => format!("# CONFIG_{symbol} is not set"),
            v => format!("CONFIG_{symbol}={}", v.config_text()),
        }
    }

    /// Equality as Kconfig means it: numbers compare by value (`0x10` == `16` only within one base).
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Number(a), Value::Number(b)) => match (parse_number(a), parse_number(b)) {
                (Some(x), Some(y)) => x == y,
                _ => a == b,
            },
            (a, b) => a == b,
        }
    }

    pub fn tri(&self) -> Option<Tri> {
        match self {
            Value::Tri(t) => Some(*t),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.config_text())
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Tri(t) => s.serialize_str(t.as_str()),
            Value::Str(v) => s.serialize_str(v),
            Value::Number(n) => s.serialize_str(n),
        }
    }
}

/// A decimal (optionally negative) or `0x` hexadecimal number.
pub fn parse_number(s: &str) -> Option<i128> {
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        return i128::from_str_radix(hex, 16).ok();
    }
    let digits = s.strip_prefix('-').unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tri_order_and_not() {
        assert!(Tri::N < Tri::M && Tri::M < Tri::Y);
        assert_eq!(!Tri::Y, Tri::N);
        assert_eq!(!Tri::M, Tri::M);
    }

    #[test]
    fn config_lines() {
        assert_eq!(Value::Tri(Tri::N).config_line("X"), "# CONFIG_X is not set");
        assert_eq!(Value::Tri(Tri::M).config_line("X"), "CONFIG_X=m");
        assert_eq!(
            Value::Str("a \"b\" \\c".into()).config_line("S"),
            r#"CONFIG_S="a \"b\" \\c""#
        );
        assert_eq!(
            Value::Number("0x1f".into()).config_line("H"),
            "CONFIG_H=0x1f"
        );
    }

    #[test]
    fn numbers() {
        assert_eq!(parse_number("42"), Some(42));
        assert_eq!(parse_number("-7"), Some(-7));
        assert_eq!(parse_number("0x10"), Some(16));
        assert_eq!(parse_number("0x"), None);
        assert_eq!(parse_number("1e3"), None);
        assert!(Value::Number("010".into()).same_as(&Value::Number("10".into())));
    }
}
