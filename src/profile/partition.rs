//! `[[partition]]`: each partition (role, filesystem, size, table fields), then the rules between them.

use super::raw::{RawAttributes, RawPartition, SizeValue};
use super::validate::{loc_size, one_of, refuse_set, required, size_of};
use super::*;

/// The `[[partition]]` list: each partition, then the rules between them (names, fill, roles).
pub(super) fn validate_partitions(
    raw: Option<Loc<Vec<RawPartition>>>,
    file: &SourceFile,
    table: &Table,
) -> Result<Vec<Partition>, ProfileError> {
    let raw_parts = required(raw, file, "partition")?;
    if raw_parts.value.is_empty() {
        return Err(ProfileError::invalid(
            &raw_parts,
            "partition",
            "at least one partition is needed",
        ));
    }
    let mut partitions = Vec::new();
    for (i, p) in raw_parts.value.into_iter().enumerate() {
        partitions.push(validate_partition(p, i, table)?);
    }
    for (i, p) in partitions.iter().enumerate() {
        if let Some(q) = partitions[..i]
            .iter()
            .find(|q| q.name.value == p.name.value)
        {
            return Err(ProfileError::invalid(
                &p.name,
                format!("partition[{i}].name"),
                format!("duplicate partition name; already used at {}", q.name.at()),
            ));
        }
    }
    let fills = partitions
        .iter()
        .filter(|p| p.size.value == PartSize::Fill)
        .count();
    if fills > 1 {
        let second = partitions
            .iter()
            .filter(|p| p.size.value == PartSize::Fill)
            .nth(1);
        if let Some(p) = second {
            return Err(ProfileError::invalid(
                &p.size,
                "size",
                "only one partition can use size = \"fill\"",
            ));
        }
    }
    for role in [Role::Boot, Role::Root] {
        let mut same = partitions.iter().filter(|p| p.role == role);
        if let (Some(_), Some(second)) = (same.next(), same.next()) {
            return Err(ProfileError::invalid(
                &second.name,
                "role",
                format!("only one partition can have role = \"{}\"", role_name(role)),
            ));
        }
    }
    Ok(partitions)
}

fn validate_partition(p: RawPartition, i: usize, table: &Table) -> Result<Partition, ProfileError> {
    let field = |f: &str| format!("partition[{i}].{f}");
    let (role, fs) = partition_role_fs(&p, &field)?;
    let size = partition_size(&p, &field)?;
    let offset = p
        .offset
        .as_ref()
        .map(|o| loc_size(o, &field("offset")))
        .transpose()?;
    let align = match &p.align {
        Some(a) => loc_size(a, &field("align"))?,
        None => table.alignment.clone(),
    };
    if align.value == 0 || align.value % 512 != 0 {
        return Err(ProfileError::invalid(
            &align,
            field("align"),
            "must be a non-zero multiple of 512 bytes",
        ));
    }

    let kind = match table.kind {
        TableKind::Mbr => mbr_partition_type(&p, &field, fs)?,
        TableKind::Gpt => gpt_partition_type(&p, &field, fs)?,
    };
    if let Some(l) = &p.label {
        check_label(l, fs, &field("label"))?;
    }
    Ok(Partition {
        name: p.name,
        role,
        fs,
        size,
        offset,
        align,
        label: p.label.map(|l| l.value),
        kind,
        source: p.source,
    })
}

/// A filesystem label must be stored as given: fstab (`rootfs.fstab = "label"`) and udev's
/// /dev/disk/by-label name it exactly, so a label the filesystem would cut or change (mke2fs cuts at
/// 16 bytes; FAT keeps 11 upper-case characters of a restricted set) is refused, not altered.
fn check_label(l: &Loc<String>, fs: Fs, field: &str) -> Result<(), ProfileError> {
    let label = l.value.as_str();
    let bad = |message: String| Err(ProfileError::invalid(l, field, message));
    if label.starts_with(' ') || label.ends_with(' ') {
        return bad(format!(
            "`{label}` begins or ends with a space, which blkid trims: LABEL= and /dev/disk/by-label would not match it"
        ));
    }
    match fs {
        Fs::Ext4 => {
            if label.is_empty() || label.len() > 16 {
                return bad(format!(
                    "an ext4 label has 1 to 16 bytes; `{}` has {}",
                    label.escape_default(),
                    label.len()
                ));
            }
            if let Some(c) = label.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
                return bad(format!(
                    "`{}` is not a printable ASCII character; use letters, digits and punctuation",
                    c.escape_default()
                ));
            }
        }
        Fs::Vfat | Fs::Fat16 | Fs::Fat32 => {
            if label.is_empty() || label.chars().count() > 11 {
                return bad(format!(
                    "a FAT label has 1 to 11 characters; `{}` has {}",
                    label.escape_default(),
                    label.chars().count()
                ));
            }
            if let Some(c) = label.chars().find(|c| {
                !(c.is_ascii_uppercase() || c.is_ascii_digit() || " !#$%&'()-@^_`{}~".contains(*c))
            }) {
                return bad(format!(
                    "FAT stores labels in upper case, of letters, digits, spaces and !#$%&'()-@^_`{{}}~; `{}` is not one (e.g. `{}`)",
                    c.escape_default(),
                    label.to_ascii_uppercase()
                ));
            }
        }
        Fs::Raw | Fs::None => {
            return bad(
                "has no effect on a partition without a filesystem (fs = \"raw\" or \"none\"); remove it"
                    .into(),
            );
        }
    }
    Ok(())
}

/// A partition's role and filesystem (each defaulting from the other), and whether they go together.
fn partition_role_fs(
    p: &RawPartition,
    field: &dyn Fn(&str) -> String,
) -> Result<(Role, Fs), ProfileError> {
    let role = match &p.role {
        Some(r) => one_of(
            r,
            &field("role"),
            &[
                ("boot", Role::Boot),
                ("root", Role::Root),
                ("kernel", Role::Kernel),
                ("data", Role::Data),
            ],
        )?,
        None => Role::Data,
    };
    let fs = match &p.fs {
        Some(f) => one_of(
            f,
            &field("fs"),
            &[
                ("vfat", Fs::Vfat),
                ("fat16", Fs::Fat16),
                ("fat32", Fs::Fat32),
                ("ext4", Fs::Ext4),
                ("raw", Fs::Raw),
                ("none", Fs::None),
            ],
        )?,
        None => match role {
            Role::Boot => Fs::Vfat,
            Role::Root => Fs::Ext4,
            Role::Kernel => Fs::Raw,
            Role::Data => Fs::None,
        },
    };
    let role_fs_ok = match role {
        Role::Boot => matches!(fs, Fs::Vfat | Fs::Fat16 | Fs::Fat32),
        Role::Root => fs == Fs::Ext4,
        Role::Kernel => fs == Fs::Raw,
        Role::Data => fs != Fs::Raw || p.source.is_some(),
    };
    if !role_fs_ok {
        let at = p.fs.as_ref().map(|l| l.at()).unwrap_or_else(|| p.name.at());
        return Err(ProfileError::At(LocError::Invalid {
            at,
            field: field("fs"),
            message: format!(
                "a partition with role \"{}\" cannot use this filesystem (boot: vfat/fat16/fat32, root: ext4, kernel: raw with `source`)",
                role_name(role)
            ),
        }));
    }
    if fs == Fs::Raw && p.source.is_none() && role != Role::Kernel {
        return Err(ProfileError::invalid(
            &p.name,
            field("source"),
            "a raw partition needs `source`, the file (inside the root filesystem tree) that fills it",
        ));
    }
    Ok((role, fs))
}

/// `size`: "fill", or a positive number of whole sectors.
fn partition_size(
    p: &RawPartition,
    field: &dyn Fn(&str) -> String,
) -> Result<Loc<PartSize>, ProfileError> {
    Ok(match &p.size.value {
        SizeValue::Text(s) if s == "fill" => Loc {
            value: PartSize::Fill,
            origin: p.size.origin.clone(),
        },
        _ => {
            let n = size_of(&p.size, &field("size"))?;
            if n == 0 || n % 512 != 0 {
                return Err(ProfileError::invalid(
                    &p.size,
                    field("size"),
                    format!("{n} bytes is not a positive multiple of the 512-byte sector"),
                ));
            }
            Loc {
                value: PartSize::Bytes(n),
                origin: p.size.origin.clone(),
            }
        }
    })
}

/// An MBR partition's type byte and boot flag; GPT fields are refused.
fn mbr_partition_type(
    p: &RawPartition,
    field: &dyn Fn(&str) -> String,
    fs: Fs,
) -> Result<PartitionType, ProfileError> {
    refuse_set(
        [
            p.gpt_type.as_ref().map(|l| (l.at(), field("gpt_type"))),
            p.gpt_name.as_ref().map(|l| (l.at(), field("gpt_name"))),
            p.attributes.as_ref().map(|l| (l.at(), field("attributes"))),
        ],
        "is a GPT field but table.type is \"mbr\"; use mbr_type/bootable, or switch the table to gpt",
    )?;
    let type_byte = match &p.mbr_type {
        Some(t) => u8::try_from(t.value).ok().filter(|b| *b != 0).ok_or_else(|| {
            ProfileError::invalid(t, field("mbr_type"), "must be a partition type byte between 0x01 and 0xff, e.g. 0x0c (FAT32 LBA) or 0x83 (Linux)")
        })?,
        None => match fs {
            Fs::Vfat | Fs::Fat32 => 0x0c,
            Fs::Fat16 => 0x0e,
            _ => 0x83,
        },
    };
    Ok(PartitionType::Mbr {
        type_byte,
        bootable: p.bootable.as_ref().map(|b| b.value).unwrap_or(false),
    })
}

/// A GPT partition's type GUID, name and attribute bits; MBR fields are refused.
fn gpt_partition_type(
    p: &RawPartition,
    field: &dyn Fn(&str) -> String,
    fs: Fs,
) -> Result<PartitionType, ProfileError> {
    refuse_set(
        [
            p.mbr_type.as_ref().map(|l| (l.at(), field("mbr_type"))),
            p.bootable.as_ref().map(|l| (l.at(), field("bootable"))),
        ],
        "is an MBR field but table.type is \"gpt\"; use gpt_type and attributes (legacy_boot = true marks a GPT partition bootable)",
    )?;
    let type_guid = match &p.gpt_type {
        Some(t) => crate::disk::gpt::type_guid_by_name(&t.value).ok_or_else(|| {
            ProfileError::invalid(t, field("gpt_type"), "is neither a known type name (linux, esp, basic-data, chromeos-kernel, chromeos-root, chromeos-reserved) nor a GUID like 0FC63DAF-8483-4772-8E79-3D69D8477DE4")
        })?,
        None => match fs {
            Fs::Vfat | Fs::Fat16 | Fs::Fat32 => crate::disk::gpt::BASIC_DATA,
            _ => crate::disk::gpt::LINUX_FS,
        },
    };
    let attributes = match &p.attributes {
        Some(a) => attribute_bits(&a.value)
            .map_err(|m| ProfileError::invalid(a, field("attributes"), m))?,
        None => 0,
    };
    let name = p
        .gpt_name
        .as_ref()
        .map(|n| n.value.clone())
        .unwrap_or_else(|| p.name.value.clone());
    if name.encode_utf16().count() > 36 {
        let at = p
            .gpt_name
            .as_ref()
            .map(|l| l.at())
            .unwrap_or_else(|| p.name.at());
        return Err(ProfileError::At(LocError::Invalid {
            at,
            field: field("gpt_name"),
            message: "GPT partition names hold at most 36 UTF-16 code units".into(),
        }));
    }
    Ok(PartitionType::Gpt {
        type_guid,
        name,
        attributes,
    })
}

/// GPT attribute bits: 0 required, 2 legacy BIOS bootable, ChromeOS 48–51 priority, 52–55 tries, 56 successful.
pub fn attribute_bits(a: &RawAttributes) -> Result<u64, String> {
    let mut bits = 0u64;
    if a.required == Some(true) {
        bits |= 1;
    }
    if a.legacy_boot == Some(true) {
        bits |= 1 << 2;
    }
    if let Some(p) = a.priority {
        if !(0..=15).contains(&p) {
            return Err(format!(
                "priority {p} does not fit its 4 bits (48–51): use 0–15"
            ));
        }
        bits |= (p as u64) << 48;
    }
    if let Some(t) = a.tries {
        if !(0..=15).contains(&t) {
            return Err(format!(
                "tries {t} does not fit its 4 bits (52–55): use 0–15"
            ));
        }
        bits |= (t as u64) << 52;
    }
    if a.successful == Some(true) {
        bits |= 1 << 56;
    }
    for &b in a.bits.iter().flatten() {
        if !(0..=63).contains(&b) {
            return Err(format!("attribute bit {b} is outside 0–63"));
        }
        bits |= 1 << b;
    }
    Ok(bits)
}

#[cfg(test)]
mod tests {
    use super::super::test_profiles::{MINIMAL, load_text};
    use super::*;

    #[test]
    fn chromebook_attributes() {
        let p = Catalog::default().load("chromebook-snow").unwrap();
        let PartitionType::Gpt { attributes, .. } = p.partitions[0].kind else {
            panic!()
        };
        assert_eq!((attributes >> 48) & 0xf, 10);
        assert_eq!((attributes >> 52) & 0xf, 5);
        assert_eq!((attributes >> 56) & 1, 1);
    }

    /// One must-fail label per rule, and labels each filesystem keeps as given.
    #[test]
    fn labels_are_kept_as_given_or_refused() {
        let part = |fs: &str, label: &str| {
            format!(
                "{MINIMAL}[[partition]]\nname = \"p\"\nsize = \"fill\"\nfs = \"{fs}\"\nlabel = \"{label}\"\n"
            )
        };
        for (fs, label) in [
            ("ext4", "rootfs"),
            ("ext4", "sixteen-bytes-ok"),
            ("vfat", "BOOT"),
            ("fat32", "MY DISK_1"),
        ] {
            load_text(&part(fs, label)).unwrap_or_else(|e| panic!("{fs} {label}: {e}"));
        }
        for (fs, label, wanted) in [
            ("ext4", "a very long root fs label", "1 to 16 bytes"),
            ("ext4", "", "1 to 16 bytes"),
            ("ext4", "root ", "blkid trims"),
            ("vfat", " BOOT", "blkid trims"),
            ("ext4", "r\\u00e9seau", "printable ASCII"),
            ("vfat", "boot", "upper case"),
            ("fat16", "BOOT.FS", "upper case"),
            ("fat32", "TWELVE CHARS", "1 to 11 characters"),
            ("raw\"\nrole = \"kernel\"\nsource = \"k", "X", "no effect"),
            ("none", "X", "no effect"),
        ] {
            let e = load_text(&part(fs, label)).unwrap_err().to_string();
            assert!(
                e.contains("partition[0].label") && e.contains(wanted),
                "{fs} {label:?}: {e}"
            );
        }
    }

    #[test]
    fn gpt_field_on_mbr_is_rejected() {
        let text = format!(
            "{MINIMAL}[[partition]]\nname = \"root\"\nsize = \"fill\"\ngpt_type = \"linux\"\n"
        );
        let e = load_text(&text).unwrap_err().to_string();
        assert!(
            e.contains("partition[0].gpt_type") && e.contains("GPT field"),
            "{e}"
        );
    }

    #[test]
    fn attribute_out_of_range_is_rejected() {
        let text = "arch = \"armhf\"\nconsole = \"ttyS0\"\n[kernel]\nimage = \"zImage\"\npath = \"k\"\n[table]\ntype = \"gpt\"\n[[partition]]\nname = \"K\"\nsize = \"16MiB\"\nrole = \"kernel\"\nsource = \"x\"\nattributes = { priority = 16 }\n";
        let e = load_text(text).unwrap_err().to_string();
        assert!(e.contains("priority 16") && e.contains("48–51"), "{e}");
    }
}
