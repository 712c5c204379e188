//! Merging fragments in order, with the semantics of the kernel's `scripts/kconfig/merge_config.sh`:
//! a later assignment replaces an earlier one of the same symbol (the entry moves to the later
//! fragment's place in the output), a changed value is an override (always reported, naming both
//! places and values), an unchanged one is redundant (reported on request). Unlike merge_config.sh,
//! which compares raw lines, values are compared by meaning: `CONFIG_X=n` and `# CONFIG_X is not set`
//! are the same value.

use std::collections::HashMap;
use std::fmt;

use serde::Serialize;

use super::fragment::{Entry, Fragment, render_entry};
use super::value::Value;

/// Where an assignment was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Place {
    /// Fragment name (`usb-net`, or a path).
    pub fragment: String,
    /// `origin:line`.
    pub at: String,
}

/// A reassignment seen while merging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Note {
    /// A later fragment changes the value.
    Override {
        symbol: String,
        earlier: Place,
        earlier_value: Value,
        later: Place,
        later_value: Value,
    },
    /// A later fragment repeats the value.
    Redundant {
        symbol: String,
        earlier: Place,
        later: Place,
        value: Value,
    },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::Override {
                symbol,
                earlier,
                earlier_value,
                later,
                later_value,
            } => write!(
                f,
                "CONFIG_{symbol} is redefined: {} ({}) sets {}, overriding {} from {} ({}); the later value wins",
                later.fragment,
                later.at,
                later_value.config_text(),
                earlier_value.config_text(),
                earlier.fragment,
                earlier.at,
            ),
            Note::Redundant {
                symbol,
                earlier,
                later,
                value,
            } => write!(
                f,
                "CONFIG_{symbol}={} in {} ({}) is redundant: {} ({}) already sets it",
                value.config_text(),
                later.fragment,
                later.at,
                earlier.fragment,
                earlier.at,
            ),
        }
    }
}

/// One surviving assignment of the merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedEntry {
    pub entry: Entry,
    /// Index into [`Merged::fragments`].
    pub fragment: usize,
}

/// The result of merging fragments in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Merged {
    /// (name, origin) of every input fragment, in merge order.
    pub fragments: Vec<(String, String)>,
    /// Surviving assignments, in output order.
    pub entries: Vec<MergedEntry>,
    pub notes: Vec<Note>,
}

impl Merged {
    /// Where an entry was written, as `origin:line`.
    pub fn at(&self, e: &MergedEntry) -> String {
        format!("{}:{}", self.fragments[e.fragment].1, e.entry.line)
    }

    pub fn place(&self, e: &MergedEntry) -> Place {
        Place {
            fragment: self.fragments[e.fragment].0.clone(),
            at: self.at(e),
        }
    }

    /// The value requested for a symbol, if any fragment sets it.
    pub fn get(&self, symbol: &str) -> Option<&MergedEntry> {
        self.entries.iter().find(|e| e.entry.symbol == symbol)
    }

    pub fn overrides(&self) -> impl Iterator<Item = &Note> {
        self.notes
            .iter()
            .filter(|n| matches!(n, Note::Override { .. }))
    }

    pub fn redundancies(&self) -> impl Iterator<Item = &Note> {
        self.notes
            .iter()
            .filter(|n| matches!(n, Note::Redundant { .. }))
    }

    /// The merged fragment as text: a header naming the inputs, then each fragment's surviving
    /// entries under a comment naming it. Valid input for Kconfig, merge_config.sh and boardsmith.
    pub fn render(&self, title: &str) -> String {
        let mut out = String::new();
        out.push_str(&format!("# {title}\n"));
        let names: Vec<&str> = self.fragments.iter().map(|(n, _)| n.as_str()).collect();
        out.push_str(&format!(
            "# Merged by boardsmith from, in order: {}\n",
            names.join(" ")
        ));
        for (i, (name, origin)) in self.fragments.iter().enumerate() {
            let mine: Vec<&MergedEntry> = self.entries.iter().filter(|e| e.fragment == i).collect();
            if mine.is_empty() {
                continue;
            }
            out.push_str(&format!("\n# from {name} ({origin})\n"));
            for e in mine {
                render_entry(&e.entry, &mut out);
            }
        }
        out
    }
}

/// Merges fragments in order.
pub fn merge(fragments: &[Fragment]) -> Merged {
    let mut entries: Vec<Option<MergedEntry>> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut notes = Vec::new();
    let names: Vec<(String, String)> = fragments
        .iter()
        .map(|f| (f.name.clone(), f.origin.clone()))
        .collect();
    let place = |fi: usize, line: usize| Place {
        fragment: names[fi].0.clone(),
        at: format!("{}:{line}", names[fi].1),
    };
    for (fi, f) in fragments.iter().enumerate() {
        for e in &f.entries {
            if let Some(&prev_i) = index.get(&e.symbol)
                && let Some(prev) = entries[prev_i].take()
            {
                let earlier = place(prev.fragment, prev.entry.line);
                let later = place(fi, e.line);
                if prev.entry.value.same_as(&e.value) {
                    notes.push(Note::Redundant {
                        symbol: e.symbol.clone(),
                        earlier,
                        later,
                        value: e.value.clone(),
                    });
                } else {
                    notes.push(Note::Override {
                        symbol: e.symbol.clone(),
                        earlier,
                        earlier_value: prev.entry.value.clone(),
                        later,
                        later_value: e.value.clone(),
                    });
                }
            }
            index.insert(e.symbol.clone(), entries.len());
            entries.push(Some(MergedEntry {
                entry: e.clone(),
                fragment: fi,
            }));
        }
    }
    Merged {
        fragments: names,
        entries: entries.into_iter().flatten().collect(),
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::super::fragment::parse;
    use super::super::value::Tri;
    use super::*;
    use proptest::prelude::*;

    fn frag(name: &str, text: &str) -> Fragment {
        parse(name, &format!("{name}.config"), text).expect("test fragment parses")
    }

    #[test]
    fn golden_override() {
        let m = merge(&[
            frag("a", "CONFIG_USB_USBNET=y\nCONFIG_INPUT_UINPUT=m\n"),
            frag("b", "CONFIG_USB_USBNET=m\n"),
        ]);
        let notes: Vec<String> = m.notes.iter().map(|n| n.to_string()).collect();
        assert_eq!(
            notes,
            vec![
                "CONFIG_USB_USBNET is redefined: b (b.config:1) sets m, overriding y from a (a.config:1); \
                 the later value wins"
            ]
        );
        assert_eq!(
            m.render("merged for test"),
            "# merged for test\n# Merged by boardsmith from, in order: a b\n\
             \n# from a (a.config)\nCONFIG_INPUT_UINPUT=m\n\
             \n# from b (b.config)\nCONFIG_USB_USBNET=m\n"
        );
    }

    #[test]
    fn golden_redundant_and_is_not_set() {
        let m = merge(&[
            frag("a", "CONFIG_X=n\nCONFIG_Y=y\n"),
            frag("b", "# CONFIG_X is not set\nCONFIG_Y=y\n"),
        ]);
        assert_eq!(
            m.overrides().count(),
            0,
            "`=n` and `is not set` are the same value"
        );
        let notes: Vec<String> = m.redundancies().map(|n| n.to_string()).collect();
        assert_eq!(
            notes,
            vec![
                "CONFIG_X=n in b (b.config:1) is redundant: a (a.config:1) already sets it",
                "CONFIG_Y=y in b (b.config:2) is redundant: a (a.config:2) already sets it",
            ]
        );
        assert_eq!(
            m.render("t"),
            "# t\n# Merged by boardsmith from, in order: a b\n\
             \n# from b (b.config)\n# CONFIG_X is not set\nCONFIG_Y=y\n"
        );
    }

    #[test]
    fn golden_is_not_set_overridden_by_y() {
        let m = merge(&[
            frag("a", "# CONFIG_BT is not set\n"),
            frag("b", "CONFIG_BT=m\n"),
        ]);
        assert_eq!(
            m.notes[0].to_string(),
            "CONFIG_BT is redefined: b (b.config:1) sets m, overriding n from a (a.config:1); the later value wins"
        );
    }

    #[test]
    fn duplicate_within_one_fragment_is_an_override_too() {
        let m = merge(&[frag("a", "CONFIG_X=y\nCONFIG_X=m\n")]);
        assert_eq!(m.entries.len(), 1);
        assert_eq!(m.entries[0].entry.value, Value::Tri(Tri::M));
        assert!(
            m.notes[0]
                .to_string()
                .contains("a (a.config:2) sets m, overriding y from a (a.config:1)")
        );
    }

    #[test]
    fn optional_marker_follows_the_winning_line() {
        let m = merge(&[
            frag("a", "# boardsmith: optional old\nCONFIG_Q=m\n"),
            frag("b", "CONFIG_Q=m\n"),
        ]);
        assert_eq!(m.entries[0].entry.optional, None);
        let m = merge(&[
            frag("a", "CONFIG_Q=m\n"),
            frag("b", "# boardsmith: optional vendor\nCONFIG_Q=m\n"),
        ]);
        assert_eq!(m.entries[0].entry.optional.as_deref(), Some("vendor"));
        let text = m.render("t");
        let back = merge(&[frag("t", &text)]);
        assert_eq!(back.entries[0].entry.optional.as_deref(), Some("vendor"));
    }

    // ---- properties ----

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Tri(Tri::Y)),
            Just(Value::Tri(Tri::M)),
            Just(Value::Tri(Tri::N)),
            "[a-z \"\\\\]{0,6}".prop_map(Value::Str),
            (-50i32..5000).prop_map(|n| Value::Number(n.to_string())),
        ]
    }

    fn symbol() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("A"),
            Just("B"),
            Just("C"),
            Just("USB_NET_X"),
            Just("BT")
        ]
        .prop_map(String::from)
    }

    /// A fragment text; `n` is written either way at random.
    fn fragment_text() -> impl Strategy<Value = String> {
        prop::collection::vec((symbol(), value(), any::<bool>(), any::<bool>()), 0..8).prop_map(
            |lines| {
                let mut s = String::new();
                for (sym, v, alt_n, optional) in lines {
                    if optional {
                        s.push_str("# boardsmith: optional\n");
                    }
                    if alt_n && v == Value::Tri(Tri::N) {
                        s.push_str(&format!("CONFIG_{sym}=n\n"));
                    } else {
                        s.push_str(&v.config_line(&sym));
                        s.push('\n');
                    }
                    if alt_n {
                        s.push_str("# a comment\n\n");
                    }
                }
                s
            },
        )
    }

    fn frags(texts: &[String]) -> Vec<Fragment> {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| frag(&format!("f{i}"), t))
            .collect()
    }

    fn final_values(m: &Merged) -> Vec<(String, Value)> {
        let mut v: Vec<(String, Value)> = m
            .entries
            .iter()
            .map(|e| (e.entry.symbol.clone(), e.entry.value.clone()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    proptest! {
        /// The merge equals the model "every assignment overwrites the symbol's value, in order",
        /// and every reassignment yields exactly one note of the right kind.
        #[test]
        fn later_wins_and_every_reassignment_is_reported(texts in prop::collection::vec(fragment_text(), 0..5)) {
            let fs = frags(&texts);
            let m = merge(&fs);
            let mut model: std::collections::BTreeMap<String, Value> = Default::default();
            let (mut overrides, mut redundant) = (0, 0);
            for f in &fs {
                for e in &f.entries {
                    match model.insert(e.symbol.clone(), e.value.clone()) {
                        Some(old) if old == e.value => redundant += 1,
                        Some(_) => overrides += 1,
                        None => {}
                    }
                }
            }
            let expect: Vec<(String, Value)> = model.into_iter().collect();
            prop_assert_eq!(final_values(&m), expect);
            prop_assert_eq!(m.overrides().count(), overrides);
            prop_assert_eq!(m.redundancies().count(), redundant);
        }

        /// Rendering the merge and parsing it back gives the same assignments and markers, with no notes.
        #[test]
        fn render_round_trips(texts in prop::collection::vec(fragment_text(), 0..5)) {
            let m = merge(&frags(&texts));
            let back = merge(&[frag("merged", &m.render("t"))]);
            prop_assert!(back.notes.is_empty());
            let a: Vec<(&Entry,)> = m.entries.iter().map(|e| (&e.entry,)).collect();
            let b: Vec<(&Entry,)> = back.entries.iter().map(|e| (&e.entry,)).collect();
            prop_assert_eq!(a.len(), b.len());
            for ((x,), (y,)) in a.iter().zip(b.iter()) {
                prop_assert_eq!(&x.symbol, &y.symbol);
                prop_assert_eq!(&x.value, &y.value);
                prop_assert_eq!(&x.optional, &y.optional);
            }
        }

        /// Merging is associative in its result: merging a prefix first changes nothing.
        #[test]
        fn merging_a_prefix_first_gives_the_same_values(texts in prop::collection::vec(fragment_text(), 1..5), split in 0usize..5) {
            let fs = frags(&texts);
            let split = split.min(fs.len());
            let head = merge(&fs[..split]);
            let head_frag = frag("head", &head.render("t"));
            let mut rest = vec![head_frag];
            rest.extend_from_slice(&fs[split..]);
            prop_assert_eq!(final_values(&merge(&rest)), final_values(&merge(&fs)));
        }

        /// Output order: each surviving entry sits where its last assignment was made.
        #[test]
        fn survivors_keep_the_order_of_their_last_assignment(texts in prop::collection::vec(fragment_text(), 0..5)) {
            let fs = frags(&texts);
            let m = merge(&fs);
            let positions: Vec<(usize, usize)> = m.entries.iter().map(|e| (e.fragment, e.entry.line)).collect();
            let mut sorted = positions.clone();
            sorted.sort();
            prop_assert_eq!(positions, sorted);
        }
    }
}
