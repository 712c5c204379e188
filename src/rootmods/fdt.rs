//! A flattened device tree (DTB) read into an owned node table: names, parents, properties, phandles.
//!
//! The blob comes from a root filesystem, so it is untrusted. `fdt-parser` does the reading, but it indexes
//! slices with offsets taken from the blob (the header's block offsets, property name offsets) and loops
//! forever on a structure block that ends without a token; so the whole structure block is first checked
//! here, token by token, against the header's bounds. Only a blob that passes reaches the crate.

use std::collections::HashMap;

/// Largest DTB accepted (the kernel's own limit for an appended DTB is far lower; Debian's largest is
/// under 256 KiB).
pub const MAX_DTB: usize = 8 << 20;
/// Deepest node nesting accepted: fdt-parser keeps 16 levels of parents (real trees use 6 or 7).
pub const MAX_DEPTH: usize = 16;
const MAX_NODES: usize = 200_000;

const FDT_MAGIC: u32 = 0xd00d_feed;
const BEGIN_NODE: u32 = 1;
const END_NODE: u32 = 2;
const PROP: u32 = 3;
const NOP: u32 = 4;
const END: u32 = 9;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FdtError {
    #[error("not a device tree blob: {0}")]
    Header(String),
    #[error("malformed device tree at byte {offset}: {message}")]
    Structure { offset: usize, message: String },
}

fn bad(offset: usize, message: impl Into<String>) -> FdtError {
    FdtError::Structure {
        offset,
        message: message.into(),
    }
}

/// One node: its name with unit address (`mmc@1c0f000`), parent, children and raw properties.
#[derive(Debug, Clone)]
pub struct Node {
    pub name: String,
    pub parent: Option<usize>,
    pub children: Vec<usize>,
    pub props: Vec<(String, Vec<u8>)>,
}

impl Node {
    pub fn prop(&self, name: &str) -> Option<&[u8]> {
        self.props
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// The name without its unit address (`mmc` for `mmc@1c0f000`).
    pub fn base_name(&self) -> &str {
        self.name.split('@').next().unwrap_or(&self.name)
    }

    /// A string-list property (`compatible`): NUL-separated, empty entries dropped.
    pub fn strings(&self, name: &str) -> Vec<String> {
        self.prop(name)
            .map(|v| {
                v.split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A single-cell property.
    pub fn u32_prop(&self, name: &str) -> Option<u32> {
        let v = self.prop(name)?;
        Some(u32::from_be_bytes(v.get(..4)?.try_into().ok()?))
    }

    /// `status` absent, "okay" or "ok".
    pub fn enabled(&self) -> bool {
        match self.strings("status").first().map(String::as_str) {
            None => true,
            Some(s) => s == "okay" || s == "ok",
        }
    }
}

/// A whole device tree; node 0 is the root.
#[derive(Debug, Clone)]
pub struct DeviceTree {
    pub nodes: Vec<Node>,
    phandles: HashMap<u32, usize>,
}

fn be32(data: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    Some(u32::from_be_bytes(data.get(at..end)?.try_into().ok()?))
}

fn align4(n: usize) -> Option<usize> {
    n.checked_add(3).map(|v| v & !3)
}

/// Checks the header and every token of the structure block, so that fdt-parser reads only in bounds.
fn validate(data: &[u8]) -> Result<(), FdtError> {
    if data.len() > MAX_DTB {
        return Err(FdtError::Header(format!(
            "{} bytes, more than the {MAX_DTB} accepted",
            data.len()
        )));
    }
    let h = |i: usize| be32(data, i * 4).ok_or_else(|| FdtError::Header("too short".into()));
    if h(0)? != FDT_MAGIC {
        return Err(FdtError::Header(format!(
            "magic {:#010x}, expected 0xd00dfeed",
            h(0)?
        )));
    }
    let total = h(1)? as usize;
    let (off_struct, off_strings) = (h(2)? as usize, h(3)? as usize);
    let (version, last_comp) = (h(5)?, h(6)?);
    let (size_strings, size_struct) = (h(8)? as usize, h(9)? as usize);
    if total > data.len() || total < 40 {
        return Err(FdtError::Header(format!(
            "total size {total} does not fit the {} bytes read",
            data.len()
        )));
    }
    if version < 17 || last_comp > 17 {
        return Err(FdtError::Header(format!(
            "version {version} (compatible with {last_comp}); version 17 is needed"
        )));
    }
    let struct_end = off_struct
        .checked_add(size_struct)
        .filter(|e| *e <= total && off_struct >= 40 && off_struct % 4 == 0)
        .ok_or_else(|| FdtError::Header("structure block outside the blob".into()))?;
    let strings_end = off_strings
        .checked_add(size_strings)
        .filter(|e| *e <= total && off_strings >= 40)
        .ok_or_else(|| FdtError::Header("strings block outside the blob".into()))?;
    let strings = &data[off_strings..strings_end];

    let mut at = off_struct;
    let mut depth = 0usize;
    let mut roots = 0usize;
    let mut nodes = 0usize;
    // Properties must come before a node's children (fdt-parser reads a node's properties up to its first
    // child); per level, whether a child was seen.
    let mut child_seen = [false; MAX_DEPTH + 1];
    loop {
        let token = be32(data, at)
            .filter(|_| at + 4 <= struct_end)
            .ok_or_else(|| bad(at, "structure block ends without an END token"))?;
        let token_at = at;
        at += 4;
        match token {
            BEGIN_NODE => {
                if depth == 0 {
                    roots += 1;
                    if roots > 1 {
                        return Err(bad(token_at, "a second root node"));
                    }
                } else {
                    child_seen[depth] = true;
                }
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(bad(
                        token_at,
                        format!("nodes nested deeper than {MAX_DEPTH} levels"),
                    ));
                }
                nodes += 1;
                if nodes > MAX_NODES {
                    return Err(bad(token_at, format!("more than {MAX_NODES} nodes")));
                }
                child_seen[depth] = false;
                let rest = &data[at..struct_end];
                let len = rest
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| bad(at, "node name without its terminating NUL"))?;
                if std::str::from_utf8(&rest[..len]).is_err() {
                    return Err(bad(at, "node name is not UTF-8"));
                }
                at = align4(at + len + 1)
                    .filter(|a| *a <= struct_end)
                    .ok_or_else(|| bad(at, "node name runs past the structure block"))?;
            }
            END_NODE => {
                if depth == 0 {
                    return Err(bad(token_at, "END_NODE without a node"));
                }
                depth -= 1;
            }
            PROP => {
                if depth == 0 {
                    return Err(bad(token_at, "property outside any node"));
                }
                if child_seen[depth] {
                    return Err(bad(token_at, "property after a child node"));
                }
                let len = be32(data, at)
                    .filter(|_| at + 8 <= struct_end)
                    .ok_or_else(|| bad(at, "truncated property header"))?
                    as usize;
                let nameoff = be32(data, at + 4).unwrap_or(u32::MAX) as usize;
                let name = strings
                    .get(nameoff..)
                    .filter(|s| !s.is_empty())
                    .ok_or_else(|| {
                        bad(
                            at + 4,
                            format!("property name offset {nameoff} outside the strings block"),
                        )
                    })?;
                let name_len = name
                    .iter()
                    .position(|b| *b == 0)
                    .ok_or_else(|| bad(at + 4, "property name without its terminating NUL"))?;
                if std::str::from_utf8(&name[..name_len]).is_err() {
                    return Err(bad(at + 4, "property name is not UTF-8"));
                }
                at = (at + 8)
                    .checked_add(len)
                    .and_then(align4)
                    .filter(|a| *a <= struct_end)
                    .ok_or_else(|| {
                        bad(
                            at,
                            format!("property of {len} bytes runs past the structure block"),
                        )
                    })?;
            }
            NOP => {}
            END => {
                if depth != 0 || roots == 0 {
                    return Err(bad(token_at, "END token inside a node or before the root"));
                }
                return Ok(());
            }
            other => return Err(bad(token_at, format!("unknown token {other:#x}"))),
        }
    }
}

impl DeviceTree {
    /// Reads a DTB. Errors say what is wrong and at which byte.
    pub fn parse(data: &[u8]) -> Result<DeviceTree, FdtError> {
        validate(data)?;
        let fdt =
            fdt_parser::base::Fdt::from_bytes(data).map_err(|e| FdtError::Header(e.to_string()))?;
        let mut nodes: Vec<Node> = Vec::new();
        // Index of the most recent node at each level.
        let mut stack: Vec<usize> = Vec::new();
        for n in fdt.all_nodes() {
            let n = n.map_err(|e| bad(0, e.to_string()))?;
            let level = n.level();
            if level > stack.len() || (level == 0 && !nodes.is_empty()) {
                return Err(bad(
                    0,
                    format!("node `{}` at an impossible level", n.name()),
                ));
            }
            stack.truncate(level);
            let parent = stack.last().copied();
            let mut props = Vec::new();
            for p in n.properties() {
                let p = p.map_err(|e| bad(0, e.to_string()))?;
                props.push((p.name.to_string(), p.raw_value().to_vec()));
            }
            let idx = nodes.len();
            nodes.push(Node {
                name: n.name().to_string(),
                parent,
                children: Vec::new(),
                props,
            });
            if let Some(p) = parent {
                nodes[p].children.push(idx);
            }
            stack.push(idx);
        }
        if nodes.is_empty() {
            return Err(bad(0, "no root node"));
        }
        let mut phandles = HashMap::new();
        for (i, n) in nodes.iter().enumerate() {
            let ph = n
                .u32_prop("phandle")
                .or_else(|| n.u32_prop("linux,phandle"));
            if let Some(ph) = ph.filter(|p| *p != 0 && *p != u32::MAX) {
                phandles.entry(ph).or_insert(i);
            }
        }
        Ok(DeviceTree { nodes, phandles })
    }

    pub fn node(&self, i: usize) -> &Node {
        &self.nodes[i]
    }

    pub fn by_phandle(&self, ph: u32) -> Option<usize> {
        self.phandles.get(&ph).copied()
    }

    /// `/soc/mmc@1c0f000`.
    pub fn path(&self, mut i: usize) -> String {
        let mut parts = Vec::new();
        while let Some(p) = self.nodes[i].parent {
            parts.push(self.nodes[i].name.as_str());
            i = p;
        }
        if parts.is_empty() {
            return "/".into();
        }
        parts.reverse();
        format!("/{}", parts.join("/"))
    }

    /// Ancestors from the parent up to the root.
    pub fn ancestors(&self, i: usize) -> impl Iterator<Item = usize> + '_ {
        let mut cur = self.nodes[i].parent;
        std::iter::from_fn(move || {
            let c = cur?;
            cur = self.nodes[c].parent;
            Some(c)
        })
    }

    /// A node and all its ancestors enabled.
    pub fn enabled(&self, i: usize) -> bool {
        self.nodes[i].enabled() && self.ancestors(i).all(|a| self.nodes[a].enabled())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal DTB builder for tests: (depth-first) nodes with properties.
    pub(crate) struct Builder {
        structs: Vec<u8>,
        strings: Vec<u8>,
    }

    impl Builder {
        pub fn new() -> Builder {
            Builder {
                structs: Vec::new(),
                strings: Vec::new(),
            }
        }
        fn word(&mut self, w: u32) {
            self.structs.extend_from_slice(&w.to_be_bytes());
        }
        fn pad(&mut self) {
            while !self.structs.len().is_multiple_of(4) {
                self.structs.push(0);
            }
        }
        pub fn begin(&mut self, name: &str) -> &mut Self {
            self.word(BEGIN_NODE);
            self.structs.extend_from_slice(name.as_bytes());
            self.structs.push(0);
            self.pad();
            self
        }
        pub fn end(&mut self) -> &mut Self {
            self.word(END_NODE);
            self
        }
        pub fn prop(&mut self, name: &str, value: &[u8]) -> &mut Self {
            let off = match self
                .strings
                .windows(name.len() + 1)
                .position(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0)
            {
                Some(o) => o,
                None => {
                    let o = self.strings.len();
                    self.strings.extend_from_slice(name.as_bytes());
                    self.strings.push(0);
                    o
                }
            };
            self.word(PROP);
            self.word(value.len() as u32);
            self.word(off as u32);
            self.structs.extend_from_slice(value);
            self.pad();
            self
        }
        pub fn str(&mut self, name: &str, values: &[&str]) -> &mut Self {
            let mut v = Vec::new();
            for s in values {
                v.extend_from_slice(s.as_bytes());
                v.push(0);
            }
            self.prop(name, &v)
        }
        pub fn cells(&mut self, name: &str, cells: &[u32]) -> &mut Self {
            let v: Vec<u8> = cells.iter().flat_map(|c| c.to_be_bytes()).collect();
            self.prop(name, &v)
        }
        pub fn finish(&mut self) -> Vec<u8> {
            self.word(END);
            let off_struct = 40 + 16;
            let off_strings = off_struct + self.structs.len();
            let total = off_strings + self.strings.len();
            let mut out = Vec::new();
            for w in [
                FDT_MAGIC,
                total as u32,
                off_struct as u32,
                off_strings as u32,
                40,
                17,
                16,
                0,
                self.strings.len() as u32,
                self.structs.len() as u32,
            ] {
                out.extend_from_slice(&w.to_be_bytes());
            }
            out.extend_from_slice(&[0; 16]);
            out.extend_from_slice(&self.structs);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    fn sample() -> Vec<u8> {
        let mut b = Builder::new();
        b.begin("")
            .str("compatible", &["vendor,board"])
            .begin("soc")
            .str("compatible", &["simple-bus"])
            .begin("mmc@1000")
            .str("compatible", &["vendor,mmc", "generic-mmc"])
            .cells("vmmc-supply", &[5])
            .end()
            .begin("reg")
            .cells("phandle", &[5])
            .str("status", &["disabled"])
            .end()
            .end()
            .end();
        b.finish()
    }

    #[test]
    fn reads_nodes_properties_and_phandles() {
        let t = DeviceTree::parse(&sample()).unwrap();
        assert_eq!(t.nodes.len(), 4);
        assert_eq!(t.path(2), "/soc/mmc@1000");
        assert_eq!(t.node(2).base_name(), "mmc");
        assert_eq!(
            t.node(2).strings("compatible"),
            ["vendor,mmc", "generic-mmc"]
        );
        assert_eq!(t.by_phandle(5), Some(3));
        assert!(t.enabled(2) && !t.enabled(3));
        assert_eq!(t.ancestors(2).collect::<Vec<_>>(), [1, 0]);
    }

    #[test]
    fn malformed_blobs_are_errors_not_panics() {
        let good = sample();
        assert!(matches!(
            DeviceTree::parse(&good[..30]),
            Err(FdtError::Header(_))
        ));
        let mut m = good.clone();
        m[0] = 0;
        assert!(
            DeviceTree::parse(&m)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        // Every truncation and every single-byte corruption is handled.
        for cut in 0..good.len() {
            let _ = DeviceTree::parse(&good[..cut]);
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 2, 3, 9, 0x7f, 0xff] {
                let mut m = good.clone();
                m[i] = v;
                let _ = DeviceTree::parse(&m);
            }
        }
        // A property name offset far outside the strings block.
        let mut b = Builder::new();
        b.begin("").prop("x", b"1").end();
        let mut d = b.finish();
        let name_off_at = 56 + 4 + 4 + 4 + 4;
        d[name_off_at..name_off_at + 4].copy_from_slice(&0x7fff_fff0u32.to_be_bytes());
        let e = DeviceTree::parse(&d).unwrap_err().to_string();
        assert!(e.contains("name offset"), "{e}");
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut b = Builder::new();
        for _ in 0..=MAX_DEPTH {
            b.begin("n");
        }
        for _ in 0..=MAX_DEPTH {
            b.end();
        }
        let e = DeviceTree::parse(&b.finish()).unwrap_err().to_string();
        assert!(e.contains("nested deeper"), "{e}");
    }

    #[test]
    fn structure_without_end_is_refused() {
        let mut d = sample();
        // Replace the END token with a NOP: the block then ends without END.
        let off_struct = 56;
        let size_struct = u32::from_be_bytes(d[36..40].try_into().unwrap()) as usize;
        let end_at = off_struct + size_struct - 4;
        d[end_at..end_at + 4].copy_from_slice(&NOP.to_be_bytes());
        let e = DeviceTree::parse(&d).unwrap_err().to_string();
        assert!(e.contains("without an END"), "{e}");
    }
}
