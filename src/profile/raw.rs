//! The profile file format exactly as written: every field optional (a file may be a base or extend one),
//! unknown keys rejected, every value tagged with where it was written.

use serde::Deserialize;

use super::source::Loc;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    /// Name of a base profile (boards/base/NAME.toml, or a path relative to this file).
    pub extends: Option<Loc<String>>,
    pub name: Option<Loc<String>>,
    pub description: Option<Loc<String>>,
    pub arch: Option<Loc<String>>,
    pub console: Option<Loc<String>>,
    /// Where the root filesystem lives: sd, emmc, usb, sata or virtio.
    pub medium: Option<Loc<String>>,
    #[serde(default)]
    pub kernel: RawKernel,
    pub bootloader: Option<RawBootloader>,
    #[serde(default)]
    pub table: RawTable,
    #[serde(rename = "partition")]
    pub partitions: Option<Loc<Vec<RawPartition>>>,
    #[serde(default)]
    pub boot: RawBoot,
    #[serde(default)]
    pub display: RawDisplay,
    pub emulator: Option<RawEmulator>,
    pub vboot: Option<RawVboot>,
    #[serde(default)]
    pub release: RawRelease,
    pub fvp: Option<RawFvp>,
    pub rootfs: Option<RawRootfs>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKernel {
    pub package: Option<Loc<String>>,
    pub image: Option<Loc<String>>,
    pub path: Option<Loc<String>>,
    pub initrd: Option<Loc<String>>,
    pub dtb_dir: Option<Loc<String>>,
    pub dtb: Option<Loc<String>>,
    pub cmdline: Option<Loc<String>>,
    pub defconfig: Option<Loc<String>>,
    pub fragments: Option<Loc<Vec<String>>>,
    pub initramfs_modules: Option<Loc<Vec<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBootloader {
    pub package: Option<Loc<String>>,
    pub path: Option<Loc<String>>,
    pub offset: Option<Loc<SizeValue>>,
    pub max_size: Option<Loc<SizeValue>>,
    pub magic: Option<Loc<RawMagic>>,
    pub env: Option<Loc<RawUbootEnv>>,
}

/// `[bootloader.env]`: a U-Boot environment file for the boot partition.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUbootEnv {
    pub file: Option<String>,
    pub size: SizeValue,
    #[serde(default)]
    pub set: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMagic {
    pub offset: u64,
    pub text: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    #[serde(rename = "type")]
    pub kind: Option<Loc<String>>,
    pub alignment: Option<Loc<SizeValue>>,
    /// Whole image size, or "auto" to size the `fill` partition from the root filesystem.
    pub size: Option<Loc<SizeValue>>,
    pub disk_signature: Option<Loc<u32>>,
    pub gpt_entries: Option<Loc<u32>>,
    pub gpt_entries_offset: Option<Loc<SizeValue>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPartition {
    pub name: Loc<String>,
    pub role: Option<Loc<String>>,
    pub fs: Option<Loc<String>>,
    pub size: Loc<SizeValue>,
    pub offset: Option<Loc<SizeValue>>,
    pub align: Option<Loc<SizeValue>>,
    pub label: Option<Loc<String>>,
    pub mbr_type: Option<Loc<i64>>,
    pub bootable: Option<Loc<bool>>,
    pub gpt_type: Option<Loc<String>>,
    pub gpt_name: Option<Loc<String>>,
    pub attributes: Option<Loc<RawAttributes>>,
    pub source: Option<Loc<String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAttributes {
    pub required: Option<bool>,
    pub legacy_boot: Option<bool>,
    pub priority: Option<i64>,
    pub tries: Option<i64>,
    pub successful: Option<bool>,
    /// Further raw attribute bit numbers (0–63) to set.
    pub bits: Option<Vec<i64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBoot {
    pub methods: Option<Loc<Vec<String>>>,
    pub extlinux_fdt: Option<Loc<bool>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDisplay {
    pub video: Option<Loc<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEmulator {
    pub system: Option<Loc<String>>,
    pub machine: Option<Loc<String>>,
    pub cpu: Option<Loc<String>>,
    pub memory: Option<Loc<String>>,
    pub drive: Option<Loc<String>>,
    pub firmware: Option<Loc<String>>,
    pub size_power_of_two: Option<Loc<bool>>,
    pub extra_args: Option<Loc<Vec<String>>>,
}

/// `[fvp]`: Arm's Fixed Virtual Platform that runs this image; `build` writes a launch script for it.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFvp {
    pub model: Option<Loc<String>>,
    pub args: Option<Loc<Vec<String>>>,
}

/// A size as TOML allows it: a string with a unit, or an integer number of bytes.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(i64),
    Text(String),
}

/// ChromeOS verified boot: how the kernel partition's blob is signed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVboot {
    pub keyblock: Option<Loc<String>>,
    pub signprivate: Option<Loc<String>>,
    /// Public key the firmware checks the keyblock with (used to verify the blob after signing).
    pub subkey: Option<Loc<String>>,
    pub version: Option<Loc<i64>>,
    /// Load and entry address of the kernel in the FIT image.
    pub load_address: Option<Loc<i64>>,
}

/// Text for release notes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRelease {
    pub changelog: Option<Loc<Vec<String>>>,
    pub known_issues: Option<Loc<Vec<String>>>,
    /// How to reach the console and log in, in the notes.
    pub console_notes: Option<Loc<String>>,
}

/// `[rootfs]`: what `boardsmith rootfs` puts on this board (defaults in rootfs/base.toml).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRootfs {
    pub suite: Option<Loc<String>>,
    pub mirror: Option<Loc<String>>,
    pub security_mirror: Option<Loc<String>>,
    pub components: Option<Loc<Vec<String>>>,
    /// Packages added to the recipe's (firmware, board tools).
    pub packages: Option<Loc<Vec<String>>>,
    /// Features built by default (`--no-feature` removes one).
    pub features: Option<Loc<Vec<String>>>,
    pub hostname: Option<Loc<String>>,
    pub user: Option<Loc<String>>,
    pub password_hash: Option<Loc<String>>,
    /// The default user must change the password at the first login (images for publishing).
    pub expire_password: Option<Loc<bool>>,
    pub locale: Option<Loc<String>>,
    pub timezone: Option<Loc<String>>,
    /// How fstab names partitions: "partuuid" or "label".
    pub fstab: Option<Loc<String>>,
    pub autologin: Option<Loc<bool>>,
}
