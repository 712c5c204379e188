//! The kernel's module metadata as depmod writes it into `lib/modules/VERSION/`: `modules.alias`,
//! `modules.dep`, `modules.softdep`, `modules.builtin` and `modules.builtin.modinfo` (the aliases of
//! drivers built into the kernel). Read from a root filesystem, so untrusted: sizes are bounded, every line
//! is checked, and an error names the file and line.
//!
//! Alias matching is kmod's: the patterns are fnmatch(3) globs (`*`, `?`, `[...]`, backslash escapes)
//! matched against a device's modalias, and every module with a matching alias is a candidate (what
//! `modprobe MODALIAS` loads).

use std::collections::{BTreeMap, HashMap, HashSet};

/// Largest metadata file accepted (Debian's modules.alias is about 1 MiB, modules.builtin.modinfo 0.5 MiB).
pub const MAX_META: u64 = 64 << 20;
const MAX_LINE: usize = 16 << 10;
const MAX_ENTRIES: usize = 2_000_000;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}:{line}: {message}")]
pub struct KmodError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

fn err(file: &str, line: usize, message: impl Into<String>) -> KmodError {
    KmodError {
        file: file.to_string(),
        line,
        message: message.into(),
    }
}

/// kmod compares module names with `-` and `_` as the same character.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// `kernel/drivers/mmc/host/sunxi-mmc.ko.xz` → `sunxi-mmc`.
pub fn stem(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    match base.find(".ko") {
        Some(i) => &base[..i],
        None => base,
    }
}

/// A name kmod and initramfs-tools accept as a module name: nothing that could reach a shell or a list
/// file as anything but one word.
pub fn valid_module_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// A module file known to modules.dep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Relative to lib/modules/VERSION, e.g. `kernel/drivers/mmc/host/sunxi-mmc.ko`.
    pub path: String,
    /// Indexes of its dependencies (the full closure, as depmod lists it).
    pub deps: Vec<usize>,
}

impl ModuleFile {
    /// As the file is named: `sunxi-mmc`.
    pub fn name(&self) -> &str {
        stem(&self.path)
    }
}

/// Everything depmod knows about one kernel's modules.
#[derive(Debug, Clone, Default)]
pub struct ModuleIndex {
    pub modules: Vec<ModuleFile>,
    by_name: HashMap<String, usize>,
    /// `alias` patterns of loadable modules: (pattern, normalized module name).
    aliases: Vec<(String, String)>,
    /// Built-in drivers: normalized name → path under the kernel tree (`kernel/drivers/...ko`).
    builtin: BTreeMap<String, String>,
    /// `alias=` entries of built-in drivers: (pattern, normalized module name).
    builtin_aliases: Vec<(String, String)>,
    /// Soft dependencies: normalized module → (pre, post) names or aliases.
    softdeps: HashMap<String, (Vec<String>, Vec<String>)>,
    /// Finds the aliases that can match a string: every string an alias glob matches contains the
    /// glob's longest literal run, so only globs whose run occurs in it are tried.
    alias_finder: KeyFinder,
    builtin_alias_finder: KeyFinder,
}

/// The longest literal run of each glob, searched for all at once (Aho-Corasick).
#[derive(Debug, Clone, Default)]
struct KeyFinder {
    ac: Option<aho_corasick::AhoCorasick>,
    /// Per distinct key: the globs (indexes) that have it.
    globs: Vec<Vec<usize>>,
    /// Globs without a literal run (`*`): always tried.
    always: Vec<usize>,
}

impl KeyFinder {
    fn new(patterns: &[(String, String)]) -> KeyFinder {
        let mut keys: Vec<String> = Vec::new();
        let mut by_key: HashMap<String, usize> = HashMap::new();
        let mut f = KeyFinder::default();
        for (i, (p, _)) in patterns.iter().enumerate() {
            let k = literal_key(p);
            if k.is_empty() {
                f.always.push(i);
                continue;
            }
            let id = *by_key.entry(k.clone()).or_insert_with(|| {
                keys.push(k);
                f.globs.push(Vec::new());
                keys.len() - 1
            });
            f.globs[id].push(i);
        }
        f.ac = aho_corasick::AhoCorasick::new(&keys).ok();
        f
    }

    /// Indexes of the globs worth trying on `s`, ascending.
    fn candidates(&self, s: &str) -> Vec<usize> {
        let mut out = self.always.clone();
        if let Some(ac) = &self.ac {
            for m in ac.find_overlapping_iter(s) {
                out.extend_from_slice(&self.globs[m.pattern().as_usize()]);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// The metadata files' contents (`None` for an absent optional file).
#[derive(Debug, Clone, Copy, Default)]
pub struct MetaFiles<'a> {
    pub alias: &'a [u8],
    pub dep: &'a [u8],
    pub builtin: &'a [u8],
    pub builtin_modinfo: Option<&'a [u8]>,
    pub softdep: Option<&'a [u8]>,
}

/// The lines of `data` that are neither blank nor comments, numbered from 1.
fn content_lines<'a>(
    file: &'a str,
    data: &'a [u8],
) -> impl Iterator<Item = Result<(usize, &'a str), KmodError>> + 'a {
    lines(file, data)
        .filter(|l| !matches!(l, Ok((_, l)) if l.trim().is_empty() || l.starts_with('#')))
}

fn lines<'a>(
    file: &'a str,
    data: &'a [u8],
) -> impl Iterator<Item = Result<(usize, &'a str), KmodError>> + 'a {
    data.split(|b| *b == b'\n').enumerate().map(move |(i, l)| {
        let n = i + 1;
        if l.len() > MAX_LINE {
            return Err(err(file, n, format!("line longer than {MAX_LINE} bytes")));
        }
        std::str::from_utf8(l)
            .map(|s| (n, s.trim_end_matches('\r')))
            .map_err(|_| err(file, n, "not UTF-8 text"))
    })
}

/// The longest run of literal characters in a glob: any string the glob matches contains it. Classes
/// are skipped exactly as [`fnmatch`] reads them.
fn literal_key(pattern: &str) -> String {
    let p: Vec<char> = pattern.chars().collect();
    let mut best = String::new();
    let mut cur = String::new();
    let mut i = 0;
    while i < p.len() {
        let mut literal = None;
        match p[i] {
            '*' | '?' => i += 1,
            '[' => match class(&p, i, '\0') {
                Ok(Some((_, next))) => i = next,
                Ok(None) => {
                    literal = Some('[');
                    i += 1;
                }
                // Matches nothing: any key will do.
                Err(()) => return String::new(),
            },
            '\\' => match p.get(i + 1) {
                Some(c) => {
                    literal = Some(*c);
                    i += 2;
                }
                // Matches nothing: any key will do; the empty one keeps it simple.
                None => return String::new(),
            },
            c => {
                literal = Some(c);
                i += 1;
            }
        }
        match literal {
            Some(c) => cur.push(c),
            None => {
                if cur.len() > best.len() {
                    best = std::mem::take(&mut cur);
                }
                cur.clear();
            }
        }
    }
    if cur.len() > best.len() {
        best = cur;
    }
    best
}

impl ModuleIndex {
    /// Parses the metadata files. `modules.alias`, `modules.dep` and `modules.builtin` are required
    /// (depmod writes them); the others may be absent.
    pub fn parse(files: MetaFiles<'_>) -> Result<ModuleIndex, KmodError> {
        let mut idx = ModuleIndex::default();
        for (name, data) in [
            ("modules.alias", Some(files.alias)),
            ("modules.dep", Some(files.dep)),
            ("modules.builtin", Some(files.builtin)),
            ("modules.builtin.modinfo", files.builtin_modinfo),
            ("modules.softdep", files.softdep),
        ] {
            if let Some(d) = data
                && d.len() as u64 > MAX_META
            {
                return Err(err(name, 0, format!("larger than {MAX_META} bytes")));
            }
        }

        idx.read_dep(files.dep)?;
        idx.read_alias(files.alias)?;
        idx.read_builtin(files.builtin)?;
        if let Some(data) = files.builtin_modinfo {
            idx.read_builtin_modinfo(data)?;
        }
        if let Some(data) = files.softdep {
            idx.read_softdep(data)?;
        }
        idx.alias_finder = KeyFinder::new(&idx.aliases);
        idx.builtin_alias_finder = KeyFinder::new(&idx.builtin_aliases);
        Ok(idx)
    }

    /// modules.dep: `path: dep dep ...`; dependencies may be listed before their own line.
    fn read_dep(&mut self, data: &[u8]) -> Result<(), KmodError> {
        let f = "modules.dep";
        let mut raw: Vec<(String, Vec<String>)> = Vec::new();
        for l in content_lines(f, data) {
            let (n, l) = l?;
            let (path, deps) = l
                .split_once(':')
                .ok_or_else(|| err(f, n, "expected `path: dependencies`"))?;
            let path = path.trim();
            if !path.contains(".ko") || !valid_module_name(stem(path)) {
                return Err(err(f, n, format!("`{path}` is not a module file name")));
            }
            if path.starts_with('/') || path.split('/').any(|c| c == ".." || c.is_empty()) {
                return Err(err(
                    f,
                    n,
                    format!("`{path}` is not a path inside the modules directory"),
                ));
            }
            let deps: Vec<String> = deps.split_whitespace().map(str::to_string).collect();
            if raw.len() >= MAX_ENTRIES || deps.len() > 4096 {
                return Err(err(f, n, "too many entries"));
            }
            raw.push((path.to_string(), deps));
        }
        let mut by_path: HashMap<String, usize> = HashMap::new();
        for (i, (p, _)) in raw.iter().enumerate() {
            if by_path.insert(p.clone(), i).is_some() {
                return Err(err(f, 0, format!("`{p}` listed twice")));
            }
            self.by_name.entry(normalize(stem(p))).or_insert(i);
        }
        for (p, deps) in raw {
            let mut ids = Vec::new();
            for d in deps {
                match by_path.get(&d) {
                    Some(i) => ids.push(*i),
                    None => {
                        return Err(err(
                            f,
                            0,
                            format!("`{p}` depends on `{d}`, which has no line of its own"),
                        ));
                    }
                }
            }
            self.modules.push(ModuleFile { path: p, deps: ids });
        }
        Ok(())
    }

    /// modules.alias: `alias PATTERN MODULE`.
    fn read_alias(&mut self, data: &[u8]) -> Result<(), KmodError> {
        let f = "modules.alias";
        for l in content_lines(f, data) {
            let (n, l) = l?;
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next(), w.next()) {
                (Some("alias"), Some(pat), Some(module), None) => {
                    if self.aliases.len() >= MAX_ENTRIES {
                        return Err(err(f, n, "too many aliases"));
                    }
                    self.aliases.push((pat.to_string(), normalize(module)));
                }
                _ => return Err(err(f, n, "expected `alias PATTERN MODULE`")),
            }
        }
        Ok(())
    }

    /// modules.builtin: the paths of the modules built into the kernel.
    fn read_builtin(&mut self, data: &[u8]) -> Result<(), KmodError> {
        let f = "modules.builtin";
        for l in lines(f, data) {
            let (n, l) = l?;
            let l = l.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            if !l.contains(".ko") || !valid_module_name(stem(l)) {
                return Err(err(f, n, format!("`{l}` is not a module path")));
            }
            if self.builtin.len() >= MAX_ENTRIES {
                return Err(err(f, n, "too many entries"));
            }
            self.builtin.insert(normalize(stem(l)), l.to_string());
        }
        Ok(())
    }

    /// modules.builtin.modinfo: NUL-separated `module.key=value` records; the aliases are kept.
    fn read_builtin_modinfo(&mut self, data: &[u8]) -> Result<(), KmodError> {
        // NUL-separated `module.key=value` records.
        let f = "modules.builtin.modinfo";
        for (i, rec) in data.split(|b| *b == 0).enumerate() {
            if rec.is_empty() {
                continue;
            }
            let rec = std::str::from_utf8(rec)
                .map_err(|_| err(f, i + 1, "record is not UTF-8 (records are counted)"))?;
            let Some((key, value)) = rec.split_once('=') else {
                return Err(err(
                    f,
                    i + 1,
                    "expected `module.key=value` (records are counted)",
                ));
            };
            let Some((module, field)) = key.split_once('.') else {
                return Err(err(
                    f,
                    i + 1,
                    "expected `module.key=value` (records are counted)",
                ));
            };
            if field == "alias" {
                if self.builtin_aliases.len() >= MAX_ENTRIES {
                    return Err(err(f, i + 1, "too many aliases"));
                }
                self.builtin_aliases
                    .push((value.to_string(), normalize(module)));
            }
        }
        Ok(())
    }

    /// modules.softdep: `softdep MODULE pre: ... post: ...`.
    fn read_softdep(&mut self, data: &[u8]) -> Result<(), KmodError> {
        let f = "modules.softdep";
        for l in content_lines(f, data) {
            let (n, l) = l?;
            let mut w = l.split_whitespace();
            if w.next() != Some("softdep") {
                return Err(err(f, n, "expected `softdep MODULE pre: ... post: ...`"));
            }
            let module = w
                .next()
                .ok_or_else(|| err(f, n, "softdep without a module"))?;
            let entry = self.softdeps.entry(normalize(module)).or_default();
            let mut post = false;
            for word in w {
                match word {
                    "pre:" => post = false,
                    "post:" => post = true,
                    other => {
                        if post {
                            entry.1.push(other.to_string())
                        } else {
                            entry.0.push(other.to_string())
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The module file of a name (`sunxi-mmc` or `sunxi_mmc`).
    pub fn module(&self, name: &str) -> Option<usize> {
        self.by_name.get(&normalize(name)).copied()
    }

    /// The path of a built-in module (`kernel/drivers/mmc/core/mmc_block.ko`).
    pub fn builtin_path(&self, name: &str) -> Option<&str> {
        self.builtin.get(&normalize(name)).map(String::as_str)
    }

    /// Loadable modules with an alias matching `s` (a modalias), by index, in index order.
    pub fn alias_matches(&self, s: &str) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for c in self.alias_finder.candidates(s) {
            let (pat, module) = &self.aliases[c];
            if fnmatch(pat, s)
                && let Some(i) = self.module(module)
                && !out.contains(&i)
            {
                out.push(i);
            }
        }
        out.sort_unstable();
        out
    }

    /// Built-in drivers (normalized names) with an alias matching `s`.
    pub fn builtin_alias_matches(&self, s: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in self.builtin_alias_finder.candidates(s) {
            let (pat, module) = &self.builtin_aliases[c];
            if fnmatch(pat, s) && !out.contains(module) {
                out.push(module.clone());
            }
        }
        out.sort();
        out
    }

    /// Modules whose alias list contains exactly `alias` as a pattern that matches it (for `platform:NAME`
    /// and soft-dependency names such as `crc32c`).
    pub fn modules_for_name_or_alias(&self, name: &str) -> Vec<usize> {
        if let Some(i) = self.module(name) {
            return vec![i];
        }
        self.alias_matches(name)
    }

    /// Loadable modules with an alias `platform:NAME`, as (platform name, module index).
    pub fn platform_aliases(&self) -> Vec<(&str, usize)> {
        self.aliases
            .iter()
            .filter_map(|(p, m)| {
                let name = p.strip_prefix("platform:")?;
                if name.contains(['*', '?', '[', '\\']) {
                    return None;
                }
                Some((name, self.module(m)?))
            })
            .collect()
    }

    /// Built-in drivers with an alias `platform:NAME`, as (platform name, normalized module name).
    pub fn builtin_platform_aliases(&self) -> Vec<(&str, &str)> {
        self.builtin_aliases
            .iter()
            .filter_map(|(p, m)| {
                let name = p.strip_prefix("platform:")?;
                (!name.contains(['*', '?', '[', '\\'])).then_some((name, m.as_str()))
            })
            .collect()
    }

    pub fn softdeps(&self, name: &str) -> Option<&(Vec<String>, Vec<String>)> {
        self.softdeps.get(&normalize(name))
    }

    /// A module and everything it needs, dependencies first: modules.dep's closure plus soft dependencies
    /// (pre before, post after). Unknown soft dependencies are skipped (modprobe ignores them too).
    pub fn load_order(&self, roots: &[usize]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for &r in roots {
            self.visit(r, &mut seen, &mut out, 0);
        }
        out
    }

    fn visit(&self, i: usize, seen: &mut HashSet<usize>, out: &mut Vec<usize>, depth: usize) {
        if depth > 64 || !seen.insert(i) {
            return;
        }
        let Some(m) = self.modules.get(i) else {
            return;
        };
        let soft = self.softdeps(m.name()).cloned().unwrap_or_default();
        for pre in &soft.0 {
            for j in self.modules_for_name_or_alias(pre) {
                self.visit(j, seen, out, depth + 1);
            }
        }
        // depmod lists the closure with the deepest dependency last: load from the end.
        for &d in m.deps.iter().rev() {
            self.visit(d, seen, out, depth + 1);
        }
        out.push(i);
        for post in &soft.1 {
            for j in self.modules_for_name_or_alias(post) {
                self.visit(j, seen, out, depth + 1);
            }
        }
    }
}

/// fnmatch(3) without flags, as kmod calls it: `*` any run, `?` one character, `[...]` a class (`!` or `^`
/// negates, `a-z` ranges, `]` first is literal), `\` escapes. Iterative with one backtrack point per
/// `*`, so it runs in O(pattern × text) at worst.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
                continue;
            }
            Some('?') => Some(pi + 1),
            Some('[') => match class(&p, pi, t[ti]) {
                Ok(Some((true, next))) => Some(next),
                Ok(Some((false, _))) => None,
                // An unterminated `[` is a literal.
                Ok(None) => (t[ti] == '[').then_some(pi + 1),
                Err(()) => return false,
            },
            // A trailing lone backslash matches nothing (glibc).
            Some('\\') => match p.get(pi + 1) {
                Some(c) if *c == t[ti] => Some(pi + 2),
                _ => None,
            },
            Some(c) => (*c == t[ti]).then_some(pi + 1),
            None => None,
        };
        match step {
            Some(next) => {
                pi = next;
                ti += 1;
            }
            None => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Matches one character against the class starting at `p[start] == '['`: `Ok(Some((matched, index
/// after ']')))`, `Ok(None)` when the class is not terminated (the `[` is then a literal), and `Err(())`
/// when the pattern ends inside a range (`[a-`), which glibc's fnmatch treats as matching nothing.
#[allow(clippy::result_unit_err)]
fn class(p: &[char], start: usize, c: char) -> Result<Option<(bool, usize)>, ()> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some('!') | Some('^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let Some(&ch) = p.get(i) else {
            return Ok(None);
        };
        if ch == ']' && !first {
            return Ok(Some((matched != negate, i + 1)));
        }
        first = false;
        let (lo, after) = if ch == '\\' {
            match p.get(i + 1) {
                Some(e) => (*e, i + 2),
                None => return Ok(None),
            }
        } else {
            (ch, i + 1)
        };
        if p.get(after) == Some(&'-') && p.get(after + 1) != Some(&']') {
            let hi_at = after + 1;
            let (hi, next) = match p.get(hi_at) {
                None => return Err(()),
                Some('\\') => match p.get(hi_at + 1) {
                    Some(e) => (*e, hi_at + 2),
                    None => return Err(()),
                },
                Some(h) => (*h, hi_at + 1),
            };
            if lo <= c && c <= hi {
                matched = true;
            }
            i = next;
        } else {
            if lo == c {
                matched = true;
            }
            i = after;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnmatch_like_libc() {
        for (p, t, want) in [
            (
                "of:N*T*Callwinner,sun4i-a10-mmc",
                "of:NmmcT(null)Callwinner,sun4i-a10-mmc",
                true,
            ),
            (
                "of:N*T*Callwinner,sun4i-a10-mmcC*",
                "of:NmmcT(null)Callwinner,sun4i-a10-mmc",
                false,
            ),
            (
                "of:N*T*Callwinner,sun4i-a10-mmcC*",
                "of:NmmcT(null)Callwinner,sun4i-a10-mmcCfoo",
                true,
            ),
            (
                "of:N*T*Callwinner,sun4i-a10-mmc",
                "of:NmmcT(null)Callwinner,sun4i-a10-mmcCfoo",
                false,
            ),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[!a-c]x", "bx", false),
            ("[^a-c]x", "dx", true),
            ("[]]", "]", true),
            ("[", "[", true),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
            ("*", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("pci:v00008086d*sv*", "pci:v00008086d00001234sv0000", true),
        ] {
            assert_eq!(fnmatch(p, t), want, "fnmatch({p:?}, {t:?})");
        }
    }

    #[test]
    fn fnmatch_agrees_with_libc() {
        // The C library's fnmatch is the reference kmod uses.
        let cases = [
            ("*a*b*", "xaybz"),
            ("[a-]x", "-x"),
            ("[\\]]", "]"),
            ("\\", "\\"),
            ("[z-a]", "m"),
            ("*[", "x["),
            ("?*?", "ab"),
            ("[!]]x", "ax"),
            // The pattern ends inside a range: glibc matches nothing (found by the property test).
            ("[a-", "[a-"),
            ("*[!a-", "[!a-"),
            ("[!a-z", "[!a-z"),
        ];
        for (p, t) in cases {
            assert_eq!(fnmatch(p, t), libc_fnmatch(p, t), "fnmatch({p:?}, {t:?})");
        }
    }

    fn libc_fnmatch(p: &str, t: &str) -> bool {
        let cp = std::ffi::CString::new(p).unwrap();
        let ct = std::ffi::CString::new(t).unwrap();
        // SAFETY: two NUL-terminated strings.
        unsafe { libc::fnmatch(cp.as_ptr(), ct.as_ptr(), 0) == 0 }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(20_000))]
        #[test]
        fn fnmatch_is_libc_fnmatch(p in "[ab*?\\[\\]!^\\\\-]{0,8}", t in "[ab\\[\\]!^\\\\-]{0,6}") {
            proptest::prop_assert_eq!(fnmatch(&p, &t), libc_fnmatch(&p, &t), "pattern {:?} text {:?}", p, t);
        }

        #[test]
        fn a_match_contains_the_literal_key(p in "[ab*?\\[\\]!^\\\\-]{0,8}", t in "[ab\\[\\]!^\\\\-]{0,6}") {
            if fnmatch(&p, &t) {
                let k = literal_key(&p);
                proptest::prop_assert!(t.contains(&k), "pattern {:?} text {:?} key {:?}", p, t, k);
            }
        }
    }

    fn sample() -> ModuleIndex {
        ModuleIndex::parse(MetaFiles {
            alias: b"# Aliases extracted from modules themselves.\n\
alias of:N*T*Callwinner,sun4i-a10-mmcC* sunxi_mmc\n\
alias of:N*T*Callwinner,sun4i-a10-mmc sunxi_mmc\n\
alias platform:axp20x-regulator axp20x_regulator\n\
alias crypto-crc32c crc32c_generic\n\
alias crc32c crc32c_generic\n",
            dep: b"kernel/drivers/mmc/host/sunxi-mmc.ko:\n\
kernel/fs/ext4/ext4.ko: kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko kernel/lib/crc16.ko\n\
kernel/fs/mbcache.ko:\n\
kernel/fs/jbd2/jbd2.ko:\n\
kernel/lib/crc16.ko:\n\
kernel/crypto/crc32c_generic.ko:\n\
kernel/drivers/regulator/axp20x-regulator.ko:\n",
            builtin: b"kernel/drivers/mmc/core/mmc_block.ko\n",
            builtin_modinfo: Some(
                b"reg_fixed_voltage.alias=of:N*T*Cregulator-fixed\0reg_fixed_voltage.alias=of:N*T*Cregulator-fixedC*\0reg_fixed_voltage.file=drivers/regulator/fixed\0",
            ),
            softdep: Some(b"softdep ext4 pre: crc32c\n"),
        })
        .unwrap()
    }

    #[test]
    fn parses_and_matches() {
        let idx = sample();
        let m = idx.alias_matches("of:NmmcT(null)Callwinner,sun7i-a20-mmcCallwinner,sun4i-a10-mmc");
        assert_eq!(m.len(), 1);
        assert_eq!(idx.modules[m[0]].name(), "sunxi-mmc");
        assert!(
            idx.alias_matches("of:NmmcT(null)Callwinner,sun7i-a20-mmc")
                .is_empty()
        );
        assert_eq!(
            idx.builtin_alias_matches("of:Nvcc3v3T(null)Cregulator-fixed"),
            ["reg_fixed_voltage"]
        );
        assert_eq!(
            idx.builtin_path("mmc-block"),
            Some("kernel/drivers/mmc/core/mmc_block.ko")
        );
        let ext4 = idx.module("ext4").unwrap();
        let order: Vec<&str> = idx
            .load_order(&[ext4])
            .into_iter()
            .map(|i| idx.modules[i].name())
            .collect();
        assert_eq!(
            order,
            ["crc32c_generic", "crc16", "jbd2", "mbcache", "ext4"]
        );
        assert_eq!(
            idx.platform_aliases()
                .into_iter()
                .map(|(n, i)| (n, idx.modules[i].name()))
                .collect::<Vec<_>>(),
            [("axp20x-regulator", "axp20x-regulator")]
        );
    }

    #[test]
    fn bad_lines_name_file_and_line() {
        let mut files = MetaFiles {
            alias: b"alias a b\nnonsense\n",
            dep: b"",
            builtin: b"",
            builtin_modinfo: None,
            softdep: None,
        };
        let e = ModuleIndex::parse(files).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("modules.alias", 2));
        files.alias = b"";
        files.dep = b"kernel/a.ko: kernel/b.ko\n";
        let e = ModuleIndex::parse(files).unwrap_err().to_string();
        assert!(e.contains("has no line of its own"), "{e}");
        files.dep = b"../../etc/x.ko:\n";
        let e = ModuleIndex::parse(files).unwrap_err().to_string();
        assert!(e.contains("not a path inside"), "{e}");
        files.dep = b"kernel/a b;rm.ko:\n";
        assert!(ModuleIndex::parse(files).is_err());
        files.dep = b"";
        files.builtin_modinfo = Some(b"novalue\0");
        let e = ModuleIndex::parse(files).unwrap_err().to_string();
        assert!(e.contains("modules.builtin.modinfo:1"), "{e}");
    }

    #[test]
    fn module_names() {
        assert_eq!(stem("kernel/drivers/mmc/host/sunxi-mmc.ko.xz"), "sunxi-mmc");
        assert!(valid_module_name("dw_mmc-exynos"));
        for bad in ["", "a b", "a;b", "x/y", "é"] {
            assert!(!valid_module_name(bad), "{bad}");
        }
    }
}
