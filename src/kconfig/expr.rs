//! Kconfig expressions (`depends on`, `if`, `select ... if`, prompt conditions): tokens, parsing,
//! tristate evaluation against a .config, and "blame": the parts of an expression that keep it below
//! the value a symbol needs, each named with its current value.

use std::collections::BTreeSet;
use std::fmt;

use super::value::{Tri, parse_number};

/// A token of a Kconfig line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tok {
    Word(String),
    Str(String),
    /// `$(...)`, unexpanded.
    Macro(String),
    And,
    Or,
    Not,
    /// `=`, `!=`, `<`, `<=`, `>`, `>=`.
    Cmp(CmpOp),
    LParen,
    RParen,
}

/// The operators, each two-character one before its one-character prefix.
const OPERATORS: &[(&str, Tok)] = &[
    ("&&", Tok::And),
    ("||", Tok::Or),
    ("!=", Tok::Cmp(CmpOp::Ne)),
    ("<=", Tok::Cmp(CmpOp::Le)),
    (">=", Tok::Cmp(CmpOp::Ge)),
    ("!", Tok::Not),
    ("=", Tok::Cmp(CmpOp::Eq)),
    ("<", Tok::Cmp(CmpOp::Lt)),
    (">", Tok::Cmp(CmpOp::Gt)),
    ("(", Tok::LParen),
    (")", Tok::RParen),
];

/// Splits one logical Kconfig line into tokens, stopping at a `#` comment.
pub fn tokenize(line: &str) -> Result<Vec<Tok>, String> {
    let mut toks = Vec::new();
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if let Some((op, tok)) = OPERATORS
            .iter()
            .find(|(op, _)| b[i..].starts_with(op.as_bytes()))
        {
            toks.push(tok.clone());
            i += op.len();
            continue;
        }
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' | b'\x0c' => i += 1,
            b'#' => break,
            b'"' | b'\'' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match b.get(i) {
                        None => return Err("unterminated string".into()),
                        Some(&q) if q == c => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') if i + 1 < b.len() => {
                            s.push(b[i + 1]);
                            i += 2;
                        }
                        Some(&x) => {
                            s.push(x);
                            i += 1;
                        }
                    }
                }
                toks.push(Tok::Str(String::from_utf8_lossy(&s).into_owned()));
            }
            b'$' if b.get(i + 1) == Some(&b'(') => {
                let start = i;
                let mut depth = 0usize;
                while i < b.len() {
                    match b[i] {
                        b'(' => depth += 1,
                        b')' => {
                            depth -= 1;
                            if depth == 0 {
                                i += 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
                if depth != 0 {
                    return Err("unterminated $(...)".into());
                }
                toks.push(Tok::Macro(line[start..i].to_string()));
            }
            _ => {
                let start = i;
                while i < b.len()
                    && !matches!(
                        b[i],
                        b' ' | b'\t'
                            | b'\r'
                            | b'\n'
                            | b'#'
                            | b'"'
                            | b'\''
                            | b'('
                            | b')'
                            | b'!'
                            | b'='
                            | b'<'
                            | b'>'
                            | b'&'
                            | b'|'
                    )
                    && !(b[i] == b'$' && b.get(i + 1) == Some(&b'('))
                {
                    i += 1;
                }
                if i == start {
                    return Err(format!("unexpected character `{}`", c as char));
                }
                toks.push(Tok::Word(line[start..i].to_string()));
            }
        }
    }
    Ok(toks)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    fn as_str(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "!=",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }
}

/// A Kconfig expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// A symbol, or the constants `y`, `m`, `n`.
    Sym(String),
    /// A quoted constant.
    Const(String),
    /// An unexpanded macro such as `$(cc-option,-mfoo)`; evaluated as `y` (it cannot be evaluated
    /// without the toolchain, and Kconfig has already applied it to the .config being compared).
    Macro(String),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp(CmpOp, Box<Expr>, Box<Expr>),
}

/// Parses a whole token slice as one expression.
pub fn parse(toks: &[Tok]) -> Result<Expr, String> {
    let mut p = Parser { toks, pos: 0 };
    let e = p.or()?;
    if p.pos != toks.len() {
        return Err(format!("unexpected {:?} in expression", toks[p.pos]));
    }
    Ok(e)
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn or(&mut self) -> Result<Expr, String> {
        self.left_assoc(&Tok::Or, Self::and, Expr::Or)
    }

    fn and(&mut self) -> Result<Expr, String> {
        self.left_assoc(&Tok::And, Self::unary, Expr::And)
    }

    /// `operand (op operand)*`, grouped from the left into `make(left, right)`.
    fn left_assoc(
        &mut self,
        op: &Tok,
        operand: fn(&mut Self) -> Result<Expr, String>,
        make: fn(Box<Expr>, Box<Expr>) -> Expr,
    ) -> Result<Expr, String> {
        let mut e = operand(self)?;
        while self.peek() == Some(op) {
            self.pos += 1;
            let r = operand(self)?;
            e = make(Box::new(e), Box::new(r));
        }
        Ok(e)
    }

    fn unary(&mut self) -> Result<Expr, String> {
        if self.peek() == Some(&Tok::Not) {
            self.pos += 1;
            return Ok(Expr::Not(Box::new(self.unary()?)));
        }
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            if self.peek() != Some(&Tok::RParen) {
                return Err("missing `)`".into());
            }
            self.pos += 1;
            return Ok(e);
        }
        let left = self.atom()?;
        let Some(&Tok::Cmp(op)) = self.peek() else {
            return Ok(left);
        };
        self.pos += 1;
        let right = self.atom()?;
        Ok(Expr::Cmp(op, Box::new(left), Box::new(right)))
    }

    fn atom(&mut self) -> Result<Expr, String> {
        let t = self
            .peek()
            .cloned()
            .ok_or_else(|| "expression ends early".to_string())?;
        self.pos += 1;
        match t {
            Tok::Word(w) => Ok(Expr::Sym(w)),
            Tok::Str(s) => Ok(Expr::Const(s)),
            Tok::Macro(m) => Ok(Expr::Macro(m)),
            other => Err(format!("expected a symbol, found {other:?}")),
        }
    }
}

/// What expressions are evaluated against.
pub trait Env {
    /// Tristate and string value of a symbol. Undefined symbols are `n` with their name as string
    /// value, as in Kconfig.
    fn value(&self, name: &str) -> (Tri, String);
}

fn atom_value(e: &Expr, env: &dyn Env) -> (Tri, String) {
    match e {
        Expr::Sym(s) => match Tri::parse(s) {
            Some(t) => (t, s.clone()),
            None => env.value(s),
        },
        Expr::Const(s) => (Tri::parse(s).unwrap_or(Tri::N), s.clone()),
        Expr::Macro(_) => (Tri::Y, "y".into()),
        other => {
            let t = eval(other, env);
            (t, t.as_str().to_string())
        }
    }
}

/// Kconfig's tristate value of an expression.
pub fn eval(e: &Expr, env: &dyn Env) -> Tri {
    match e {
        Expr::Sym(_) | Expr::Const(_) | Expr::Macro(_) => atom_value(e, env).0,
        Expr::Not(x) => !eval(x, env),
        Expr::And(a, b) => eval(a, env).min(eval(b, env)),
        Expr::Or(a, b) => eval(a, env).max(eval(b, env)),
        Expr::Cmp(op, a, b) => {
            let (_, l) = atom_value(a, env);
            let (_, r) = atom_value(b, env);
            let ord = match (parse_number(&l), parse_number(&r)) {
                (Some(x), Some(y)) => x.cmp(&y),
                _ => l.cmp(&r),
            };
            let res = match op {
                CmpOp::Eq => ord.is_eq(),
                CmpOp::Ne => !ord.is_eq(),
                CmpOp::Lt => ord.is_lt(),
                CmpOp::Le => ord.is_le(),
                CmpOp::Gt => ord.is_gt(),
                CmpOp::Ge => ord.is_ge(),
            };
            if res { Tri::Y } else { Tri::N }
        }
    }
}

/// Symbols an expression mentions (not the constants y/m/n).
pub fn symbols(e: &Expr, out: &mut BTreeSet<String>) {
    match e {
        Expr::Sym(s) if Tri::parse(s).is_none() => {
            out.insert(s.clone());
        }
        Expr::Sym(_) | Expr::Const(_) | Expr::Macro(_) => {}
        Expr::Not(x) => symbols(x, out),
        Expr::And(a, b) | Expr::Or(a, b) | Expr::Cmp(_, a, b) => {
            symbols(a, out);
            symbols(b, out);
        }
    }
}

fn prec(e: &Expr) -> u8 {
    match e {
        Expr::Or(..) => 1,
        Expr::And(..) => 2,
        Expr::Cmp(..) => 3,
        _ => 4,
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sub = |f: &mut fmt::Formatter<'_>, x: &Expr, min: u8| {
            if prec(x) < min {
                write!(f, "({x})")
            } else {
                write!(f, "{x}")
            }
        };
        match self {
            Expr::Sym(s) => f.write_str(s),
            Expr::Const(s) => write!(f, "\"{s}\""),
            Expr::Macro(m) => f.write_str(m),
            Expr::Not(x) => {
                f.write_str("!")?;
                sub(f, x, 4)
            }
            Expr::And(a, b) => {
                sub(f, a, 2)?;
                f.write_str(" && ")?;
                sub(f, b, 2)
            }
            Expr::Or(a, b) => {
                sub(f, a, 1)?;
                f.write_str(" || ")?;
                sub(f, b, 1)
            }
            Expr::Cmp(op, a, b) => write!(f, "{a}{}{b}", op.as_str()),
        }
    }
}

/// One reason an expression stays below what is needed: the sub-expression and the values of the
/// symbols in it, e.g. `USB_USBNET (=n)` or `RFKILL || !RFKILL (RFKILL=m)`.
pub fn describe(e: &Expr, env: &dyn Env) -> String {
    match e {
        Expr::Sym(s) if Tri::parse(s).is_none() => {
            let (t, text) = env.value(s);
            let shown = if text.is_empty() || Tri::parse(&text).is_some() {
                t.as_str().to_string()
            } else {
                format!("\"{text}\"")
            };
            format!("{s} (={shown})")
        }
        _ => {
            let mut syms = BTreeSet::new();
            symbols(e, &mut syms);
            if syms.is_empty() {
                return e.to_string();
            }
            let vals: Vec<String> = syms
                .iter()
                .map(|s| {
                    let (t, text) = env.value(s);
                    if text.is_empty() || Tri::parse(&text).is_some() {
                        format!("{s}={t}")
                    } else {
                        format!("{s}=\"{text}\"")
                    }
                })
                .collect();
            format!("{e} ({})", vals.join(", "))
        }
    }
}

/// The smallest parts of `e` that keep it below `need`, each described with its values. Empty when
/// `e` reaches `need`. A conjunction is split into its failing operands; anything else is reported whole.
pub fn blame(e: &Expr, need: Tri, env: &dyn Env) -> Vec<String> {
    let mut out = Vec::new();
    blame_into(e, need, env, &mut out);
    out
}

fn blame_into(e: &Expr, need: Tri, env: &dyn Env, out: &mut Vec<String>) {
    if eval(e, env) >= need {
        return;
    }
    match e {
        Expr::And(a, b) => {
            blame_into(a, need, env, out);
            blame_into(b, need, env, out);
        }
        _ => out.push(describe(e, env)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Map(HashMap<&'static str, &'static str>);
    impl Env for Map {
        fn value(&self, name: &str) -> (Tri, String) {
            match self.0.get(name) {
                Some(v) => (Tri::parse(v).unwrap_or(Tri::N), v.to_string()),
                None => (Tri::N, name.to_string()),
            }
        }
    }

    fn env() -> Map {
        Map(HashMap::from([
            ("USB", "y"),
            ("USB_USBNET", "n"),
            ("RFKILL", "m"),
            ("NR", "8"),
            ("CMD", "abc"),
        ]))
    }

    fn ex(s: &str) -> Expr {
        parse(&tokenize(s).expect("tokens")).expect("parses")
    }

    #[test]
    fn precedence_and_display() {
        assert_eq!(ex("A || B && !C").to_string(), "A || B && !C");
        assert_eq!(ex("(A || B) && C").to_string(), "(A || B) && C");
        assert_eq!(ex("!(A = y)").to_string(), "!(A=y)");
        assert_eq!(ex("A != \"x\"").to_string(), "A!=\"x\"");
    }

    #[test]
    fn evaluation_follows_kconfig() {
        let e = env();
        assert_eq!(eval(&ex("USB && USB_USBNET"), &e), Tri::N);
        assert_eq!(eval(&ex("RFKILL || !RFKILL"), &e), Tri::M);
        assert_eq!(eval(&ex("USB && RFKILL"), &e), Tri::M);
        assert_eq!(eval(&ex("NR > 4"), &e), Tri::Y);
        assert_eq!(eval(&ex("NR >= 0x10"), &e), Tri::N);
        assert_eq!(eval(&ex("CMD = \"abc\""), &e), Tri::Y);
        assert_eq!(eval(&ex("UNDEFINED"), &e), Tri::N);
        assert_eq!(eval(&ex("!UNDEFINED"), &e), Tri::Y);
        assert_eq!(eval(&ex("m"), &e), Tri::M);
        assert_eq!(eval(&ex("$(cc-option,-mfoo) && USB"), &e), Tri::Y);
    }

    #[test]
    fn blame_names_failing_parts_with_values() {
        let e = env();
        assert_eq!(
            blame(&ex("USB && USB_USBNET && NR > 4"), Tri::M, &e),
            vec!["USB_USBNET (=n)"]
        );
        assert_eq!(
            blame(&ex("USB && (RFKILL || !RFKILL)"), Tri::Y, &e),
            vec!["RFKILL || !RFKILL (RFKILL=m)"]
        );
        assert_eq!(
            blame(&ex("CMD = \"x\""), Tri::Y, &e),
            vec!["CMD=\"x\" (CMD=\"abc\")"]
        );
        assert!(blame(&ex("USB"), Tri::Y, &e).is_empty());
    }

    #[test]
    fn tokenizer_handles_macros_strings_and_comments() {
        assert_eq!(
            tokenize("depends on $(cc-option,-m(x)) && \"a\\\"b\" # c").expect("tokens"),
            vec![
                Tok::Word("depends".into()),
                Tok::Word("on".into()),
                Tok::Macro("$(cc-option,-m(x))".into()),
                Tok::And,
                Tok::Str("a\"b".into()),
            ]
        );
        assert!(tokenize("prompt \"open").is_err());
    }

    #[test]
    fn tokenizer_reads_every_operator_and_refuses_a_lone_ampersand() {
        use Tok::*;
        let w = |s: &str| Word(s.into());
        assert_eq!(
            tokenize("!(A&&B)||C!=y&&D<=1&&E>=2&&F<3&&G>4&&H=n").expect("tokens"),
            vec![
                Not,
                LParen,
                w("A"),
                And,
                w("B"),
                RParen,
                Or,
                w("C"),
                Cmp(CmpOp::Ne),
                w("y"),
                And,
                w("D"),
                Cmp(CmpOp::Le),
                w("1"),
                And,
                w("E"),
                Cmp(CmpOp::Ge),
                w("2"),
                And,
                w("F"),
                Cmp(CmpOp::Lt),
                w("3"),
                And,
                w("G"),
                Cmp(CmpOp::Gt),
                w("4"),
                And,
                w("H"),
                Cmp(CmpOp::Eq),
                w("n"),
            ]
        );
        assert_eq!(tokenize("A & B").unwrap_err(), "unexpected character `&`");
        assert_eq!(tokenize("A | B").unwrap_err(), "unexpected character `|`");
    }
}
