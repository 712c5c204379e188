//! /etc/fstab from the image plan: the same PARTUUIDs and labels the image builder writes, computed by
//! [`crate::plan::plan`] from the board and SOURCE_DATE_EPOCH, so the two cannot disagree.

use super::{Layout, PlannedPartition};
use crate::profile::{Fs, Role};

/// How /etc/fstab names partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum FstabNaming {
    Partuuid,
    Label,
}

/// Where the boot (FAT) partition is mounted: kernel, device tree and boot configuration stay editable
/// from the running system without hiding the root filesystem's /boot.
pub const BOOT_MOUNT: &str = "/boot/firmware";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FstabEntry {
    pub spec: String,
    pub mount: String,
    pub fstype: String,
    pub options: String,
    pub pass: u8,
}

/// A field as fstab(5) reads it: blanks separate fields, so a space, a tab or a backslash in a
/// value is written as its octal escape (`\040`, `\011`, `\134`), which mount decodes.
pub fn escape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    for c in field.chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => out.push_str(&format!("\\{:03o}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

fn spec(p: &PlannedPartition, naming: FstabNaming) -> Option<String> {
    match naming {
        FstabNaming::Label => p
            .label
            .as_ref()
            .map(|l| format!("LABEL={}", escape(l)))
            .or_else(|| (!p.partuuid.is_empty()).then(|| format!("PARTUUID={}", p.partuuid))),
        FstabNaming::Partuuid => {
            (!p.partuuid.is_empty()).then(|| format!("PARTUUID={}", p.partuuid))
        }
    }
}

/// The entries for a layout: root at /, the boot partition at /boot/firmware.
pub fn entries(layout: &Layout, naming: FstabNaming) -> Vec<FstabEntry> {
    let mut out = Vec::new();
    for p in &layout.partitions {
        let (mount, fstype, options, pass) = match (p.role, p.fs) {
            (Role::Root, Fs::Ext4) => ("/", "ext4", "defaults,noatime,errors=remount-ro", 1),
            (Role::Boot, Fs::Vfat | Fs::Fat16 | Fs::Fat32) => {
                (BOOT_MOUNT, "vfat", "defaults,noatime,nofail,umask=0077", 2)
            }
            _ => continue,
        };
        if let Some(spec) = spec(p, naming) {
            out.push(FstabEntry {
                spec,
                mount: mount.into(),
                fstype: fstype.into(),
                options: options.into(),
                pass,
            });
        }
    }
    out
}

pub fn render(board: &str, epoch: u64, entries: &[FstabEntry]) -> String {
    let mut s = format!(
        "# /etc/fstab: written by boardsmith for board `{board}` from its image plan\n# (SOURCE_DATE_EPOCH={epoch}); an image built with another epoch has other PARTUUIDs.\n# <file system>\t<mount point>\t<type>\t<options>\t<dump>\t<pass>\n"
    );
    for e in entries {
        s.push_str(&format!(
            "{}\t{}\t{}\t{}\t0\t{}\n",
            e.spec, e.mount, e.fstype, e.options, e.pass
        ));
    }
    s
}

/// Parses fstab lines (spec, mount point) for checking a tree against a plan.
pub fn parse(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            Some((f.next()?.to_string(), f.next()?.to_string()))
        })
        .collect()
}

/// Does the root entry of `fstab_text` name the root partition of `layout` (by PARTUUID or label)?
pub fn root_matches(fstab_text: &str, layout: &Layout) -> Option<bool> {
    let root = layout.partition(Role::Root)?;
    let (spec, _) = parse(fstab_text).into_iter().find(|(_, m)| m == "/")?;
    // Only names that come from a plan can be judged; UUID= or /dev/... are the tree's own business.
    if !(spec.starts_with("PARTUUID=") || spec.starts_with("LABEL=")) {
        return None;
    }
    let by_uuid = !root.partuuid.is_empty()
        && spec.eq_ignore_ascii_case(&format!("PARTUUID={}", root.partuuid));
    let by_label = root
        .label
        .as_ref()
        .is_some_and(|l| spec == format!("LABEL={}", escape(l)));
    Some(by_uuid || by_label)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{PlanInput, plan};
    use crate::profile::{Catalog, Profile};

    fn at_epoch(p: &Profile, epoch: u64) -> Layout {
        plan(
            p,
            &PlanInput {
                epoch,
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn cubieboard_fstab_uses_the_plan() {
        let p = Catalog::default().load("cubieboard").unwrap();
        let layout = at_epoch(&p, 42);
        let e = entries(&layout, FstabNaming::Partuuid);
        let root = layout.partition(Role::Root).unwrap();
        assert_eq!(e[1].spec, format!("PARTUUID={}", root.partuuid));
        assert_eq!(e[1].mount, "/");
        assert_eq!(e[0].mount, BOOT_MOUNT);
        let text = render("cubieboard", 42, &e);
        assert_eq!(root_matches(&text, &layout), Some(true));
        let other = at_epoch(&p, 43);
        assert_eq!(root_matches(&text, &other), Some(false));
        let l = entries(&layout, FstabNaming::Label);
        assert_eq!(l[1].spec, "LABEL=rootfs");
        assert_eq!(
            root_matches("/dev/mmcblk0p2 / ext4 defaults 0 1\n", &layout),
            None
        );
        assert_eq!(root_matches("# empty\n", &layout), None);
    }

    #[test]
    fn labels_are_escaped_for_fstab() {
        assert_eq!(escape("my root\\x"), "my\\040root\\134x");
        let text = format!("LABEL={}\t/\text4\tdefaults\t0\t1\n", escape("a b"));
        assert_eq!(
            parse(&text),
            [("LABEL=a\\040b".to_string(), "/".to_string())]
        );
    }

    #[test]
    fn gpt_boards_use_entry_guids() {
        let p = Catalog::default().load("armv8-foundation").unwrap();
        let layout = at_epoch(&p, 1);
        let e = entries(&layout, FstabNaming::Partuuid);
        assert_eq!(e.len(), 2);
        assert!(e[1].spec.starts_with("PARTUUID=") && e[1].spec.len() == "PARTUUID=".len() + 36);
    }
}
