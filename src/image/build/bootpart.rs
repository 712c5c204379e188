//! The boot partition: its files (kernel, initrd, device trees, boot configuration, U-Boot
//! environment) written as a FAT filesystem.

use super::BuildError;
use super::rootfiles::Found;
use crate::image::bootconfig::{self, BootFiles};
use crate::image::fat::{self, FatFile, FatKind, FatOptions, FatSummary};
use crate::image::sink::ImageSink;
use crate::image::ubootenv::Env;
use crate::plan::PlannedPartition;
use crate::profile::{BootMethod, Fs, Profile};
use crate::rootfs::tree::FileData;

/// The U-Boot environment file the profile asks for: the blob's default environment with `set` applied.
/// A blob without a recognisable default environment (compressed U-Boot, or not U-Boot) gets no file:
/// U-Boot then boots with its built-in environment, only slower; the build says so in a warning.
pub(super) fn uboot_env_file(
    profile: &Profile,
    found: &Found,
    warnings: &mut Vec<String>,
) -> Result<Option<FatFile>, BuildError> {
    let (Some(b), Some((path, blob))) = (&profile.bootloader, &found.blob) else {
        return Ok(None);
    };
    let Some(spec) = &b.env else {
        return Ok(None);
    };
    let err = |source| BuildError::UbootEnv {
        path: path.clone(),
        source,
    };
    let mut env = match Env::find_default(blob) {
        Ok(env) => env,
        Err(e @ crate::image::ubootenv::EnvError::NotFound) => {
            warnings.push(format!(
                "{path}: {e}; {} not written, U-Boot will use its built-in environment",
                spec.file
            ));
            return Ok(None);
        }
        Err(e) => return Err(err(e)),
    };
    for (k, v) in &spec.set {
        env.set(k, v);
    }
    let data = env.encode(spec.size as usize).map_err(err)?;
    Ok(Some(FatFile {
        path: spec.file.clone(),
        data: FileData::Bytes(data),
    }))
}

pub(super) fn boot_partition_files(
    profile: &Profile,
    found: &Found,
    cmdline: &str,
    epoch: u64,
    warnings: &mut Vec<String>,
) -> Result<Vec<FatFile>, BuildError> {
    let kernel_name = profile.kernel.image.file_name().to_string();
    let mut files = vec![FatFile {
        path: kernel_name.clone(),
        data: found.kernel.1.clone(),
    }];
    let initrd = found.initrd.as_ref().map(|(_, d)| {
        files.push(FatFile {
            path: "initrd.img".into(),
            data: d.clone(),
        });
        "initrd.img".to_string()
    });
    let fdt = found.dtb.as_ref().map(|(_, d)| {
        let p = format!(
            "dtbs/{}",
            profile.kernel.dtb.as_deref().unwrap_or("board.dtb")
        );
        files.push(FatFile {
            path: p.clone(),
            data: d.clone(),
        });
        p
    });
    let boot = BootFiles {
        kernel: kernel_name,
        initrd,
        fdt: if profile.boot.extlinux_fdt {
            fdt.clone()
        } else {
            None
        },
        image: profile.kernel.image,
        cmdline: cmdline.to_string(),
        label: if profile.description.is_empty() {
            profile.name.clone()
        } else {
            profile.description.clone()
        },
    };
    for m in &profile.boot.methods {
        match m {
            BootMethod::Extlinux => files.push(FatFile {
                path: "extlinux/extlinux.conf".into(),
                data: FileData::Bytes(bootconfig::extlinux_conf(&boot).into_bytes()),
            }),
            BootMethod::BootScr => {
                let script = bootconfig::boot_cmd(&BootFiles {
                    fdt: fdt.clone(),
                    ..boot.clone()
                })?;
                let arm64 = profile.arch == crate::profile::Arch::Arm64;
                let scr = bootconfig::script_uimage(
                    script.as_bytes(),
                    "boardsmith boot script",
                    epoch as u32,
                    arm64,
                );
                files.push(FatFile {
                    path: "boot.cmd".into(),
                    data: FileData::Bytes(script.into_bytes()),
                });
                files.push(FatFile {
                    path: "boot.scr".into(),
                    data: FileData::Bytes(scr),
                });
            }
        }
    }
    files.extend(uboot_env_file(profile, found, warnings)?);
    Ok(files)
}

pub(super) fn write_fat(
    sink: &mut ImageSink,
    part: &PlannedPartition,
    epoch: u64,
    files: &[FatFile],
) -> Result<FatSummary, BuildError> {
    let kind = match part.fs {
        Fs::Fat16 => Some(FatKind::Fat16),
        Fs::Fat32 => Some(FatKind::Fat32),
        _ => None,
    };
    let opts = FatOptions {
        size: part.size,
        kind,
        label: part
            .label
            .clone()
            .unwrap_or_else(|| part.name.to_uppercase()),
        volume_id: part.fat_volume_id,
        timestamp: epoch,
        hidden_sectors: (part.start / 512) as u32,
    };
    fat::write(sink, part.start, &opts, files).map_err(|source| BuildError::Fat {
        partition: part.name.clone(),
        source,
    })
}
