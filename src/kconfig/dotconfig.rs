//! A full kernel `.config` as Kconfig writes it: read into symbol → value, and the merge step that puts a
//! merged fragment on top of an expanded defconfig (merge_config.sh's: drop the base's lines for every
//! symbol the fragment sets, append the fragment's).

use std::collections::HashMap;
use std::path::Path;

use super::fragment::{ParseError, parse};
use super::merge::Merged;
use super::value::{Tri, Value};

#[derive(Debug, thiserror::Error)]
pub enum DotConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Kconfig wrote a .config this reader cannot parse: {0}")]
    Parse(#[from] ParseError),
}

/// Symbol values of a .config; symbols it does not mention are `n`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DotConfig {
    pub values: HashMap<String, Value>,
    /// The file as read.
    pub text: String,
}

impl DotConfig {
    pub fn parse(origin: &str, text: &str) -> Result<DotConfig, ParseError> {
        let f = parse(origin, origin, text)?;
        Ok(DotConfig {
            values: f.entries.into_iter().map(|e| (e.symbol, e.value)).collect(),
            text: text.to_string(),
        })
    }

    pub fn read(path: &Path) -> Result<DotConfig, DotConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| DotConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(DotConfig::parse(&path.display().to_string(), &text)?)
    }

    /// The value as Kconfig left it: absent means `n`.
    pub fn get(&self, symbol: &str) -> Value {
        self.values
            .get(symbol)
            .cloned()
            .unwrap_or(Value::Tri(Tri::N))
    }

    /// Whether the .config mentions the symbol at all (as a value or `is not set`).
    pub fn mentions(&self, symbol: &str) -> bool {
        self.values.contains_key(symbol)
    }
}

/// `base` (an expanded defconfig) with every symbol `merged` sets replaced by the fragment's value,
/// which is appended at the end, as merge_config.sh does.
pub fn apply(base: &str, merged: &Merged) -> String {
    let set: std::collections::HashSet<&str> = merged
        .entries
        .iter()
        .map(|e| e.entry.symbol.as_str())
        .collect();
    let mut out = String::with_capacity(base.len() + 64 * merged.entries.len());
    for line in base.lines() {
        if line_symbol(line).is_some_and(|s| set.contains(s)) {
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out.push_str("#\n# merged fragments (boardsmith)\n#\n");
    for e in &merged.entries {
        out.push_str(&e.entry.value.config_line(&e.entry.symbol));
        out.push('\n');
    }
    out
}

/// The symbol a `CONFIG_X=...` or `# CONFIG_X is not set` line assigns.
fn line_symbol(line: &str) -> Option<&str> {
    if let Some(rest) = line.strip_prefix("CONFIG_") {
        return rest.split('=').next();
    }
    let rest = line.strip_prefix("# CONFIG_")?;
    let name = rest.strip_suffix(" is not set")?;
    Some(name)
}

#[cfg(test)]
mod tests {
    use super::super::fragment::parse as parse_fragment;
    use super::super::merge::merge;
    use super::*;

    #[test]
    fn apply_replaces_and_appends() {
        let base =
            "#\n# Generated\n#\nCONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"x\"\nCONFIG_AB=y\n";
        let m = merge(&[
            parse_fragment("f", "f.config", "CONFIG_B=m\n# CONFIG_A is not set\n").expect("parses"),
        ]);
        let out = apply(base, &m);
        assert_eq!(
            out,
            "#\n# Generated\n#\nCONFIG_C=\"x\"\nCONFIG_AB=y\n#\n# merged fragments (boardsmith)\n#\n\
             CONFIG_B=m\n# CONFIG_A is not set\n"
        );
        let d = DotConfig::parse("x", &out).expect("parses");
        assert_eq!(d.get("B"), Value::Tri(Tri::M));
        assert_eq!(d.get("A"), Value::Tri(Tri::N));
        assert_eq!(d.get("UNSEEN"), Value::Tri(Tri::N));
        assert!(!d.mentions("UNSEEN"));
    }
}
