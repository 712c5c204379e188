//! Did every requested value survive Kconfig? Compares each assignment of the merged fragment with the
//! `.config` Kconfig produced and, for each one that did not survive, says why from the Kconfig files:
//! unknown to this kernel, an unmet `depends on` (own or inherited from `if`/`menu`/`choice`), a hidden
//! prompt, a `select` forcing it on, a choice that picked another member, or a type mismatch.

use std::fmt;

use serde::Serialize;

use super::dotconfig::DotConfig;
use super::expr::{self, Env, Expr};
use super::kconfig_db::{Def, DepOrigin, KconfigDb, SymType};
use super::merge::Merged;
use super::value::{Tri, Value};

/// Outcome for one requested symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The resulting .config has the requested value.
    Kept,
    /// Dropped or changed: the check fails.
    Failed,
    /// Dropped or changed, but marked optional: a warning.
    Optional,
}

#[derive(Debug, Clone, Serialize)]
pub struct SymbolCheck {
    pub symbol: String,
    pub requested: Value,
    /// The value in the resulting .config (`n` when absent).
    pub actual: Value,
    pub status: Status,
    /// Why it did not survive, one sentence each; empty when kept.
    pub reasons: Vec<String>,
    /// Fragment and line that requested it.
    pub fragment: String,
    pub at: String,
    /// The optional marker's reason, when marked optional.
    pub optional: Option<String>,
}

impl SymbolCheck {
    fn actual_text(&self) -> String {
        match &self.actual {
            Value::Tri(Tri::N) => "n (not set)".into(),
            v => v.config_text(),
        }
    }
}

impl fmt::Display for SymbolCheck {
    /// `ok  CONFIG_X=m`, or `FAILED  CONFIG_X=y: got n: reason; reason [at]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let req = format!("CONFIG_{}={}", self.symbol, self.requested.config_text());
        match self.status {
            Status::Kept => write!(f, "ok        {req}"),
            Status::Failed | Status::Optional => {
                let tag = if self.status == Status::Failed {
                    "FAILED  "
                } else {
                    "optional"
                };
                let reasons = self.reasons.join("; ");
                if self.is_unknown() {
                    write!(f, "{tag}  {req}: {reasons} (requested at {})", self.at)
                } else {
                    write!(
                        f,
                        "{tag}  {req}: got {}: {reasons} (requested at {})",
                        self.actual_text(),
                        self.at
                    )
                }
            }
        }
    }
}

impl SymbolCheck {
    pub fn is_unknown(&self) -> bool {
        self.reasons
            .first()
            .is_some_and(|r| r.starts_with("unknown to this kernel"))
    }
}

/// A fragment value that lowers or changes what the base defconfig enabled.
#[derive(Debug, Clone, Serialize)]
pub struct DefconfigOverride {
    pub symbol: String,
    pub defconfig: String,
    pub defconfig_value: Value,
    pub fragment: String,
    pub at: String,
    pub value: Value,
}

impl fmt::Display for DefconfigOverride {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CONFIG_{} is redefined: {} ({}) sets {}, overriding {} from {}",
            self.symbol,
            self.fragment,
            self.at,
            self.value.config_text(),
            self.defconfig_value.config_text(),
            self.defconfig
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub symbols: Vec<SymbolCheck>,
    /// Fragment values that lower or change what the defconfig had enabled.
    pub defconfig_overrides: Vec<DefconfigOverride>,
}

impl CheckReport {
    pub fn count(&self, s: Status) -> usize {
        self.symbols.iter().filter(|c| c.status == s).count()
    }

    pub fn passed(&self) -> bool {
        self.count(Status::Failed) == 0
    }
}

/// Evaluates Kconfig expressions against a resulting .config.
pub struct ConfigEnv<'a> {
    pub db: &'a KconfigDb,
    pub config: &'a DotConfig,
}

impl Env for ConfigEnv<'_> {
    fn value(&self, name: &str) -> (Tri, String) {
        match self.config.values.get(name) {
            Some(Value::Tri(t)) => (*t, t.as_str().to_string()),
            Some(Value::Str(s)) => (Tri::N, s.clone()),
            Some(Value::Number(n)) => (Tri::N, n.clone()),
            None => match self.db.get(name) {
                Some(info) => match info.ty {
                    Some(SymType::String | SymType::Int | SymType::Hex) => (Tri::N, String::new()),
                    _ => (Tri::N, "n".into()),
                },
                None => (Tri::N, name.to_string()),
            },
        }
    }
}

/// Compares every requested value with the resulting .config.
pub fn check(
    db: &KconfigDb,
    merged: &Merged,
    result: &DotConfig,
    defconfig_name: &str,
    defconfig: &DotConfig,
) -> CheckReport {
    let env = ConfigEnv { db, config: result };
    let mut symbols = Vec::new();
    let mut overrides = Vec::new();
    for me in &merged.entries {
        let e = &me.entry;
        let place = merged.place(me);
        let actual = result.get(&e.symbol);
        let kept = db.get(&e.symbol).is_some() && e.value.same_as(&actual);
        let (status, reasons) = if kept {
            (Status::Kept, Vec::new())
        } else {
            let reasons = explain(db, &env, &e.symbol, &e.value, &actual);
            let s = if e.optional.is_some() {
                Status::Optional
            } else {
                Status::Failed
            };
            (s, reasons)
        };
        let before = defconfig.get(&e.symbol);
        // Only values that take away or change something the defconfig set; enabling what it left
        // off, or filling an empty string, is what fragments are for.
        let lowers = match (&before, &e.value) {
            (Value::Tri(b), Value::Tri(r)) => r < b,
            (Value::Tri(_), _) => false,
            (Value::Str(b), _) if b.is_empty() => false,
            (b, r) => !b.same_as(r),
        };
        if defconfig.mentions(&e.symbol) && lowers {
            overrides.push(DefconfigOverride {
                symbol: e.symbol.clone(),
                defconfig: defconfig_name.to_string(),
                defconfig_value: before,
                fragment: place.fragment.clone(),
                at: place.at.clone(),
                value: e.value.clone(),
            });
        }
        symbols.push(SymbolCheck {
            symbol: e.symbol.clone(),
            requested: e.value.clone(),
            actual,
            status,
            reasons,
            fragment: place.fragment,
            at: place.at,
            optional: e.optional.clone(),
        });
    }
    CheckReport {
        symbols,
        defconfig_overrides: overrides,
    }
}

fn sym_tri(env: &ConfigEnv<'_>, name: &str) -> Tri {
    env.value(name).0
}

/// Why `symbol` ended up `actual` instead of `requested`.
pub fn explain(
    db: &KconfigDb,
    env: &ConfigEnv<'_>,
    symbol: &str,
    requested: &Value,
    actual: &Value,
) -> Vec<String> {
    let Some(info) = db.get(symbol) else {
        let mut r = format!(
            "unknown to this kernel: no `config {symbol}` in the Kconfig files read for ARCH={}",
            db.srcarch
        );
        let elsewhere = db.definitions_not_read(symbol);
        if !elsewhere.is_empty() {
            let shown: Vec<&str> = elsewhere.iter().take(3).map(String::as_str).collect();
            r.push_str(&format!(
                " (only Kconfig files that ARCH={} does not read define it: {}{})",
                db.srcarch,
                shown.join(", "),
                if elsewhere.len() > 3 { ", ..." } else { "" }
            ));
        }
        return vec![r];
    };
    let ty = info.ty;
    match (requested, ty) {
        (Value::Tri(_), Some(t @ (SymType::String | SymType::Int | SymType::Hex))) => {
            return vec![format!(
                "it is a {} symbol; `{}` is not a valid value for it, so Kconfig ignored it",
                t.name(),
                requested.config_text()
            )];
        }
        (Value::Tri(Tri::M), Some(SymType::Bool)) => {
            return vec![
                "it is a bool symbol; `m` is not a valid value for it (use y or n), so Kconfig ignored it"
                    .into(),
            ];
        }
        (Value::Str(_) | Value::Number(_), Some(t @ (SymType::Bool | SymType::Tristate))) => {
            return vec![format!(
                "it is a {} symbol; use y{} or n",
                t.name(),
                if t == SymType::Tristate { ", m" } else { "" }
            )];
        }
        _ => {}
    }
    let defs = &info.defs;
    let req_t = requested.tri();
    let act_t = actual.tri().unwrap_or(Tri::N);
    match req_t {
        Some(need) if act_t < need => lowered(db, env, symbol, ty, defs, need),
        Some(need) => raised(db, env, symbol, ty, defs, need, act_t),
        None => {
            // String/number symbols: unmet dependencies or a hidden prompt make Kconfig drop the value.
            let r = visibility_reasons(env, ty, defs, Tri::Y);
            if !r.is_empty() {
                return r;
            }
            vec![format!(
                "Kconfig set it to {} although it can be set (its value may be outside a `range`); see the log",
                actual.config_text()
            )]
        }
    }
}

fn clamp(ty: Option<SymType>, modules: Tri, t: Tri) -> Tri {
    // Kconfig: a bool (or anything without modules) that is visible as m is visible as y.
    if t == Tri::M && (ty != Some(SymType::Tristate) || modules == Tri::N) {
        Tri::Y
    } else {
        t
    }
}

fn dep_label(origin: DepOrigin, expr: &Expr, at: &str) -> String {
    match origin {
        DepOrigin::DependsOn => format!("[{at}]"),
        DepOrigin::If => format!("[inside `if {expr}` at {at}]"),
        DepOrigin::Menu => format!("[its menu depends on {expr} at {at}]"),
        DepOrigin::Choice => format!("[its choice depends on {expr} at {at}]"),
    }
}

/// The most visible (definition, prompt) and its visibility.
fn best_visibility(
    env: &ConfigEnv<'_>,
    ty: Option<SymType>,
    defs: &[Def],
) -> Option<(usize, usize, Tri)> {
    let modules = sym_tri(env, "MODULES");
    let mut best: Option<(usize, usize, Tri)> = None;
    for (di, d) in defs.iter().enumerate() {
        let dep = expr::eval(&KconfigDb::def_dep_expr(d), env);
        for (pi, p) in d.prompts.iter().enumerate() {
            let mut v = dep;
            if let Some(c) = &p.cond {
                v = v.min(expr::eval(c, env));
            }
            for mv in &p.menu_visible {
                v = v.min(expr::eval(&mv.expr, env));
            }
            let v = clamp(ty, modules, v);
            if best.is_none_or(|(_, _, b)| v > b) {
                best = Some((di, pi, v));
            }
        }
    }
    best
}

/// Reasons the symbol's prompt is not visible at level `need` (empty when it is).
fn visibility_reasons(
    env: &ConfigEnv<'_>,
    ty: Option<SymType>,
    defs: &[Def],
    need: Tri,
) -> Vec<String> {
    let Some((di, pi, vis)) = best_visibility(env, ty, defs) else {
        return Vec::new();
    };
    let modules = sym_tri(env, "MODULES");
    if vis >= need {
        return Vec::new();
    }
    // What the blame must reach: for a bool (or without modules), m already counts as y.
    let target = if ty != Some(SymType::Tristate) || modules == Tri::N {
        need.min(Tri::M)
    } else {
        need
    };
    let d = &defs[di];
    let mut out = Vec::new();
    let at_most = if vis == Tri::M {
        " so it can be at most m"
    } else {
        ""
    };
    for dep in &d.deps {
        for part in expr::blame(&dep.expr, target, env) {
            out.push(format!(
                "depends on {part}{at_most} {}",
                dep_label(dep.origin, &dep.expr, &dep.at.to_string())
            ));
        }
    }
    let p = &d.prompts[pi];
    if let Some(c) = &p.cond {
        for part in expr::blame(c, target, env) {
            out.push(format!(
                "its prompt is offered only if {part} [{}], so its default applies",
                p.at
            ));
        }
    }
    for mv in &p.menu_visible {
        for part in expr::blame(&mv.expr, target, env) {
            out.push(format!(
                "its menu is visible only if {part} [{}], so its default applies",
                mv.at
            ));
        }
    }
    if out.is_empty() {
        out.push(format!(
            "its dependencies {} evaluate to {vis} [{}]",
            KconfigDb::def_dep_expr(d),
            d.at
        ));
    }
    if defs.len() > 1 {
        out.push(format!(
            "(defined in {} places; shown: {})",
            defs.len(),
            d.at
        ));
    }
    out
}

fn selector_list(db: &KconfigDb, env: &ConfigEnv<'_>, symbol: &str) -> String {
    let sels: Vec<String> = db
        .selects_of(symbol)
        .iter()
        .filter(|s| !s.imply)
        .map(|s| format!("{} (={})", s.by, sym_tri(env, &s.by)))
        .collect();
    if sels.is_empty() {
        return String::new();
    }
    let n = sels.len();
    let shown: Vec<String> = sels.into_iter().take(6).collect();
    format!(
        "; it is selected by {}{}",
        shown.join(", "),
        if n > 6 {
            format!(" and {} more", n - 6)
        } else {
            String::new()
        }
    )
}

fn lowered(
    db: &KconfigDb,
    env: &ConfigEnv<'_>,
    symbol: &str,
    ty: Option<SymType>,
    defs: &[Def],
    need: Tri,
) -> Vec<String> {
    if defs.iter().all(|d| d.prompts.is_empty()) {
        let at = defs.first().map(|d| d.at.to_string()).unwrap_or_default();
        return vec![format!(
            "it has no prompt [{at}], so a fragment cannot set it: only a `select` or its default can{}",
            selector_list(db, env, symbol)
        )];
    }
    let r = visibility_reasons(env, ty, defs, need);
    if !r.is_empty() {
        return r;
    }
    // Visible enough: a choice may have picked another member.
    for d in defs {
        if let Some(c) = d.choice {
            let chosen: Vec<String> = db.choices[c]
                .members
                .iter()
                .filter(|m| m.as_str() != symbol && sym_tri(env, m) == Tri::Y)
                .map(|m| format!("{m}=y"))
                .collect();
            if !chosen.is_empty() {
                return vec![format!(
                    "it is a member of the choice at {} and {} was chosen instead",
                    db.choices[c].at,
                    chosen.join(", ")
                )];
            }
        }
    }
    let d = &defs[0];
    vec![format!(
        "Kconfig lowered it although its dependencies ({}) are met [{}]; see the Kconfig log",
        KconfigDb::def_dep_expr(d),
        d.at
    )]
}

fn raised(
    db: &KconfigDb,
    env: &ConfigEnv<'_>,
    symbol: &str,
    ty: Option<SymType>,
    defs: &[Def],
    req: Tri,
    act: Tri,
) -> Vec<String> {
    let mut out = Vec::new();
    for s in db.selects_of(symbol).iter().filter(|s| !s.imply) {
        let by = sym_tri(env, &s.by);
        let cond = s.cond.as_ref().map_or(Tri::Y, |c| expr::eval(c, env));
        if by.min(cond) > req {
            let if_part = s
                .cond
                .as_ref()
                .map(|c| format!(" if {}", expr::describe(c, env)))
                .unwrap_or_default();
            out.push(format!("selected by {} (={by}){if_part} [{}]", s.by, s.at));
        }
    }
    if !out.is_empty() {
        if out.len() > 5 {
            let n = out.len();
            out.truncate(5);
            out.push(format!("and {} more selects", n - 5));
        }
        return out;
    }
    if req == Tri::M && act == Tri::Y && sym_tri(env, "MODULES") == Tri::N {
        return vec!["CONFIG_MODULES is not set, so m becomes y".into()];
    }
    // A hidden prompt: the default applies.
    let hidden = visibility_reasons(env, ty, defs, Tri::M);
    let no_prompt = defs.iter().all(|d| d.prompts.is_empty());
    if no_prompt || !hidden.is_empty() {
        let mut r = if no_prompt {
            vec![format!(
                "it has no prompt [{}], so its default applies",
                defs.first().map(|d| d.at.to_string()).unwrap_or_default()
            )]
        } else {
            hidden
        };
        for d in defs {
            let dep = expr::eval(&KconfigDb::def_dep_expr(d), env);
            if let Some(def) = d.defaults.iter().find(|x| {
                dep > Tri::N && x.cond.as_ref().is_none_or(|c| expr::eval(c, env) > Tri::N)
            }) {
                r.push(format!("default {} [{}]", def.value, def.at));
                break;
            }
        }
        return r;
    }
    let d = &defs[0];
    vec![format!(
        "Kconfig raised it to {act} although nothing visible selects it [{}]; see the Kconfig log",
        d.at
    )]
}

#[cfg(test)]
mod tests {
    use super::super::fragment::parse as parse_fragment;
    use super::super::merge::merge;
    use super::*;

    /// A small but real-shaped Kconfig tree.
    fn db() -> (tempfile::TempDir, KconfigDb) {
        let dir = tempfile::tempdir().expect("tempdir");
        let files: &[(&str, &str)] = &[
            (
                "Kconfig",
                "config MODULES\n\tbool \"modules\"\nconfig USB\n\ttristate \"usb\"\nconfig EXPERT\n\tbool \"expert\"\n\
                 config RFKILL\n\ttristate \"rfkill\"\nconfig CMDLINE\n\tstring \"cmdline\"\n\tdepends on EXPERT\n\
                 menuconfig USB_NET_DRIVERS\n\ttristate \"usb net\"\n\tdepends on USB\nif USB_NET_DRIVERS\n\
                 config USB_USBNET\n\ttristate \"usbnet\"\n\tselect MII\n\
                 config USB_NET_AX8817X\n\ttristate \"asix\"\n\tdepends on USB_USBNET\nendif\n\
                 config MII\n\ttristate\nconfig BT\n\ttristate \"bt\"\n\tdepends on RFKILL || !RFKILL\n\
                 config HIDDEN\n\tbool \"hidden\" if EXPERT\n\tdefault y\n\
                 config FLAG\n\tbool \"flag\"\n\
                 choice\n\tprompt \"pick\"\nconfig PICK_A\n\tbool \"a\"\nconfig PICK_B\n\tbool \"b\"\nendchoice\n",
            ),
            ("arch/x86/Kconfig", "config X86_ONLY\n\tbool \"x\"\n"),
            ("arch/arm/Kconfig", ""),
        ];
        for (p, t) in files {
            let path = dir.path().join(p);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, t).expect("write");
        }
        let db = KconfigDb::read(dir.path(), "arm").expect("reads");
        assert!(db.warnings.is_empty(), "{:?}", db.warnings);
        (dir, db)
    }

    fn run(fragment: &str, result: &str) -> CheckReport {
        let (_d, db) = db();
        let m = merge(&[parse_fragment("t", "t.config", fragment).expect("fragment")]);
        let r = DotConfig::parse("r", result).expect("result");
        check(&db, &m, &r, "test_defconfig", &DotConfig::default())
    }

    fn line(report: &CheckReport, i: usize) -> String {
        report.symbols[i].to_string()
    }

    const BASE: &str =
        "CONFIG_MODULES=y\nCONFIG_USB=y\nCONFIG_RFKILL=m\n# CONFIG_EXPERT is not set\n";

    #[test]
    fn kept_values_pass() {
        let r = run(
            "CONFIG_USB=y\n# CONFIG_EXPERT is not set\nCONFIG_FLAG=n\n",
            BASE,
        );
        assert!(r.passed());
        assert_eq!(r.count(Status::Kept), 3);
        assert_eq!(line(&r, 0), "ok        CONFIG_USB=y");
    }

    #[test]
    fn unmet_dependency_names_the_symbol_and_its_value() {
        let r = run(
            "# CONFIG_USB_USBNET is not set\nCONFIG_USB_NET_DRIVERS=y\nCONFIG_USB_NET_AX8817X=m\n",
            &format!("{BASE}CONFIG_USB_NET_DRIVERS=y\n# CONFIG_USB_USBNET is not set\n"),
        );
        assert!(!r.passed());
        assert_eq!(
            line(&r, 2),
            "FAILED    CONFIG_USB_NET_AX8817X=m: got n (not set): depends on USB_USBNET (=n) [Kconfig:21] \
             (requested at t.config:3)"
        );
    }

    #[test]
    fn inherited_if_and_at_most_m() {
        let r = run(
            "CONFIG_USB_USBNET=y\nCONFIG_BT=y\n",
            &format!("{BASE}CONFIG_USB_NET_DRIVERS=m\nCONFIG_USB_USBNET=m\nCONFIG_BT=m\n"),
        );
        assert_eq!(
            r.symbols[0].reasons,
            vec![
                "depends on USB_NET_DRIVERS (=m) so it can be at most m [inside `if USB_NET_DRIVERS` at Kconfig:15]"
            ]
        );
        assert_eq!(
            r.symbols[1].reasons,
            vec!["depends on RFKILL || !RFKILL (RFKILL=m) so it can be at most m [Kconfig:27]"]
        );
    }

    #[test]
    fn unknown_symbols_and_optional_markers() {
        let r = run(
            "# boardsmith: optional vendor\nCONFIG_USB_NET_QF9700=m\nCONFIG_X86_ONLY=y\n",
            BASE,
        );
        assert_eq!(r.symbols[0].status, Status::Optional);
        assert_eq!(
            r.count(Status::Failed),
            1,
            "only the non-optional one fails"
        );
        assert_eq!(
            line(&r, 0),
            "optional  CONFIG_USB_NET_QF9700=m: unknown to this kernel: no `config USB_NET_QF9700` in the \
             Kconfig files read for ARCH=arm (requested at t.config:2)"
        );
        assert_eq!(r.symbols[1].status, Status::Failed);
        assert!(
            r.symbols[1].reasons[0].ends_with(
                "(only Kconfig files that ARCH=arm does not read define it: arch/x86/Kconfig:1)"
            ),
            "{:?}",
            r.symbols[1].reasons
        );
    }

    #[test]
    fn forced_by_select() {
        let r = run(
            "# CONFIG_MII is not set\n",
            &format!("{BASE}CONFIG_USB_NET_DRIVERS=y\nCONFIG_USB_USBNET=y\nCONFIG_MII=y\n"),
        );
        assert_eq!(
            r.symbols[0].reasons,
            vec!["selected by USB_USBNET (=y) [Kconfig:18]"]
        );
    }

    #[test]
    fn promptless_symbols_and_hidden_prompts() {
        let r = run("CONFIG_MII=m\n", BASE);
        assert_eq!(
            r.symbols[0].reasons,
            vec![
                "it has no prompt [Kconfig:23], so a fragment cannot set it: only a `select` or its default can; \
                 it is selected by USB_USBNET (=n)"
            ]
        );
        let r = run(
            "# CONFIG_HIDDEN is not set\n",
            &format!("{BASE}CONFIG_HIDDEN=y\n"),
        );
        assert_eq!(
            r.symbols[0].reasons,
            vec![
                "its prompt is offered only if EXPERT (=n) [Kconfig:29], so its default applies",
                "default y [Kconfig:30]"
            ]
        );
    }

    #[test]
    fn strings_choices_and_types() {
        let r = run("CONFIG_CMDLINE=\"quiet\"\n", BASE);
        assert_eq!(
            r.symbols[0].reasons,
            vec!["depends on EXPERT (=n) [Kconfig:11]"]
        );
        let r = run(
            "CONFIG_PICK_A=y\n",
            &format!("{BASE}# CONFIG_PICK_A is not set\nCONFIG_PICK_B=y\n"),
        );
        assert_eq!(
            r.symbols[0].reasons,
            vec!["it is a member of the choice at Kconfig:33 and PICK_B=y was chosen instead"]
        );
        let r = run("CONFIG_FLAG=m\n", BASE);
        assert!(
            r.symbols[0].reasons[0].starts_with("it is a bool symbol; `m` is not a valid value")
        );
        let r = run("CONFIG_USB=\"yes\"\n", BASE);
        assert_eq!(
            r.symbols[0].reasons,
            vec!["it is a tristate symbol; use y, m or n"]
        );
    }

    #[test]
    fn defconfig_values_lowered_by_fragments_are_reported() {
        let (_d, db) = db();
        let m = merge(&[parse_fragment(
            "usb-net",
            "usb-net.config",
            "CONFIG_USB_USBNET=m\nCONFIG_USB=y\n",
        )
        .expect("fragment")]);
        let r = DotConfig::parse("r", BASE).expect("result");
        let defconfig = DotConfig::parse("d", "CONFIG_USB_USBNET=y\nCONFIG_USB=y\n").expect("d");
        let report = check(&db, &m, &r, "exynos_defconfig", &defconfig);
        let o: Vec<String> = report
            .defconfig_overrides
            .iter()
            .map(|o| o.to_string())
            .collect();
        assert_eq!(
            o,
            vec![
                "CONFIG_USB_USBNET is redefined: usb-net (usb-net.config:1) sets m, overriding y from exynos_defconfig"
            ]
        );
    }
}
