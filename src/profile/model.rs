//! The validated profile: what a board is, as every later stage reads it.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use super::{Loc, Medium, Origin, RawRootfs, SourceFile};

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

/// `text` at byte `offset` of the bootloader blob (the profile checked that it lies inside the
/// bootloader's region).
#[derive(Debug, Clone, Serialize)]
pub struct Magic {
    pub offset: u64,
    pub text: String,
    /// Where the profile set it, for messages.
    #[serde(skip)]
    pub origin: Option<Origin>,
}

impl Magic {
    /// Whether `blob` carries the magic; false when it is too short for it (checked arithmetic: the
    /// offset comes from a profile).
    pub fn found_in(&self, blob: &[u8]) -> bool {
        let at = usize::try_from(self.offset).ok();
        let range = at.and_then(|a| Some(a..a.checked_add(self.text.len())?));
        range.and_then(|r| blob.get(r)) == Some(self.text.as_bytes())
    }
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

pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Boot => "boot",
        Role::Root => "root",
        Role::Kernel => "kernel",
        Role::Data => "data",
    }
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
