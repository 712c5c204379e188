//! What a kernel tree's Kconfig files say about each symbol, read the way Kconfig reads them for one
//! architecture: starting at `Kconfig`, following `source` (with `$(SRCARCH)`), tracking the `if`,
//! `menu` and `choice` blocks whose conditions every entry inside inherits, and recording for each
//! `config`: type, prompts and their conditions, `depends on`, defaults, and every `select`/`imply`
//! naming it. Used to say *why* a requested value did not survive, not to compute values: the values
//! come from the kernel's own Kconfig run.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::expr::{self, Expr, Tok, tokenize};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} has no top-level Kconfig file; is it a kernel source tree?", srctree.display())]
    NotAKernelTree { srctree: PathBuf },
}

/// A place in the kernel tree (path relative to the tree).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Location {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SymType {
    Bool,
    Tristate,
    String,
    Int,
    Hex,
}

impl SymType {
    pub fn name(self) -> &'static str {
        match self {
            SymType::Bool => "bool",
            SymType::Tristate => "tristate",
            SymType::String => "string",
            SymType::Int => "int",
            SymType::Hex => "hex",
        }
    }
}

/// Where a dependency comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DepOrigin {
    /// The entry's own `depends on`.
    DependsOn,
    /// An enclosing `if EXPR ... endif`.
    If,
    /// An enclosing `menu` with `depends on`.
    Menu,
    /// An enclosing `choice` with `depends on`.
    Choice,
}

#[derive(Debug, Clone)]
pub struct Dep {
    pub expr: Expr,
    pub origin: DepOrigin,
    pub at: Location,
}

#[derive(Debug, Clone)]
pub struct Prompt {
    /// `prompt "..." if COND`.
    pub cond: Option<Expr>,
    /// `visible if` conditions of enclosing menus.
    pub menu_visible: Vec<Dep>,
    pub at: Location,
}

#[derive(Debug, Clone)]
pub struct DefaultValue {
    pub value: Expr,
    pub cond: Option<Expr>,
    pub at: Location,
}

/// One `config`/`menuconfig` entry of a symbol (a symbol may be defined in several places).
#[derive(Debug, Clone)]
pub struct Def {
    pub at: Location,
    /// Inherited block conditions first, then the entry's own `depends on` lines.
    pub deps: Vec<Dep>,
    pub prompts: Vec<Prompt>,
    pub defaults: Vec<DefaultValue>,
    /// Index into [`KconfigDb::choices`].
    pub choice: Option<usize>,
}

#[derive(Debug, Clone, Default)]
pub struct SymbolInfo {
    pub ty: Option<SymType>,
    pub defs: Vec<Def>,
}

/// A `select TARGET [if COND]` (or `imply`) written in the entry of `by`.
#[derive(Debug, Clone)]
pub struct Select {
    pub by: String,
    /// Index into `by`'s definitions.
    pub def: usize,
    pub cond: Option<Expr>,
    pub imply: bool,
    pub at: Location,
}

#[derive(Debug, Clone)]
pub struct Choice {
    pub at: Location,
    pub members: Vec<String>,
}

/// The Kconfig database of one tree for one architecture.
#[derive(Debug, Default)]
pub struct KconfigDb {
    pub srctree: PathBuf,
    /// `arm`, `arm64`, ... (the directory under `arch/`).
    pub srcarch: String,
    pub symbols: HashMap<String, SymbolInfo>,
    /// Selects and implies, by target symbol.
    pub selects: HashMap<String, Vec<Select>>,
    pub choices: Vec<Choice>,
    pub files_read: usize,
    /// Paths (relative to the tree) of the files read.
    pub read_files: std::collections::HashSet<String>,
    /// Lines this reader did not understand (file:line: what). Empty for the kernels it was tested on.
    pub warnings: Vec<String>,
}

enum Block {
    If(Dep),
    Menu { deps: Vec<Dep>, visible: Vec<Dep> },
    Choice { idx: usize, deps: Vec<Dep> },
}

#[derive(Clone)]
enum Current {
    None,
    Symbol(String, usize),
    Menu,
    Choice,
    Comment,
}

struct Reader<'a> {
    db: &'a mut KconfigDb,
    blocks: Vec<Block>,
    current: Current,
    stack: Vec<PathBuf>,
}

impl KconfigDb {
    /// Reads the tree's Kconfig files as `make ARCH=...` would for `srcarch`.
    pub fn read(srctree: &Path, srcarch: &str) -> Result<KconfigDb, DbError> {
        let top = srctree.join("Kconfig");
        if !top.is_file() {
            return Err(DbError::NotAKernelTree {
                srctree: srctree.to_path_buf(),
            });
        }
        let mut db = KconfigDb {
            srctree: srctree.to_path_buf(),
            srcarch: srcarch.to_string(),
            ..Default::default()
        };
        let mut r = Reader {
            db: &mut db,
            blocks: Vec::new(),
            current: Current::None,
            stack: Vec::new(),
        };
        r.file(&top, None)?;
        Ok(db)
    }

    pub fn get(&self, name: &str) -> Option<&SymbolInfo> {
        self.symbols.get(name)
    }

    pub fn selects_of(&self, target: &str) -> &[Select] {
        self.selects.get(target).map(Vec::as_slice).unwrap_or(&[])
    }

    /// The conjunction of a definition's dependencies (`y` when it has none).
    pub fn def_dep_expr(def: &Def) -> Expr {
        let mut it = def.deps.iter().map(|d| d.expr.clone());
        match it.next() {
            None => Expr::Sym("y".into()),
            Some(first) => it.fold(first, |a, b| Expr::And(Box::new(a), Box::new(b))),
        }
    }

    /// Places in Kconfig files that this architecture does not read which define `config NAME`,
    /// as `arch/x86/Kconfig:12` (for telling "another architecture's symbol" from a typo).
    pub fn definitions_not_read(&self, name: &str) -> Vec<String> {
        let mut files = Vec::new();
        collect_kconfig_files(&self.srctree, &mut files);
        files.sort();
        let wanted = [format!("config {name}"), format!("menuconfig {name}")];
        let mut found = Vec::new();
        for f in files {
            let rel = f
                .strip_prefix(&self.srctree)
                .unwrap_or(&f)
                .display()
                .to_string();
            if self.read_files.contains(&rel) {
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&f) else {
                continue;
            };
            for (i, line) in text.lines().enumerate() {
                let t = line.trim();
                if wanted.iter().any(|w| t == w) {
                    found.push(format!("{rel}:{}", i + 1));
                }
            }
        }
        found
    }
}

fn collect_kconfig_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            if p.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            collect_kconfig_files(&p, out);
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("Kconfig"))
        {
            out.push(p);
        }
    }
}

/// Tab stops every 8 columns, as Kconfig's lexer counts help-text indentation.
fn indent_width(line: &str) -> Option<usize> {
    let mut w = 0;
    for c in line.chars() {
        match c {
            ' ' => w += 1,
            '\t' => w = (w & !7) + 8,
            _ => return Some(w),
        }
    }
    None
}

/// `NAME := value`, `NAME = value`, `NAME += value`, `NAME ?= value`: a preprocessor variable.
fn is_macro_assignment(line: &str) -> bool {
    let t = line.trim_start();
    let name_len = t
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .unwrap_or(t.len());
    if name_len == 0 {
        return false;
    }
    let rest = t[name_len..].trim_start();
    rest.starts_with(":=")
        || rest.starts_with("+=")
        || rest.starts_with("?=")
        || rest.starts_with('=')
}

/// Splits `... if EXPR` at a top-level `if` word.
fn split_if(toks: &[Tok]) -> (&[Tok], Option<&[Tok]>) {
    let mut depth = 0i32;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => depth -= 1,
            Tok::Word(w) if w == "if" && depth == 0 => return (&toks[..i], Some(&toks[i + 1..])),
            _ => {}
        }
    }
    (toks, None)
}

impl Reader<'_> {
    fn warn(&mut self, at: &Location, what: impl fmt::Display) {
        self.db.warnings.push(format!("{at}: {what}"));
    }

    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.db.srctree)
            .unwrap_or(path)
            .display()
            .to_string()
    }

    fn expand_path(&self, raw: &str) -> Option<String> {
        let mut s = raw.replace("$(SRCARCH)", &self.db.srcarch);
        s = s.replace("$(ARCH)", &self.db.srcarch);
        (!s.contains("$(")).then_some(s)
    }

    fn file(&mut self, path: &Path, from: Option<&Location>) -> Result<(), DbError> {
        if self.stack.iter().any(|p| p == path) {
            if let Some(at) = from {
                self.warn(at, format!("recursive source of {}", self.rel(path)));
            }
            return Ok(());
        }
        let text = std::fs::read_to_string(path).map_err(|source| DbError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        self.db.files_read += 1;
        self.stack.push(path.to_path_buf());
        let rel = self.rel(path);
        self.db.read_files.insert(rel.clone());
        let lines: Vec<&str> = text.split('\n').collect();
        let mut i = 0;
        while i < lines.len() {
            let start = i + 1;
            // Join `\`-continued lines.
            let mut logical = lines[i].trim_end_matches('\r').to_string();
            while logical.ends_with('\\') && i + 1 < lines.len() {
                logical.pop();
                i += 1;
                logical.push(' ');
                logical.push_str(lines[i].trim_end_matches('\r'));
            }
            i += 1;
            let at = Location {
                file: rel.clone(),
                line: start,
            };
            let trimmed = logical.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if trimmed.starts_with("$(") || is_macro_assignment(&logical) {
                continue;
            }
            if trimmed == "help" || trimmed == "---help---" {
                i = skip_help(&lines, i);
                continue;
            }
            let toks = match tokenize(&logical) {
                Ok(t) => t,
                Err(e) => {
                    self.warn(&at, e);
                    continue;
                }
            };
            self.statement(&toks, &at, path)?;
        }
        self.stack.pop();
        Ok(())
    }

    fn inherited(&self) -> Vec<Dep> {
        let mut deps = Vec::new();
        for b in &self.blocks {
            match b {
                Block::If(d) => deps.push(d.clone()),
                Block::Menu { deps: ds, .. } | Block::Choice { deps: ds, .. } => {
                    deps.extend(ds.iter().cloned())
                }
            }
        }
        deps
    }

    fn menu_visible(&self) -> Vec<Dep> {
        let mut v = Vec::new();
        for b in &self.blocks {
            if let Block::Menu { visible, .. } = b {
                v.extend(visible.iter().cloned());
            }
        }
        v
    }

    fn enclosing_choice(&self) -> Option<usize> {
        self.blocks.iter().rev().find_map(|b| match b {
            Block::Choice { idx, .. } => Some(*idx),
            _ => None,
        })
    }

    fn expr(&mut self, toks: &[Tok], at: &Location) -> Option<Expr> {
        match expr::parse(toks) {
            Ok(e) => Some(e),
            Err(e) => {
                self.warn(at, format!("cannot parse expression: {e}"));
                None
            }
        }
    }

    fn def_mut(&mut self) -> Option<&mut Def> {
        match &self.current {
            Current::Symbol(name, idx) => self
                .db
                .symbols
                .get_mut(name)
                .and_then(|s| s.defs.get_mut(*idx)),
            _ => None,
        }
    }

    fn set_type(&mut self, ty: SymType) {
        if let Current::Symbol(name, _) = &self.current
            && let Some(s) = self.db.symbols.get_mut(name)
            && s.ty.is_none()
        {
            s.ty = Some(ty);
        }
    }

    fn add_prompt(&mut self, cond: Option<&[Tok]>, at: &Location) {
        let cond = match cond {
            Some(t) => self.expr(t, at),
            None => None,
        };
        let menu_visible = self.menu_visible();
        if let Some(d) = self.def_mut() {
            d.prompts.push(Prompt {
                cond,
                menu_visible,
                at: at.clone(),
            });
        }
    }

    fn add_default(&mut self, toks: &[Tok], at: &Location) {
        let (value, cond) = split_if(toks);
        let Some(value) = self.expr(value, at) else {
            return;
        };
        let cond = match cond {
            Some(c) => self.expr(c, at),
            None => None,
        };
        if let Some(d) = self.def_mut() {
            d.defaults.push(DefaultValue {
                value,
                cond,
                at: at.clone(),
            });
        }
    }

    fn statement(&mut self, toks: &[Tok], at: &Location, path: &Path) -> Result<(), DbError> {
        let Some(Tok::Word(kw)) = toks.first() else {
            self.warn(at, "line does not start with a keyword");
            return Ok(());
        };
        let rest = &toks[1..];
        match kw.as_str() {
            "config" | "menuconfig" => {
                let Some(Tok::Word(name)) = rest.first() else {
                    self.warn(at, format!("`{kw}` without a symbol name"));
                    return Ok(());
                };
                let deps = self.inherited();
                let choice = self.enclosing_choice();
                let sym = self.db.symbols.entry(name.clone()).or_default();
                sym.defs.push(Def {
                    at: at.clone(),
                    deps,
                    prompts: Vec::new(),
                    defaults: Vec::new(),
                    choice,
                });
                let idx = sym.defs.len() - 1;
                if let Some(c) = choice {
                    self.db.choices[c].members.push(name.clone());
                }
                self.current = Current::Symbol(name.clone(), idx);
            }
            "choice" => {
                let idx = self.db.choices.len();
                self.db.choices.push(Choice {
                    at: at.clone(),
                    members: Vec::new(),
                });
                self.blocks.push(Block::Choice {
                    idx,
                    deps: Vec::new(),
                });
                self.current = Current::Choice;
            }
            "endchoice" => self.pop(at, "endchoice", |b| matches!(b, Block::Choice { .. })),
            "menu" => {
                self.blocks.push(Block::Menu {
                    deps: Vec::new(),
                    visible: Vec::new(),
                });
                self.current = Current::Menu;
            }
            "endmenu" => self.pop(at, "endmenu", |b| matches!(b, Block::Menu { .. })),
            "if" => {
                if let Some(e) = self.expr(rest, at) {
                    self.blocks.push(Block::If(Dep {
                        expr: e,
                        origin: DepOrigin::If,
                        at: at.clone(),
                    }));
                } else {
                    // Keep the block structure even when the condition is not understood.
                    self.blocks.push(Block::If(Dep {
                        expr: Expr::Sym("y".into()),
                        origin: DepOrigin::If,
                        at: at.clone(),
                    }));
                }
                self.current = Current::None;
            }
            "endif" => self.pop(at, "endif", |b| matches!(b, Block::If(_))),
            "comment" => self.current = Current::Comment,
            "mainmenu" => self.current = Current::None,
            "source" | "rsource" | "osource" | "orsource" => {
                let Some(Tok::Str(raw)) = rest.first() else {
                    self.warn(at, format!("`{kw}` without a quoted path"));
                    return Ok(());
                };
                let Some(p) = self.expand_path(raw) else {
                    self.warn(at, format!("cannot expand `{raw}`; skipped"));
                    return Ok(());
                };
                let relative = kw.starts_with('r') || kw.starts_with("or");
                let base = if relative {
                    path.parent().unwrap_or(&self.db.srctree).to_path_buf()
                } else {
                    self.db.srctree.clone()
                };
                let full = base.join(&p);
                if p.contains('*') || p.contains('?') {
                    self.warn(
                        at,
                        format!("wildcards in `{kw} \"{raw}\"` are not supported; skipped"),
                    );
                    return Ok(());
                }
                let optional = kw.starts_with('o');
                if !full.is_file() {
                    if !optional {
                        self.warn(at, format!("sourced file {p} does not exist"));
                    }
                    return Ok(());
                }
                self.file(&full, Some(at))?;
                self.current = Current::None;
            }
            "bool" | "boolean" | "tristate" | "string" | "int" | "hex" => {
                let ty = match kw.as_str() {
                    "bool" | "boolean" => SymType::Bool,
                    "tristate" => SymType::Tristate,
                    "string" => SymType::String,
                    "int" => SymType::Int,
                    _ => SymType::Hex,
                };
                self.set_type(ty);
                if let Some(Tok::Str(_)) = rest.first() {
                    let (_, cond) = split_if(rest);
                    self.add_prompt(cond, at);
                }
            }
            "def_bool" | "def_tristate" => {
                self.set_type(if kw == "def_bool" {
                    SymType::Bool
                } else {
                    SymType::Tristate
                });
                self.add_default(rest, at);
            }
            "prompt" => {
                let (_, cond) = split_if(rest);
                self.add_prompt(cond, at);
            }
            "default" => self.add_default(rest, at),
            "depends" => {
                if rest.first() != Some(&Tok::Word("on".into())) {
                    self.warn(at, "`depends` without `on`");
                    return Ok(());
                }
                let Some(e) = self.expr(&rest[1..], at) else {
                    return Ok(());
                };
                let current = self.current.clone();
                match current {
                    Current::Symbol(..) => {
                        if let Some(d) = self.def_mut() {
                            d.deps.push(Dep {
                                expr: e,
                                origin: DepOrigin::DependsOn,
                                at: at.clone(),
                            });
                        }
                    }
                    Current::Menu => {
                        if let Some(Block::Menu { deps, .. }) = self.blocks.last_mut() {
                            deps.push(Dep {
                                expr: e,
                                origin: DepOrigin::Menu,
                                at: at.clone(),
                            });
                        }
                    }
                    Current::Choice => {
                        if let Some(Block::Choice { deps, .. }) = self.blocks.last_mut() {
                            deps.push(Dep {
                                expr: e,
                                origin: DepOrigin::Choice,
                                at: at.clone(),
                            });
                        }
                    }
                    Current::Comment | Current::None => {}
                }
            }
            "visible" => {
                if rest.first() != Some(&Tok::Word("if".into())) {
                    self.warn(at, "`visible` without `if`");
                    return Ok(());
                }
                if let Some(e) = self.expr(&rest[1..], at)
                    && matches!(self.current, Current::Menu)
                    && let Some(Block::Menu { visible, .. }) = self.blocks.last_mut()
                {
                    visible.push(Dep {
                        expr: e,
                        origin: DepOrigin::Menu,
                        at: at.clone(),
                    });
                }
            }
            "select" | "imply" => {
                let Some(Tok::Word(target)) = rest.first() else {
                    self.warn(at, format!("`{kw}` without a symbol"));
                    return Ok(());
                };
                let (_, cond) = split_if(rest);
                let cond = match cond {
                    Some(c) => self.expr(c, at),
                    None => None,
                };
                if let Current::Symbol(by, def) = self.current.clone() {
                    self.db
                        .selects
                        .entry(target.clone())
                        .or_default()
                        .push(Select {
                            by,
                            def,
                            cond,
                            imply: kw == "imply",
                            at: at.clone(),
                        });
                }
            }
            "range" | "option" | "modules" | "optional" | "transitional" | "allnoconfig_y"
            | "defconfig_list" | "env" => {}
            other => self.warn(at, format!("unknown keyword `{other}`")),
        }
        Ok(())
    }

    fn pop(&mut self, at: &Location, what: &str, is: impl Fn(&Block) -> bool) {
        match self.blocks.last() {
            Some(b) if is(b) => {
                self.blocks.pop();
            }
            _ => self.warn(at, format!("`{what}` does not close the innermost block")),
        }
        self.current = Current::None;
    }
}

/// Skips a help text starting at line index `i` (the line after `help`); returns the index of the
/// first line after it. Help ends at the first non-blank line indented less than its first line.
fn skip_help(lines: &[&str], mut i: usize) -> usize {
    let mut first: Option<usize> = None;
    while i < lines.len() {
        let line = lines[i].trim_end_matches('\r');
        match indent_width(line) {
            None => {
                i += 1;
            }
            Some(w) => {
                let f = *first.get_or_insert(w);
                if w == 0 || w < f {
                    return i;
                }
                i += 1;
            }
        }
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (p, text) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    #[test]
    fn reads_blocks_sources_help_and_selects() {
        let t = tree(&[
            (
                "Kconfig",
                "mainmenu \"Linux/$(ARCH)\"\ncomma := ,\nquote := \"\nsource \"arch/$(SRCARCH)/Kconfig\"\n\
                 source \"drivers/Kconfig\"\n",
            ),
            (
                "arch/arm/Kconfig",
                "config ARM\n\tdef_bool y\n\tselect HAVE_X\n",
            ),
            (
                "drivers/Kconfig",
                "menuconfig NETDEV\n\tbool \"Net\"\n\nif NETDEV\n\nmenu \"USB\"\n\tdepends on USB\n\tvisible if EXPERT\n\n\
                 config USBNET\n\ttristate \"usbnet\" if !COMPILE_TEST\n\tdepends on NET && \\\n\t  PCI\n\
                 \tselect MII if NET\n\thelp\n\t  config NOT_A_SYMBOL\n\n\t  still help\n\
                 \nconfig AFTER_HELP\n\tbool\nendmenu\nendif\n\
                 choice\n\tprompt \"pick\"\n\tdepends on ARM\nconfig A\n\tbool \"a\"\nconfig B\n\tbool \"b\"\nendchoice\n\
                 rsource \"sub/Kconfig\"\nosource \"missing/Kconfig\"\n",
            ),
            (
                "drivers/sub/Kconfig",
                "config SUB\n\tint \"n\"\n\trange 0 10\n\tdefault 3\n",
            ),
        ]);
        let db = KconfigDb::read(t.path(), "arm").expect("reads");
        assert!(db.warnings.is_empty(), "{:?}", db.warnings);
        assert_eq!(db.files_read, 4);
        assert!(db.get("NOT_A_SYMBOL").is_none(), "help text is skipped");
        let u = db.get("USBNET").expect("USBNET");
        assert_eq!(u.ty, Some(SymType::Tristate));
        let d = &u.defs[0];
        assert_eq!(d.at.to_string(), "drivers/Kconfig:10");
        let deps: Vec<(String, DepOrigin)> = d
            .deps
            .iter()
            .map(|x| (x.expr.to_string(), x.origin))
            .collect();
        assert_eq!(
            deps,
            vec![
                ("NETDEV".to_string(), DepOrigin::If),
                ("USB".to_string(), DepOrigin::Menu),
                ("NET && PCI".to_string(), DepOrigin::DependsOn),
            ]
        );
        assert_eq!(
            d.prompts[0].cond.as_ref().map(|c| c.to_string()).as_deref(),
            Some("!COMPILE_TEST")
        );
        assert_eq!(d.prompts[0].menu_visible[0].expr.to_string(), "EXPERT");
        let after = &db.get("AFTER_HELP").expect("after help").defs[0];
        assert_eq!(after.deps.len(), 2, "still inside if and menu");
        let sel = db.selects_of("MII");
        assert_eq!(sel[0].by, "USBNET");
        assert_eq!(
            sel[0].cond.as_ref().map(|c| c.to_string()).as_deref(),
            Some("NET")
        );
        assert_eq!(db.selects_of("HAVE_X")[0].by, "ARM");
        let a = &db.get("A").expect("A").defs[0];
        assert_eq!(a.choice, Some(0));
        assert_eq!(a.deps[0].origin, DepOrigin::Choice);
        assert_eq!(db.choices[0].members, vec!["A", "B"]);
        assert_eq!(db.get("SUB").expect("SUB").ty, Some(SymType::Int));
    }

    #[test]
    fn not_a_tree() {
        let t = tree(&[("README", "x")]);
        assert!(matches!(
            KconfigDb::read(t.path(), "arm"),
            Err(DbError::NotAKernelTree { .. })
        ));
    }
}
