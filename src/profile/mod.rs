//! Board profiles: `boards/*.toml` (embedded in the binary, or given by path), resolved through their
//! `extends` chain into one validated [`Profile`]. Every error names file, line, column and field.

mod raw;
pub mod source;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

pub use crate::rootmods::Medium;
use crate::size::parse_size;
pub use raw::RawRootfs;
use raw::{
    RawAttributes, RawBoot, RawBootloader, RawEmulator, RawKernel, RawPartition, RawProfile,
    RawTable, RawVboot, SizeValue,
};
pub use source::{Loc, Origin, SourceFile};

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "no board profile named `{name}`; known boards: {known}. Pass a path to a .toml file for your own profile"
    )]
    UnknownBoard { name: String, known: String },
    #[error("cannot read profile {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{at}: {message}")]
    Syntax { at: String, message: String },
    #[error("{at}: `{field}`: {message}")]
    Invalid {
        at: String,
        field: String,
        message: String,
    },
    #[error(
        "{file}: `{field}` is required but neither this profile nor the profiles it extends set it"
    )]
    Missing { file: String, field: String },
    #[error("{at}: `extends` forms a cycle: {chain}")]
    Cycle { at: String, chain: String },
}

impl ProfileError {
    fn invalid<T>(loc: &Loc<T>, field: impl Into<String>, message: impl Into<String>) -> Self {
        ProfileError::Invalid {
            at: loc.at(),
            field: field.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    Armhf,
    Arm64,
}

impl Arch {
    /// Debian architecture name.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::Armhf => "armhf",
            Arch::Arm64 => "arm64",
        }
    }
    /// The kernel's ARCH= value.
    pub fn kernel_arch(self) -> &'static str {
        match self {
            Arch::Armhf => "arm",
            Arch::Arm64 => "arm64",
        }
    }
    /// Debian's cross-compiler prefix for this architecture.
    pub fn cross_compile(self) -> &'static str {
        match self {
            Arch::Armhf => "arm-linux-gnueabihf-",
            Arch::Arm64 => "aarch64-linux-gnu-",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KernelImage {
    #[serde(rename = "zImage")]
    ZImage,
    Image,
}

impl KernelImage {
    pub fn file_name(self) -> &'static str {
        match self {
            KernelImage::ZImage => "zImage",
            KernelImage::Image => "Image",
        }
    }
    /// U-Boot command that boots this image type.
    pub fn boot_command(self) -> &'static str {
        match self {
            KernelImage::ZImage => "bootz",
            KernelImage::Image => "booti",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Kernel {
    pub package: String,
    pub image: KernelImage,
    /// Glob (`*` only) of the kernel inside the root filesystem, e.g. `boot/vmlinuz-*`.
    pub path: String,
    pub initrd: Option<String>,
    pub dtb_dir: String,
    pub dtb: Option<String>,
    /// Template; `{console}` and `{root}` are substituted.
    #[serde(serialize_with = "ser_loc")]
    pub cmdline: Loc<String>,
    pub defconfig: String,
    pub fragments: Vec<String>,
    /// Where `kernel.fragments` was written (relative fragment paths resolve against that file).
    #[serde(skip)]
    pub fragments_origin: Option<Origin>,
    /// Modules the initramfs carries besides those derived from the device tree for `medium`.
    pub initramfs_modules: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Magic {
    pub offset: u64,
    pub text: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bootloader {
    pub package: Option<String>,
    #[serde(serialize_with = "ser_loc")]
    pub path: Loc<String>,
    #[serde(serialize_with = "ser_loc")]
    pub offset: Loc<u64>,
    pub max_size: Option<u64>,
    pub magic: Option<Magic>,
    /// A U-Boot environment file written to the boot partition.
    pub env: Option<UbootEnvSpec>,
}

/// `[bootloader.env]`: U-Boot's environment as a file on the boot partition (CONFIG_ENV_IS_IN_FAT). U-Boot
/// loads only that file when its CRC is valid, so it holds the whole default environment (extracted from
/// the bootloader blob) with `set` applied; an empty value removes a variable.
#[derive(Debug, Clone, Serialize)]
pub struct UbootEnvSpec {
    /// Path on the boot partition (U-Boot's CONFIG_ENV_FAT_FILE).
    pub file: String,
    /// U-Boot's CONFIG_ENV_SIZE: the file's exact size, CRC32 included.
    pub size: u64,
    pub set: Vec<(String, String)>,
}

/// `[fvp]`: Arm's Fixed Virtual Platform model for this board; `build` writes a launch script for it.
#[derive(Debug, Clone, Serialize)]
pub struct Fvp {
    /// The model's executable, e.g. `Foundation_Platform`.
    pub model: String,
    /// Arguments before `--image` and `--block-device`.
    pub args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Mbr,
    Gpt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageSize {
    Auto,
    Bytes(u64),
}

#[derive(Debug, Clone, Serialize)]
pub struct Table {
    pub kind: TableKind,
    #[serde(serialize_with = "ser_loc")]
    pub alignment: Loc<u64>,
    #[serde(serialize_with = "ser_loc")]
    pub size: Loc<ImageSize>,
    pub disk_signature: Option<u32>,
    #[serde(serialize_with = "ser_loc")]
    pub gpt_entries: Loc<u32>,
    #[serde(serialize_with = "ser_loc")]
    pub gpt_entries_offset: Loc<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// FAT partition holding kernel, device trees, initrd and boot configuration.
    Boot,
    /// The root filesystem.
    Root,
    /// Raw partition filled from a file (`source`), e.g. a ChromeOS kernel blob.
    Kernel,
    /// Formatted but empty (or untouched when `fs = "none"`).
    Data,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fs {
    /// FAT16 or FAT32, whichever the partition size gives a valid cluster count for.
    Vfat,
    Fat16,
    Fat32,
    Ext4,
    /// Raw bytes from `source`.
    Raw,
    /// Left untouched.
    None,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartSize {
    Fill,
    Bytes(u64),
}

/// Partition table entry fields for the profile's table type.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "table", rename_all = "lowercase")]
pub enum PartitionType {
    Mbr {
        type_byte: u8,
        bootable: bool,
    },
    Gpt {
        type_guid: crate::disk::gpt::Guid,
        name: String,
        attributes: u64,
    },
}

#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    #[serde(serialize_with = "ser_loc")]
    pub name: Loc<String>,
    pub role: Role,
    pub fs: Fs,
    #[serde(serialize_with = "ser_loc")]
    pub size: Loc<PartSize>,
    #[serde(serialize_with = "ser_opt_loc")]
    pub offset: Option<Loc<u64>>,
    #[serde(serialize_with = "ser_loc")]
    pub align: Loc<u64>,
    pub label: Option<String>,
    pub kind: PartitionType,
    #[serde(serialize_with = "ser_opt_loc")]
    pub source: Option<Loc<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum BootMethod {
    #[serde(rename = "extlinux")]
    Extlinux,
    #[serde(rename = "boot.scr")]
    BootScr,
}

#[derive(Debug, Clone, Serialize)]
pub struct BootConfig {
    pub methods: Vec<BootMethod>,
    pub extlinux_fdt: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Display {
    pub video: Option<String>,
}

/// How QEMU runs the image: `[emulator]`, or a named `[emulators.NAME]` setup.
#[derive(Debug, Clone, Serialize)]
pub struct Emulator {
    /// None for `[emulator]`, the board's default; the name of an `[emulators.NAME]` setup.
    pub name: Option<String>,
    pub description: Option<String>,
    pub system: String,
    pub machine: String,
    pub cpu: Option<String>,
    pub memory: String,
    /// `sd` or `virtio`.
    pub drive: String,
    pub firmware: Option<String>,
    pub size_power_of_two: bool,
    pub extra_args: Vec<String>,
    /// The QEMU device that gives the guest a screen; None: the machine has no display (QEMU's
    /// cubieboard emulates no A10 display engine), so nothing can be shown or captured.
    pub display: Option<String>,
    /// QEMU input devices (keyboard, tablet), only with a display.
    pub input: Vec<String>,
    /// NIC model on QEMU's user-mode network; None: the guest gets no network device.
    pub network: Option<String>,
    /// Set when boardsmith starts the image's kernel itself instead of a bootloader.
    pub direct_boot: Option<DirectBoot>,
    /// Modules the initramfs needs for this emulator's disk (also in `kernel.initramfs_modules`).
    pub initramfs_modules: Vec<String>,
}

impl Emulator {
    /// How `boot --emulator` names it.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or("default")
    }
}

/// `direct_boot = "extlinux"`: the kernel, initrd and command line come from the image's
/// `extlinux/extlinux.conf` on its boot partition and QEMU supplies the device tree, so an image made
/// for a board QEMU does not emulate (its extlinux.conf names that board's device tree) runs on a
/// generic machine.
#[derive(Debug, Clone, Serialize)]
pub struct DirectBoot {
    /// Replaces the serial `console=` entries of the image's command line (e.g. `ttyAMA0` on `virt`).
    pub console: Option<String>,
}

/// ChromeOS verified-boot signing of kernel partitions (role "kernel" without `source`).
#[derive(Debug, Clone, Serialize)]
pub struct Vboot {
    pub keyblock: PathBuf,
    pub signprivate: PathBuf,
    pub subkey: Option<PathBuf>,
    pub version: u32,
    pub load_address: u32,
}

/// Changelog, known issues and console notes for release notes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReleaseText {
    pub changelog: Vec<String>,
    pub known_issues: Vec<String>,
    pub console_notes: Option<String>,
}

/// A resolved, validated board profile.
#[derive(Debug, Clone, Serialize)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub arch: Arch,
    pub console: String,
    /// Where the root filesystem lives; the initramfs gets the modules its controller needs.
    pub medium: Option<Medium>,
    pub kernel: Kernel,
    pub bootloader: Option<Bootloader>,
    pub table: Table,
    pub partitions: Vec<Partition>,
    pub boot: BootConfig,
    pub display: Display,
    pub emulator: Option<Emulator>,
    /// Named emulator setups (`[emulators.NAME]`), e.g. `desktop` with a screen.
    pub emulators: Vec<Emulator>,
    pub vboot: Option<Vboot>,
    pub release: ReleaseText,
    pub fvp: Option<Fvp>,
    /// `[rootfs]` as written (merged along `extends`); validated by the rootfs module against its recipes.
    #[serde(skip)]
    pub rootfs: RawRootfs,
    /// Files this profile was resolved from, the board's own file first.
    #[serde(serialize_with = "ser_sources")]
    pub sources: Vec<Arc<SourceFile>>,
}

fn ser_loc<T: Serialize, S: serde::Serializer>(v: &Loc<T>, s: S) -> Result<S::Ok, S::Error> {
    v.value.serialize(s)
}
fn ser_opt_loc<T: Serialize, S: serde::Serializer>(
    v: &Option<Loc<T>>,
    s: S,
) -> Result<S::Ok, S::Error> {
    v.as_ref().map(|l| &l.value).serialize(s)
}
fn ser_sources<S: serde::Serializer>(v: &[Arc<SourceFile>], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(|f| f.name.as_str()))
}

impl Profile {
    /// The partition with the given role, if any (the first one).
    pub fn partition(&self, role: Role) -> Option<(usize, &Partition)> {
        self.partitions
            .iter()
            .enumerate()
            .find(|(_, p)| p.role == role)
    }

    /// A stable digest of the files this profile came from (part of the reproducible-id seed).
    pub fn source_digest(&self) -> [u8; 32] {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        for f in &self.sources {
            h.update(f.text.as_bytes());
            h.update([0]);
        }
        h.finalize().into()
    }
}

/// Where profiles come from: the embedded set, optionally preceded by a directory of the user's.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub boards_dir: Option<PathBuf>,
}

/// One entry of `boardsmith boards`.
#[derive(Debug, Clone, Serialize)]
pub struct BoardEntry {
    pub name: String,
    pub description: String,
    pub arch: String,
    pub source: String,
    /// The QEMU system emulator `boot` runs the board's images in, if it has one (a CI matrix boots
    /// those boards).
    pub emulator: Option<String>,
}

impl Catalog {
    pub fn new(boards_dir: Option<PathBuf>) -> Self {
        Catalog { boards_dir }
    }

    /// Loads a board by name or by path to a `.toml` file.
    pub fn load(&self, board: &str) -> Result<Profile, ProfileError> {
        let file = self.find_board(board)?;
        resolve(file, self)
    }

    /// Loads a profile from text that did not come from a file (errors name it `name`); its `extends`
    /// bases come from the user's directory or the embedded ones. Used by fuzzing and by tools that
    /// generate profiles.
    pub fn load_text(&self, name: &str, text: &str) -> Result<Profile, ProfileError> {
        let file = Arc::new(SourceFile {
            name: name.to_string(),
            path: None,
            text: text.to_string(),
        });
        resolve(file, self)
    }

    fn find_board(&self, board: &str) -> Result<Arc<SourceFile>, ProfileError> {
        if board.contains('/') || board.ends_with(".toml") {
            return read_disk(Path::new(board));
        }
        if let Some(dir) = &self.boards_dir {
            let p = dir.join(format!("{board}.toml"));
            if p.is_file() {
                return read_disk(&p);
            }
        }
        let embedded = format!("boards/{board}.toml");
        if let Some(data) = crate::embedded::get(&embedded) {
            return Ok(embedded_file(&embedded, data));
        }
        let known = self
            .list()
            .map(|l| l.into_iter().map(|b| b.name).collect::<Vec<_>>().join(", "))
            .unwrap_or_default();
        Err(ProfileError::UnknownBoard {
            name: board.to_string(),
            known,
        })
    }

    fn find_base(&self, name: &str, from: &SourceFile) -> Result<Arc<SourceFile>, ProfileError> {
        if name.contains('/') || name.ends_with(".toml") {
            let base_dir = from
                .path
                .as_deref()
                .and_then(Path::parent)
                .unwrap_or(Path::new("."));
            return read_disk(&base_dir.join(name));
        }
        let mut dirs: Vec<PathBuf> = Vec::new();
        if let Some(dir) = from.path.as_deref().and_then(Path::parent) {
            dirs.push(dir.join("base"));
            dirs.push(dir.to_path_buf());
        }
        if let Some(dir) = &self.boards_dir {
            dirs.push(dir.join("base"));
        }
        for dir in dirs {
            let p = dir.join(format!("{name}.toml"));
            if p.is_file() {
                return read_disk(&p);
            }
        }
        let embedded = format!("boards/base/{name}.toml");
        match crate::embedded::get(&embedded) {
            Some(data) => Ok(embedded_file(&embedded, data)),
            None => Err(ProfileError::UnknownBoard {
                name: format!("base/{name}"),
                known: crate::embedded::list("boards/base")
                    .map(|(p, _)| stem(p))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
        }
    }

    /// Every board's name and file, unresolved: the user's directory first, then embedded ones it does not
    /// shadow. Loading each may still fail (see [`Catalog::load`]).
    pub fn names(&self) -> Result<Vec<(String, String)>, ProfileError> {
        let mut names: Vec<(String, String)> = Vec::new();
        if let Some(dir) = &self.boards_dir {
            let entries = std::fs::read_dir(dir).map_err(|source| ProfileError::Read {
                path: dir.clone(),
                source,
            })?;
            let mut paths: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml") && p.is_file())
                .collect();
            paths.sort();
            for p in paths {
                names.push((stem(&p.to_string_lossy()), p.display().to_string()));
            }
        }
        for (path, _) in crate::embedded::list("boards") {
            let name = stem(path);
            if !names.iter().any(|(n, _)| *n == name) {
                names.push((name, format!("embedded:{path}")));
            }
        }
        names.sort();
        Ok(names)
    }

    /// Every board, resolved. The first profile that fails to resolve is the error.
    pub fn list(&self) -> Result<Vec<BoardEntry>, ProfileError> {
        self.names()?
            .into_iter()
            .map(|(name, source)| {
                let p = self.load(&name)?;
                Ok(BoardEntry {
                    name,
                    description: p.description,
                    arch: p.arch.debian().to_string(),
                    source,
                    emulator: p.emulator.as_ref().map(|e| e.system.clone()),
                })
            })
            .collect()
    }
}

fn stem(path: &str) -> String {
    Path::new(path)
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn read_disk(path: &Path) -> Result<Arc<SourceFile>, ProfileError> {
    let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Arc::new(SourceFile {
        name: path.display().to_string(),
        path: Some(path.to_path_buf()),
        text,
    }))
}

fn embedded_file(path: &str, data: &[u8]) -> Arc<SourceFile> {
    Arc::new(SourceFile {
        name: format!("embedded:{path}"),
        path: None,
        text: String::from_utf8_lossy(data).into_owned(),
    })
}

fn parse_file(file: &Arc<SourceFile>) -> Result<RawProfile, ProfileError> {
    let raw = source::parse_with_origin::<RawProfile>(file).map_err(|e| {
        let (at, message) = source::syntax_error(file, &e);
        ProfileError::Syntax { at, message }
    })?;
    one_line_strings(file)?;
    Ok(raw)
}

/// The first control character in `s` (C0, DEL, C1, and the Unicode line and paragraph
/// separators): its 1-based character position and the character.
pub fn control_char(s: &str) -> Option<(usize, char)> {
    s.chars()
        .enumerate()
        .find(|(_, c)| c.is_control() || matches!(c, '\u{2028}' | '\u{2029}'))
        .map(|(i, c)| (i + 1, c))
}

/// What a control character is, for messages: `U+000A (line feed)`.
pub fn describe_control(c: char) -> String {
    let name = match c {
        '\n' => " (line feed)",
        '\r' => " (carriage return)",
        '\t' => " (tab)",
        '\0' => " (NUL)",
        '\u{1b}' => " (escape)",
        _ => "",
    };
    format!("U+{:04X}{name}", c as u32)
}

/// Every string of a profile file, and every key, is one line of printable text: profile values end
/// up in generated files (extlinux.conf, boot.scr, uboot.env, fstab, the FVP launch script, release
/// notes) and a line break there starts a new directive or, in a script, a new command. Checked on
/// the file's syntax tree, so no field can be forgotten; the error names file:line:col and field.
fn one_line_strings(file: &SourceFile) -> Result<(), ProfileError> {
    use toml::de::{DeTable, DeValue};
    fn check(file: &SourceFile, span: usize, field: &str, s: &str) -> Result<(), ProfileError> {
        match control_char(s) {
            None => Ok(()),
            Some((i, c)) => {
                let (line, col) = file.line_col(span);
                Err(ProfileError::Invalid {
                    at: format!("{}:{line}:{col}", file.name),
                    field: field.to_string(),
                    message: format!(
                        "contains a control character, {}, at character {i}; profile values go into generated files (extlinux.conf, boot.scr, uboot.env, fstab, the FVP launch script, release notes) and must be one line of printable text",
                        describe_control(c)
                    ),
                })
            }
        }
    }
    fn value(
        file: &SourceFile,
        v: &toml::Spanned<DeValue<'_>>,
        field: &str,
    ) -> Result<(), ProfileError> {
        match v.get_ref() {
            DeValue::String(s) => check(file, v.span().start, field, s),
            DeValue::Array(a) => a
                .into_iter()
                .enumerate()
                .try_for_each(|(i, e)| value(file, e, &format!("{field}[{i}]"))),
            DeValue::Table(t) => table(file, t, field),
            _ => Ok(()),
        }
    }
    fn table(file: &SourceFile, t: &DeTable<'_>, prefix: &str) -> Result<(), ProfileError> {
        for (k, v) in t {
            let key: &str = k.get_ref();
            let field = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            };
            if control_char(key).is_some() {
                check(file, k.span().start, &format!("{field:?} (a key)"), key)?;
            }
            value(file, v, &field)?;
        }
        Ok(())
    }
    match DeTable::parse(&file.text) {
        Ok(t) => table(file, t.get_ref(), ""),
        // Syntax errors are reported by the parse that precedes this check.
        Err(_) => Ok(()),
    }
}

/// Later layers (the board) override earlier ones (its bases) field by field.
macro_rules! overlay {
    ($dst:expr, $src:expr, [$($f:ident),* $(,)?]) => {
        $( if $src.$f.is_some() { $dst.$f = $src.$f; } )*
    };
}

fn merge(base: &mut RawProfile, top: RawProfile) {
    overlay!(
        base,
        top,
        [
            name,
            description,
            arch,
            console,
            medium,
            partitions,
            emulator,
            vboot,
            fvp
        ]
    );
    overlay!(
        base.kernel,
        top.kernel,
        [
            package,
            image,
            path,
            initrd,
            dtb_dir,
            dtb,
            cmdline,
            defconfig,
            fragments,
            initramfs_modules
        ]
    );
    match (&mut base.bootloader, top.bootloader) {
        (Some(b), Some(t)) => {
            overlay!(b, t, [package, path, offset, max_size, magic, env]);
        }
        (b @ None, t) => *b = t,
        (Some(_), None) => {}
    }
    overlay!(
        base.table,
        top.table,
        [
            kind,
            alignment,
            size,
            disk_signature,
            gpt_entries,
            gpt_entries_offset
        ]
    );
    // Named emulators merge by name: a board replaces its base's setup of the same name whole.
    match (&mut base.emulators, top.emulators) {
        (Some(b), Some(t)) => b.extend(t),
        (b @ None, t) => *b = t,
        (Some(_), None) => {}
    }
    overlay!(base.boot, top.boot, [methods, extlinux_fdt]);
    overlay!(base.display, top.display, [video]);
    overlay!(
        base.release,
        top.release,
        [changelog, known_issues, console_notes]
    );
    match (&mut base.rootfs, top.rootfs) {
        (Some(b), Some(t)) => {
            overlay!(
                b,
                t,
                [
                    suite,
                    mirror,
                    security_mirror,
                    components,
                    packages,
                    features,
                    hostname,
                    user,
                    password_hash,
                    expire_password,
                    locale,
                    timezone,
                    fstab,
                    autologin
                ]
            );
        }
        (b @ None, t) => *b = t,
        (Some(_), None) => {}
    }
}

fn resolve(board: Arc<SourceFile>, catalog: &Catalog) -> Result<Profile, ProfileError> {
    // Walk the extends chain: board, its base, the base's base…
    let mut chain: Vec<(Arc<SourceFile>, RawProfile)> = Vec::new();
    let mut current = board;
    loop {
        let raw = parse_file(&current)?;
        let next = raw.extends.clone();
        chain.push((current.clone(), raw));
        let Some(ext) = next else { break };
        let base = catalog.find_base(&ext.value, &current)?;
        if chain.iter().any(|(f, _)| f.name == base.name) || chain.len() > 16 {
            let names: Vec<&str> = chain.iter().map(|(f, _)| f.name.as_str()).collect();
            return Err(ProfileError::Cycle {
                at: ext.at(),
                chain: format!("{} -> {}", names.join(" -> "), base.name),
            });
        }
        current = base;
    }
    let sources: Vec<Arc<SourceFile>> = chain.iter().map(|(f, _)| f.clone()).collect();
    let board_file = sources[0].clone();
    let mut layers = chain.into_iter().rev().map(|(_, r)| r);
    let mut merged = layers.next().unwrap_or_default();
    for layer in layers {
        merge(&mut merged, layer);
    }
    validate(merged, &board_file, sources)
}

fn size_of(v: &Loc<SizeValue>, field: &str) -> Result<u64, ProfileError> {
    match &v.value {
        SizeValue::Bytes(n) => u64::try_from(*n)
            .map_err(|_| ProfileError::invalid(v, field, "a size cannot be negative")),
        SizeValue::Text(s) => {
            parse_size(s).map_err(|e| ProfileError::invalid(v, field, e.to_string()))
        }
    }
}

fn loc_size(v: &Loc<SizeValue>, field: &str) -> Result<Loc<u64>, ProfileError> {
    Ok(Loc {
        value: size_of(v, field)?,
        origin: v.origin.clone(),
    })
}

fn required<T>(v: Option<Loc<T>>, file: &SourceFile, field: &str) -> Result<Loc<T>, ProfileError> {
    v.ok_or_else(|| ProfileError::Missing {
        file: file.name.clone(),
        field: field.to_string(),
    })
}

fn one_of<'a, T: Copy>(
    v: &Loc<String>,
    field: &str,
    options: &'a [(&'a str, T)],
) -> Result<T, ProfileError> {
    options
        .iter()
        .find(|(n, _)| *n == v.value)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            let names: Vec<String> = options.iter().map(|(n, _)| format!("\"{n}\"")).collect();
            ProfileError::invalid(
                v,
                field,
                format!(
                    "unknown value \"{}\"; expected one of {}",
                    v.value,
                    names.join(", ")
                ),
            )
        })
}

fn validate(
    raw: RawProfile,
    file: &Arc<SourceFile>,
    sources: Vec<Arc<SourceFile>>,
) -> Result<Profile, ProfileError> {
    let name = board_name(raw.name, file)?;
    let arch_loc = required(raw.arch, file, "arch")?;
    let arch = one_of(
        &arch_loc,
        "arch",
        &[("armhf", Arch::Armhf), ("arm64", Arch::Arm64)],
    )?;
    let console = required(raw.console, file, "console")?.value;
    let medium_loc = raw.medium;
    let medium = medium_loc
        .as_ref()
        .map(|m| one_of(m, "medium", &Medium::ALL))
        .transpose()?;

    let kernel = validate_kernel(raw.kernel, file, medium_loc.is_some())?;
    let bootloader = validate_bootloader(raw.bootloader, file)?;
    let table = validate_table(raw.table, file)?;
    let partitions = validate_partitions(raw.partitions, file, &table)?;
    let boot = validate_boot(raw.boot, file, &partitions)?;
    let mut kernel = kernel;
    let emu_ctx = EmulatorContext {
        file,
        medium,
        medium_loc: medium_loc.as_ref(),
        has_initrd: kernel.initrd.is_some(),
    };
    let (emulator, emulators) =
        validate_emulators(raw.emulator, raw.emulators, &emu_ctx, &mut kernel)?;
    let vboot = raw.vboot.map(validate_vboot).transpose()?;
    if let Some(k) = partitions
        .iter()
        .find(|p| p.role == Role::Kernel && p.source.is_none())
        && vboot.is_none()
    {
        return Err(ProfileError::invalid(
            &k.name,
            "source",
            "a kernel partition needs `source` (a prebuilt blob in the root filesystem) or a [vboot] section to build and sign one",
        ));
    }
    let fvp = match raw.fvp {
        None => None,
        Some(f) => Some(Fvp {
            model: required(f.model, file, "fvp.model")?.value,
            args: f.args.map(|v| v.value).unwrap_or_default(),
        }),
    };

    Ok(Profile {
        name,
        description: raw.description.map(|v| v.value).unwrap_or_default(),
        arch,
        console,
        medium,
        kernel,
        bootloader,
        table,
        partitions,
        boot,
        display: Display {
            video: raw.display.video.map(|v| v.value),
        },
        emulator,
        emulators,
        vboot,
        release: ReleaseText {
            changelog: raw.release.changelog.map(|v| v.value).unwrap_or_default(),
            known_issues: raw
                .release
                .known_issues
                .map(|v| v.value)
                .unwrap_or_default(),
            console_notes: raw.release.console_notes.map(|v| v.value),
        },
        fvp,
        rootfs: raw.rootfs.unwrap_or_default(),
        sources,
    })
}

/// The board's name: `name`, else the file's stem; it names output files.
fn board_name(name: Option<Loc<String>>, file: &SourceFile) -> Result<String, ProfileError> {
    let name = match name {
        Some(n) => n.value,
        None => file
            .path
            .as_deref()
            .map(|p| stem(&p.to_string_lossy()))
            .unwrap_or_else(|| stem(file.name.trim_start_matches("embedded:"))),
    };
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        return Err(ProfileError::Invalid {
            at: file.name.clone(),
            field: "name".into(),
            message: format!(
                "board name {name:?} must be non-empty and use only letters, digits, '-', '_' and '.' (it names output files)"
            ),
        });
    }
    Ok(name)
}

/// `[kernel]`; `medium_given`: whether `medium` is set (an initrd needs it).
fn validate_kernel(
    k: RawKernel,
    file: &SourceFile,
    medium_given: bool,
) -> Result<Kernel, ProfileError> {
    if let Some(m) = &k.initramfs_modules {
        if let Some(bad) = m
            .value
            .iter()
            .find(|n| !crate::rootmods::kmod::valid_module_name(n))
        {
            return Err(ProfileError::invalid(
                m,
                "kernel.initramfs_modules",
                format!(
                    "{bad:?} is not a module name (letters, digits, '_' and '-', as in `sunxi-mmc`)"
                ),
            ));
        }
        if !m.value.is_empty() && k.initrd.is_none() {
            return Err(ProfileError::invalid(
                m,
                "kernel.initramfs_modules",
                "has no effect without kernel.initrd (there is no initramfs to put modules in); remove it or set kernel.initrd",
            ));
        }
    }
    let image_loc = required(k.image, file, "kernel.image")?;
    let image = one_of(
        &image_loc,
        "kernel.image",
        &[
            ("zImage", KernelImage::ZImage),
            ("Image", KernelImage::Image),
        ],
    )?;
    let kernel = Kernel {
        package: k.package.map(|v| v.value).unwrap_or_default(),
        image,
        path: required(k.path, file, "kernel.path")?.value,
        initrd: k.initrd.map(|v| v.value),
        dtb_dir: k.dtb_dir.map(|v| v.value).unwrap_or_default(),
        dtb: k.dtb.map(|v| v.value),
        cmdline: k
            .cmdline
            .unwrap_or_else(|| Loc::builtin("console={console} root={root} rootwait".into())),
        defconfig: k
            .defconfig
            .map(|v| v.value)
            .unwrap_or_else(|| "defconfig".into()),
        fragments_origin: k.fragments.as_ref().and_then(|v| v.origin.clone()),
        fragments: k.fragments.map(|v| v.value).unwrap_or_default(),
        initramfs_modules: k.initramfs_modules.map(|v| v.value).unwrap_or_default(),
    };
    if kernel.dtb.is_some() && kernel.dtb_dir.is_empty() {
        return Err(ProfileError::Missing {
            file: file.name.clone(),
            field: "kernel.dtb_dir".into(),
        });
    }
    if !medium_given && kernel.initrd.is_some() {
        return Err(ProfileError::Missing {
            file: file.name.clone(),
            field: "medium (where the root filesystem lives: \"sd\", \"emmc\", \"usb\", \"sata\" or \"virtio\"; the initramfs gets the modules its controller needs)".into(),
        });
    }
    Ok(kernel)
}

/// `[bootloader]`, if any.
fn validate_bootloader(
    raw: Option<RawBootloader>,
    file: &SourceFile,
) -> Result<Option<Bootloader>, ProfileError> {
    Ok(match raw {
        None => None,
        Some(b) => {
            let offset = loc_size(
                &required(b.offset, file, "bootloader.offset")?,
                "bootloader.offset",
            )?;
            if offset.value % 512 != 0 {
                return Err(ProfileError::invalid(
                    &offset,
                    "bootloader.offset",
                    format!("{} is not a multiple of the 512-byte sector", offset.value),
                ));
            }
            Some(Bootloader {
                package: b.package.map(|v| v.value),
                path: required(b.path, file, "bootloader.path")?,
                offset,
                max_size: b
                    .max_size
                    .as_ref()
                    .map(|v| size_of(v, "bootloader.max_size"))
                    .transpose()?,
                magic: b.magic.map(|m| Magic {
                    offset: m.value.offset,
                    text: m.value.text,
                }),
                env: b.env.map(|e| validate_uboot_env(&e)).transpose()?,
            })
        }
    })
}

/// `[table]`: its type, alignment, size, and the settings of that type only.
fn validate_table(t: RawTable, file: &SourceFile) -> Result<Table, ProfileError> {
    let kind_loc = required(t.kind, file, "table.type")?;
    let kind = one_of(
        &kind_loc,
        "table.type",
        &[("mbr", TableKind::Mbr), ("gpt", TableKind::Gpt)],
    )?;
    let alignment = match t.alignment {
        Some(a) => loc_size(&a, "table.alignment")?,
        None => Loc::builtin(crate::size::MIB),
    };
    if alignment.value == 0 || alignment.value % 512 != 0 {
        return Err(ProfileError::invalid(
            &alignment,
            "table.alignment",
            "must be a non-zero multiple of 512 bytes (1MiB is the usual choice for SD cards)",
        ));
    }
    let size = match t.size {
        None => Loc::builtin(ImageSize::Auto),
        Some(s) => match &s.value {
            SizeValue::Text(text) if text == "auto" => Loc {
                value: ImageSize::Auto,
                origin: s.origin.clone(),
            },
            _ => Loc {
                value: ImageSize::Bytes(size_of(&s, "table.size")?),
                origin: s.origin.clone(),
            },
        },
    };
    let gpt_fields_on_mbr = [
        t.gpt_entries
            .as_ref()
            .map(|l| (l.at(), "table.gpt_entries")),
        t.gpt_entries_offset
            .as_ref()
            .map(|l| (l.at(), "table.gpt_entries_offset")),
    ];
    if kind == TableKind::Mbr {
        if let Some((at, field)) = gpt_fields_on_mbr.into_iter().flatten().next() {
            return Err(ProfileError::Invalid {
                at,
                field: field.into(),
                message:
                    "is a GPT setting but table.type is \"mbr\"; remove it or use type = \"gpt\""
                        .into(),
            });
        }
    } else if let Some(sig) = &t.disk_signature {
        return Err(ProfileError::invalid(
            sig,
            "table.disk_signature",
            "is an MBR setting but table.type is \"gpt\" (GPT disks have a GUID, derived reproducibly)",
        ));
    }
    let gpt_entries = t.gpt_entries.unwrap_or_else(|| Loc::builtin(128));
    if !(1..=1024).contains(&gpt_entries.value) {
        return Err(ProfileError::invalid(
            &gpt_entries,
            "table.gpt_entries",
            "must be between 1 and 1024 (128 is the UEFI default)",
        ));
    }
    let gpt_entries_offset = match t.gpt_entries_offset {
        Some(o) => loc_size(&o, "table.gpt_entries_offset")?,
        None => Loc::builtin(1024),
    };
    if gpt_entries_offset.value % 512 != 0 || gpt_entries_offset.value < 1024 {
        return Err(ProfileError::invalid(
            &gpt_entries_offset,
            "table.gpt_entries_offset",
            "must be a multiple of 512 at or after byte 1024 (sector 2, right after the GPT header)",
        ));
    }
    Ok(Table {
        kind,
        alignment,
        size,
        disk_signature: t.disk_signature.map(|v| v.value),
        gpt_entries,
        gpt_entries_offset,
    })
}

/// The `[[partition]]` list: each partition, then the rules between them (names, fill, roles).
fn validate_partitions(
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

/// `[boot]`: the boot methods need a boot partition to write to.
fn validate_boot(
    raw: RawBoot,
    file: &SourceFile,
    partitions: &[Partition],
) -> Result<BootConfig, ProfileError> {
    let methods = match raw.methods {
        None => Vec::new(),
        Some(m) => {
            let mut out = Vec::new();
            for name in &m.value {
                let loc = Loc {
                    value: name.clone(),
                    origin: m.origin.clone(),
                };
                out.push(one_of(
                    &loc,
                    "boot.methods",
                    &[
                        ("extlinux", BootMethod::Extlinux),
                        ("boot.scr", BootMethod::BootScr),
                    ],
                )?);
            }
            out
        }
    };
    if !methods.is_empty() && !partitions.iter().any(|p| p.role == Role::Boot) {
        return Err(ProfileError::Missing {
            file: file.name.clone(),
            field:
                "a partition with role = \"boot\" (boot.methods needs somewhere to write its files)"
                    .into(),
        });
    }
    Ok(BootConfig {
        methods,
        extlinux_fdt: raw.extlinux_fdt.map(|v| v.value).unwrap_or(true),
    })
}

/// `[emulator]` and the named `[emulators.NAME]` setups; the initramfs gets what every emulator's disk
/// needs, so that the same root filesystem boots on the board and in each of them.
fn validate_emulators(
    default: Option<RawEmulator>,
    named: Option<std::collections::BTreeMap<String, Loc<RawEmulator>>>,
    ctx: &EmulatorContext<'_>,
    kernel: &mut Kernel,
) -> Result<(Option<Emulator>, Vec<Emulator>), ProfileError> {
    let emulator = default
        .map(|e| validate_emulator(e, None, ctx))
        .transpose()?;
    let mut emulators = Vec::new();
    for (name, e) in named.unwrap_or_default() {
        if !valid_emulator_name(&name) {
            return Err(ProfileError::invalid(
                &e,
                format!("emulators.{name}"),
                "an emulator's name is lowercase letters, digits and '-' (it is given to `boot --emulator NAME`)",
            ));
        }
        emulators.push(validate_emulator(e.value, Some(name), ctx)?);
    }
    for e in emulator.iter().chain(&emulators) {
        for m in &e.initramfs_modules {
            if !kernel.initramfs_modules.contains(m) {
                kernel.initramfs_modules.push(m.clone());
            }
        }
    }
    Ok((emulator, emulators))
}

/// What an emulator section is checked against.
struct EmulatorContext<'a> {
    file: &'a SourceFile,
    medium: Option<Medium>,
    medium_loc: Option<&'a Loc<String>>,
    has_initrd: bool,
}

fn valid_emulator_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// A QEMU `-device` value: non-empty and not an option.
fn device_value(v: &Loc<String>, field: &str) -> Result<String, ProfileError> {
    if v.value.trim().is_empty() || v.value.starts_with('-') || v.value != v.value.trim() {
        return Err(ProfileError::invalid(
            v,
            field,
            "must be a QEMU device, e.g. \"virtio-gpu-pci\" (with its properties after commas)",
        ));
    }
    Ok(v.value.clone())
}

fn validate_emulator(
    e: RawEmulator,
    name: Option<String>,
    ctx: &EmulatorContext<'_>,
) -> Result<Emulator, ProfileError> {
    let prefix = match &name {
        None => "emulator".to_string(),
        Some(n) => format!("emulators.{n}"),
    };
    let f = |field: &str| format!("{prefix}.{field}");
    let drive = {
        let d = e.drive.unwrap_or_else(|| Loc::builtin("virtio".into()));
        one_of(&d, &f("drive"), &[("sd", "sd"), ("virtio", "virtio")])?.to_string()
    };
    let display = e
        .display
        .as_ref()
        .map(|d| device_value(d, &f("display")))
        .transpose()?;
    let mut input = Vec::new();
    if let Some(i) = &e.input {
        if display.is_none() {
            return Err(ProfileError::invalid(
                i,
                f("input"),
                format!(
                    "has no effect without {}: input devices drive a screen; add a display device or remove them",
                    f("display")
                ),
            ));
        }
        for (n, d) in i.value.iter().enumerate() {
            input.push(device_value(
                &Loc {
                    value: d.clone(),
                    origin: i.origin.clone(),
                },
                &format!("{}[{n}]", f("input")),
            )?);
        }
    }
    let network = match &e.network {
        None => None,
        Some(n) => {
            if n.value.is_empty()
                || !n
                    .value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            {
                return Err(ProfileError::invalid(
                    n,
                    f("network"),
                    "must be a QEMU NIC model name (letters, digits, '-', '_', '.'), e.g. \"virtio-net-pci\" or \"allwinner-emac\"",
                ));
            }
            Some(n.value.clone())
        }
    };
    let direct_boot = match &e.direct_boot {
        None => {
            if let Some(c) = &e.console {
                return Err(ProfileError::invalid(
                    c,
                    f("console"),
                    format!(
                        "has no effect without {}: the image's own boot configuration sets the console",
                        f("direct_boot")
                    ),
                ));
            }
            None
        }
        Some(d) => {
            // Whether the image has an extlinux.conf is checked when this emulator is chosen: a board
            // may inherit the setup from its base and still leave extlinux out of boot.methods.
            one_of(d, &f("direct_boot"), &[("extlinux", ())])?;
            if let Some(fw) = &e.firmware {
                return Err(ProfileError::invalid(
                    fw,
                    f("firmware"),
                    format!(
                        "has no effect with {}: QEMU starts the kernel itself; remove one of them",
                        f("direct_boot")
                    ),
                ));
            }
            let console = match &e.console {
                None => None,
                Some(c) => {
                    if c.value.is_empty() || c.value.contains(char::is_whitespace) {
                        return Err(ProfileError::invalid(
                            c,
                            f("console"),
                            "must be one console device with its options, e.g. \"ttyAMA0\" or \"ttyS0,115200\"",
                        ));
                    }
                    Some(c.value.clone())
                }
            };
            Some(DirectBoot { console })
        }
    };
    let initramfs_modules = match &e.initramfs_modules {
        None => Vec::new(),
        Some(m) => {
            if let Some(bad) = m
                .value
                .iter()
                .find(|n| !crate::rootmods::kmod::valid_module_name(n))
            {
                return Err(ProfileError::invalid(
                    m,
                    f("initramfs_modules"),
                    format!(
                        "{bad:?} is not a module name (letters, digits, '_' and '-', as in `virtio_blk`)"
                    ),
                ));
            }
            if !m.value.is_empty() && !ctx.has_initrd {
                return Err(ProfileError::invalid(
                    m,
                    f("initramfs_modules"),
                    "has no effect without kernel.initrd (there is no initramfs to put modules in)",
                ));
            }
            m.value.clone()
        }
    };
    if let (Some(m), Some(loc)) = (ctx.medium, ctx.medium_loc) {
        let fits = match drive.as_str() {
            "sd" => matches!(m, Medium::Sd | Medium::Emmc),
            _ => m == Medium::Virtio,
        };
        if !fits && initramfs_modules.is_empty() {
            return Err(ProfileError::invalid(
                loc,
                "medium",
                format!(
                    "is \"{}\" but {} is \"{}\": the emulated disk would not be where the initramfs looks for the root filesystem; list the modules that disk needs in {}",
                    m.name(),
                    f("drive"),
                    drive,
                    f("initramfs_modules")
                ),
            ));
        }
    }
    Ok(Emulator {
        name,
        description: e.description.map(|v| v.value),
        system: required(e.system, ctx.file, &f("system"))?.value,
        machine: required(e.machine, ctx.file, &f("machine"))?.value,
        cpu: e.cpu.map(|v| v.value),
        memory: e.memory.map(|v| v.value).unwrap_or_else(|| "1G".into()),
        drive,
        firmware: e.firmware.map(|v| v.value),
        size_power_of_two: e.size_power_of_two.map(|v| v.value).unwrap_or(false),
        extra_args: e.extra_args.map(|v| v.value).unwrap_or_default(),
        display,
        input,
        network,
        direct_boot,
        initramfs_modules,
    })
}

const DEVKEYS: &str = "/usr/share/vboot/devkeys";

fn validate_vboot(v: RawVboot) -> Result<Vboot, ProfileError> {
    let path = |l: Option<Loc<String>>, default: &str| {
        l.map(|l| PathBuf::from(l.value))
            .unwrap_or_else(|| Path::new(DEVKEYS).join(default))
    };
    let version = match v.version {
        Some(l) => u32::try_from(l.value).map_err(|_| {
            ProfileError::invalid(&l, "vboot.version", "must be between 0 and 4294967295")
        })?,
        None => 1,
    };
    let load_address = match v.load_address {
        Some(l) => u32::try_from(l.value).map_err(|_| {
            ProfileError::invalid(&l, "vboot.load_address", "must be a 32-bit address")
        })?,
        None => 0,
    };
    Ok(Vboot {
        keyblock: path(v.keyblock, "kernel.keyblock"),
        signprivate: path(v.signprivate, "kernel_data_key.vbprivk"),
        subkey: Some(path(v.subkey, "kernel_subkey.vbpubk")),
        version,
        load_address,
    })
}

fn validate_uboot_env(e: &Loc<raw::RawUbootEnv>) -> Result<UbootEnvSpec, ProfileError> {
    let field = "bootloader.env";
    let file = e.value.file.clone().unwrap_or_else(|| "uboot.env".into());
    if file.is_empty() || file.starts_with('/') || file.split('/').any(|c| c == "..") {
        return Err(ProfileError::invalid(
            e,
            format!("{field}.file"),
            format!("{file:?} must be a relative path on the boot partition"),
        ));
    }
    let size_loc = Loc {
        value: e.value.size.clone(),
        origin: e.origin.clone(),
    };
    let size = size_of(&size_loc, &format!("{field}.size"))?;
    if !(512..=16 * crate::size::MIB).contains(&size) {
        return Err(ProfileError::invalid(
            e,
            format!("{field}.size"),
            format!("{size} bytes is not a plausible U-Boot CONFIG_ENV_SIZE (512 B to 16 MiB)"),
        ));
    }
    let mut set = Vec::new();
    for (k, v) in &e.value.set {
        let name_ok = !k.is_empty() && k.chars().all(|c| c.is_ascii_graphic() && c != '=');
        if !name_ok || v.contains(['\0', '\n']) {
            return Err(ProfileError::invalid(
                e,
                format!("{field}.set.{k}"),
                "variable names are printable ASCII without '='; values are one line",
            ));
        }
        set.push((k.clone(), v.clone()));
    }
    Ok(UbootEnvSpec { file, size, set })
}

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Boot => "boot",
        Role::Root => "root",
        Role::Kernel => "kernel",
        Role::Data => "data",
    }
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
        return Err(ProfileError::Invalid {
            at,
            field: field("fs"),
            message: format!(
                "a partition with role \"{}\" cannot use this filesystem (boot: vfat/fat16/fat32, root: ext4, kernel: raw with `source`)",
                role_name(role)
            ),
        });
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
    let gpt_only = [
        p.gpt_type.as_ref().map(|l| (l.at(), "gpt_type")),
        p.gpt_name.as_ref().map(|l| (l.at(), "gpt_name")),
        p.attributes.as_ref().map(|l| (l.at(), "attributes")),
    ];
    if let Some((at, f)) = gpt_only.into_iter().flatten().next() {
        return Err(ProfileError::Invalid {
            at,
            field: field(f),
            message: "is a GPT field but table.type is \"mbr\"; use mbr_type/bootable, or switch the table to gpt".into(),
        });
    }
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
    let mbr_only = [
        p.mbr_type.as_ref().map(|l| (l.at(), "mbr_type")),
        p.bootable.as_ref().map(|l| (l.at(), "bootable")),
    ];
    if let Some((at, f)) = mbr_only.into_iter().flatten().next() {
        return Err(ProfileError::Invalid {
            at,
            field: field(f),
            message: "is an MBR field but table.type is \"gpt\"; use gpt_type and attributes (legacy_boot = true marks a GPT partition bootable)".into(),
        });
    }
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
        return Err(ProfileError::Invalid {
            at,
            field: field("gpt_name"),
            message: "GPT partition names hold at most 36 UTF-16 code units".into(),
        });
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

impl fmt::Display for TableKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TableKind::Mbr => "mbr",
            TableKind::Gpt => "gpt",
        })
    }
}

impl fmt::Display for Fs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fs::Vfat => "vfat",
            Fs::Fat16 => "fat16",
            Fs::Fat32 => "fat32",
            Fs::Ext4 => "ext4",
            Fs::Raw => "raw",
            Fs::None => "none",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Profile, ProfileError> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.toml");
        std::fs::write(&p, text).unwrap();
        Catalog::default().load(p.to_str().unwrap())
    }

    #[test]
    fn every_embedded_board_resolves() {
        let boards = Catalog::default().list().unwrap();
        let names: Vec<&str> = boards.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(
            names,
            ["armv8-foundation", "chromebook-snow", "cubieboard", "mk802"]
        );
    }

    #[test]
    fn a10_boards_share_the_soc_base() {
        let c = Catalog::default();
        let cb = c.load("cubieboard").unwrap();
        let mk = c.load("mk802").unwrap();
        assert_eq!(cb.bootloader.as_ref().unwrap().offset.value, 8192);
        assert_eq!(mk.bootloader.as_ref().unwrap().offset.value, 8192);
        assert_eq!(cb.sources.len(), 2);
        assert!(cb.sources[1].name.ends_with("base/allwinner-a10.toml"));
        assert_eq!(cb.kernel.dtb.as_deref(), Some("sun4i-a10-cubieboard.dtb"));
        assert_eq!(mk.kernel.dtb.as_deref(), Some("sun4i-a10-mk802.dtb"));
    }

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

    const MINIMAL: &str = "arch = \"armhf\"\nconsole = \"ttyS0\"\n[kernel]\nimage = \"zImage\"\npath = \"boot/vmlinuz-*\"\n[table]\ntype = \"mbr\"\n";

    #[test]
    fn unknown_key_names_line_and_column() {
        let text =
            format!("{MINIMAL}[[partition]]\nname = \"root\"\nsize = \"fill\"\ncolour = \"red\"\n");
        let e = load_text(&text).unwrap_err().to_string();
        assert!(e.contains("t.toml:11:1"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn bad_size_names_field_and_position() {
        let text = format!("{MINIMAL}[[partition]]\nname = \"root\"\nsize = \"12 parsecs\"\n");
        let e = load_text(&text).unwrap_err().to_string();
        assert!(e.contains("t.toml:10:8"), "{e}");
        assert!(e.contains("partition[0].size"), "{e}");
        assert!(e.contains("unknown unit"), "{e}");
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

    #[test]
    fn missing_field_is_named() {
        let e = load_text("arch = \"armhf\"\n").unwrap_err().to_string();
        assert!(e.contains("console"), "{e}");
    }

    #[test]
    fn seed_boards_name_their_medium_and_only_true_extras() {
        let c = Catalog::default();
        for (board, medium, extras) in [
            // The A10 boards' desktop emulator (QEMU virt) attaches the disk over virtio PCI.
            ("cubieboard", Medium::Sd, &["virtio_pci", "virtio_blk"][..]),
            ("mk802", Medium::Sd, &["virtio_pci", "virtio_blk"][..]),
            ("chromebook-snow", Medium::Sd, &[][..]),
            ("armv8-foundation", Medium::Virtio, &["virtio_pci"][..]),
        ] {
            let p = c.load(board).unwrap();
            assert_eq!(p.medium, Some(medium), "{board}");
            assert_eq!(p.kernel.initramfs_modules, extras, "{board}");
        }
    }

    const WITH_INITRD: &str = "arch = \"armhf\"\nconsole = \"ttyS0\"\nMEDIUM[kernel]\nimage = \"zImage\"\npath = \"boot/vmlinuz-*\"\ninitrd = \"boot/initrd.img-*\"\ndtb_dir = \"usr/lib/linux-image-*\"\ndtb = \"x.dtb\"\nEXTRA\n[table]\ntype = \"mbr\"\n[[partition]]\nname = \"root\"\nrole = \"root\"\nsize = \"fill\"\nEMU";

    fn with(medium: &str, extra: &str, emu: &str) -> Result<Profile, ProfileError> {
        load_text(
            &WITH_INITRD
                .replace("MEDIUM", medium)
                .replace("EXTRA", extra)
                .replace("EMU", emu),
        )
    }

    #[test]
    fn medium_rules() {
        let ok = with("medium = \"emmc\"\n", "", "").unwrap();
        assert_eq!(ok.medium, Some(Medium::Emmc));
        // An unknown medium names the line and the choices.
        let e = with("medium = \"floppy\"\n", "", "")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("t.toml:3:10") && e.contains("\"floppy\"") && e.contains("\"virtio\""),
            "{e}"
        );
        // An initramfs without a medium: the modules could not be derived.
        let e = with("", "", "").unwrap_err().to_string();
        assert!(e.contains("`medium") && e.contains("\"sd\""), "{e}");
        // The emulated disk must be the medium the initramfs looks for.
        let emu =
            "[emulator]\nsystem = \"qemu-system-arm\"\nmachine = \"cubieboard\"\ndrive = \"sd\"\n";
        let e = with("medium = \"virtio\"\n", "", emu)
            .unwrap_err()
            .to_string();
        assert!(e.contains("emulator.drive is \"sd\""), "{e}");
        assert!(with("medium = \"sd\"\n", "", emu).is_ok());
        let e = with(
            "medium = \"usb\"\n",
            "",
            &emu.replace("\"sd\"", "\"virtio\""),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("emulator.drive is \"virtio\""), "{e}");
    }

    #[test]
    fn initramfs_modules_rules() {
        let e = with(
            "medium = \"sd\"\n",
            "initramfs_modules = [\"ext4\", \"evil; rm -rf /\"]",
            "",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("kernel.initramfs_modules") && e.contains("not a module name"),
            "{e}"
        );
        let no_initrd = WITH_INITRD
            .replace("MEDIUM", "")
            .replace("initrd = \"boot/initrd.img-*\"\n", "")
            .replace("EXTRA", "initramfs_modules = [\"ext4\"]")
            .replace("EMU", "");
        let e = load_text(&no_initrd).unwrap_err().to_string();
        assert!(e.contains("has no effect without kernel.initrd"), "{e}");
        assert!(
            with(
                "medium = \"sd\"\n",
                "initramfs_modules = [\"dw_mmc-exynos\"]",
                ""
            )
            .is_ok()
        );
    }

    /// A board with a boot partition read by extlinux, an SD card and the `[emulators.desktop]` EMU.
    fn with_desktop(emu: &str) -> Result<Profile, ProfileError> {
        let text = WITH_INITRD
            .replace("MEDIUM", "medium = \"sd\"\n")
            .replace("EXTRA", "")
            .replace(
                "[[partition]]\nname = \"root\"",
                "[[partition]]\nname = \"boot\"\nrole = \"boot\"\nsize = \"64MiB\"\nfs = \"vfat\"\n[[partition]]\nname = \"root\"",
            )
            .replace(
                "EMU",
                &format!("[boot]\nmethods = [\"extlinux\"]\n[emulators.desktop]\n{emu}"),
            );
        load_text(&text)
    }

    const DESKTOP: &str = "system = \"qemu-system-arm\"\nmachine = \"virt\"\ndrive = \"virtio\"\ndirect_boot = \"extlinux\"\nconsole = \"ttyAMA0\"\ndisplay = \"virtio-gpu-pci\"\ninput = [\"virtio-keyboard-pci\"]\nnetwork = \"virtio-net-pci\"\ninitramfs_modules = [\"virtio_pci\", \"virtio_blk\"]\n";

    #[test]
    fn named_emulators_are_read_and_their_modules_join_the_initramfs() {
        let p = with_desktop(DESKTOP).unwrap();
        assert!(p.emulator.is_none());
        let e = &p.emulators[0];
        assert_eq!(e.label(), "desktop");
        assert_eq!(e.display.as_deref(), Some("virtio-gpu-pci"));
        assert_eq!(e.input, ["virtio-keyboard-pci"]);
        assert_eq!(e.network.as_deref(), Some("virtio-net-pci"));
        assert_eq!(
            e.direct_boot.as_ref().and_then(|d| d.console.as_deref()),
            Some("ttyAMA0")
        );
        assert_eq!(p.kernel.initramfs_modules, ["virtio_pci", "virtio_blk"]);
        // The seed boards: the A10 boards and the Foundation model have a desktop; snow has none.
        let c = Catalog::default();
        for board in ["cubieboard", "mk802", "armv8-foundation"] {
            let p = c.load(board).unwrap();
            let d = p.emulators.iter().find(|e| e.label() == "desktop");
            assert!(
                d.is_some_and(|d| d.display.is_some() && d.network.is_some()),
                "{board}"
            );
        }
        assert!(c.load("chromebook-snow").unwrap().emulators.is_empty());
    }

    #[test]
    fn named_emulator_rules() {
        let fails = |emu: String, expect: &[&str]| {
            let e = with_desktop(&emu).unwrap_err().to_string();
            for x in expect {
                assert!(e.contains(x), "{x:?} not in: {e}");
            }
        };
        // Input devices without a screen have nothing to drive.
        fails(
            DESKTOP.replace("display = \"virtio-gpu-pci\"\n", ""),
            &[
                "emulators.desktop.input",
                "no effect without emulators.desktop.display",
            ],
        );
        // A device value is not an option smuggled into QEMU's command line.
        fails(
            DESKTOP.replace("\"virtio-gpu-pci\"", "\"-drive\""),
            &["emulators.desktop.display", "QEMU device"],
        );
        fails(
            DESKTOP.replace("\"virtio-keyboard-pci\"", "\" usb-kbd\""),
            &["emulators.desktop.input[0]"],
        );
        fails(
            DESKTOP.replace("\"virtio-net-pci\"", "\"e1000,hostfwd=tcp::1-:2\""),
            &["emulators.desktop.network", "NIC model"],
        );
        // The console only means something when boardsmith starts the kernel.
        fails(
            DESKTOP.replace("direct_boot = \"extlinux\"\n", ""),
            &[
                "emulators.desktop.console",
                "no effect without emulators.desktop.direct_boot",
            ],
        );
        fails(
            DESKTOP.replace("\"ttyAMA0\"", "\"ttyAMA0 init=/bin/sh\""),
            &["emulators.desktop.console", "one console device"],
        );
        fails(
            DESKTOP.replace("\"extlinux\"\nconsole", "\"grub\"\nconsole"),
            &["emulators.desktop.direct_boot", "\"extlinux\""],
        );
        // Firmware would never run when QEMU starts the kernel.
        fails(
            format!("{DESKTOP}firmware = \"/usr/lib/u-boot/u-boot.bin\"\n"),
            &[
                "emulators.desktop.firmware",
                "no effect with emulators.desktop.direct_boot",
            ],
        );
        fails(
            DESKTOP.replace("\"virtio_blk\"", "\"virtio blk\""),
            &["emulators.desktop.initramfs_modules", "not a module name"],
        );
        // The disk must be where the initramfs looks, or the modules to reach it listed.
        fails(
            DESKTOP.replace("initramfs_modules = [\"virtio_pci\", \"virtio_blk\"]\n", ""),
            &[
                "emulators.desktop.drive is \"virtio\"",
                "emulators.desktop.initramfs_modules",
            ],
        );
    }

    #[test]
    fn named_emulator_needs_a_plain_name() {
        // A board without extlinux.conf may carry (inherit) a direct_boot setup: `boot` refuses to use it.
        let text = WITH_INITRD
            .replace("MEDIUM", "medium = \"sd\"\n")
            .replace("EXTRA", "")
            .replace("EMU", &format!("[emulators.desktop]\n{DESKTOP}"));
        assert!(load_text(&text).is_ok());
        let text = WITH_INITRD
            .replace("MEDIUM", "medium = \"sd\"\n")
            .replace("EXTRA", "")
            .replace(
                "EMU",
                "[emulators.Desk_top]\nsystem = \"qemu-system-arm\"\nmachine = \"virt\"\ndrive = \"sd\"\n",
            );
        let e = load_text(&text).unwrap_err().to_string();
        assert!(
            e.contains("emulators.Desk_top") && e.contains("lowercase"),
            "{e}"
        );
    }

    #[test]
    fn extends_cycle_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "extends = \"b.toml\"\n").unwrap();
        std::fs::write(dir.path().join("b.toml"), "extends = \"a.toml\"\n").unwrap();
        let e = Catalog::default()
            .load(dir.path().join("a.toml").to_str().unwrap())
            .unwrap_err();
        assert!(matches!(e, ProfileError::Cycle { .. }), "{e}");
    }
}
