//! `boardsmith build`: profile + root filesystem tree → `BOARD.img`, `.bmap`, `.sha256`, `.md5`.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::bmap::{Bmap, BmapRange, ChecksumType};
use super::bootconfig::{self, BootFiles};
use super::ext4::{self, Ext4Error, Mke2fs};
use super::fat::{self, FatError, FatFile, FatKind, FatOptions, FatSummary, FileData};
use super::sink::ImageSink;
use super::tree::{ContentStats, RootTree, TreeError};
use super::ubootenv::Env;
use super::vboot::{self, KernelBlob, Keys, VbootError};
use crate::checksum::{ImageDigest, digest_image};
use crate::output::{PendingFile, sync_dir, write_atomic};
use crate::plan::{Layout, PlanError, PlanInput, PlannedPartition, plan};
use crate::profile::{BootMethod, Fs, KernelImage, Profile, Role};
use crate::size::Human;

pub const BMAP_BLOCK: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Tree(#[from] TreeError),
    #[error("no {what} matching `{pattern}` in the root filesystem {rootfs}{hint}")]
    NotInRootfs {
        what: &'static str,
        pattern: String,
        rootfs: PathBuf,
        hint: String,
    },
    #[error(
        "bootloader blob {path} does not carry the expected magic {magic:?} at byte {offset}; is it the right file for this board?"
    )]
    BadMagic {
        path: String,
        magic: String,
        offset: u64,
    },
    #[error("invalid layout: {0}")]
    Plan(#[from] PlanError),
    #[error("boot partition `{partition}`: {source}")]
    Fat {
        partition: String,
        #[source]
        source: FatError,
    },
    #[error(transparent)]
    Ext4(#[from] Ext4Error),
    #[error("signing the kernel partition: {0}")]
    Vboot(#[from] VbootError),
    #[error("{what} is {size} bytes but partition `{partition}` holds {capacity}: {} too large", Human(size - capacity))]
    SourceTooLarge {
        what: String,
        partition: String,
        size: u64,
        capacity: u64,
    },
    #[error("{path}: {source}")]
    UbootEnv {
        path: String,
        #[source]
        source: super::ubootenv::EnvError,
    },
    #[error(
        "the root filesystem's /etc/fstab mounts / from `{found}`, but this image's root partition is {expected}: the root filesystem was built for another plan (another SOURCE_DATE_EPOCH or profile); rebuild it with the same SOURCE_DATE_EPOCH"
    )]
    FstabMismatch { found: String, expected: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the kernel command line contains a control character, {}, at character {at}; it goes into extlinux.conf, boot.scr and the FVP launch script and must be one line of printable text",
        crate::profile::describe_control(*c)
    )]
    CmdlineControl { at: usize, c: char },
    #[error(transparent)]
    BootScr(#[from] bootconfig::Unquotable),
}

impl BuildError {
    /// True when the user's input (profile, rootfs, options) is at fault rather than the machine.
    pub fn is_input_error(&self) -> bool {
        !matches!(
            self,
            BuildError::Io { .. }
                | BuildError::Ext4(Ext4Error::Failed { .. } | Ext4Error::Spawn(_))
                | BuildError::Vboot(VbootError::ToolFailed { .. } | VbootError::Io { .. })
        )
    }
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BuildError {
    let context = context.into();
    move |source| BuildError::Io { context, source }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub rootfs: PathBuf,
    pub out_dir: PathBuf,
    /// Overrides the profile's table.size.
    pub image_size: Option<u64>,
    pub epoch: u64,
    /// Appended to the kernel command line.
    pub cmdline_append: Option<String>,
    /// Override the profile's vboot keyblock and signing key.
    pub vboot_keyblock: Option<PathBuf>,
    pub vboot_signprivate: Option<PathBuf>,
    /// The image holds the root filesystem's password hashes: owner-only unless this is set.
    pub world_readable: bool,
}

/// Progress events for the front end.
#[derive(Debug, Clone)]
pub enum BuildEvent<'a> {
    Phase(&'a str),
    Hashing { done: u64, total: u64 },
}

#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    pub board: String,
    pub image: PathBuf,
    pub bmap: PathBuf,
    pub sha256_file: PathBuf,
    pub md5_file: PathBuf,
    pub image_size: u64,
    pub mapped_bytes: u64,
    pub sha256: String,
    pub md5: String,
    pub kernel: String,
    pub cmdline: String,
    pub rootfs: ContentStats,
    pub fat: Option<FatSummary>,
    /// Size of the signed kernel blob, when the board has one.
    pub kernel_blob_bytes: Option<u64>,
    /// Launch script for Arm's FVP (profiles with an `[fvp]` section).
    pub fvp_script: Option<PathBuf>,
    /// Things the build did differently from what the profile asked, and why.
    pub warnings: Vec<String>,
    pub seconds: f64,
    pub layout: Layout,
}

/// Boot files found in the root filesystem.
struct Found {
    kernel: (String, FileData),
    initrd: Option<(String, FileData)>,
    dtb: Option<(String, FileData)>,
    blob: Option<(String, Vec<u8>)>,
    raw_sources: Vec<(usize, String, FileData)>,
}

fn version_suffix<'a>(path: &'a str, prefix_pattern: &str) -> &'a str {
    // `boot/vmlinuz-*` on `boot/vmlinuz-6.1.0-9-armmp` → `6.1.0-9-armmp`
    let base = path.rsplit('/').next().unwrap_or(path);
    let pat = prefix_pattern.rsplit('/').next().unwrap_or(prefix_pattern);
    match pat.split_once('*') {
        Some((pre, post))
            if base.starts_with(pre)
                && base.ends_with(post)
                && base.len() >= pre.len() + post.len() =>
        {
            &base[pre.len()..base.len() - post.len()]
        }
        _ => "",
    }
}

/// Among matches, the one carrying the kernel's version if any, else the highest version.
fn pick(matches: Vec<String>, pattern: &str, version: &str) -> Option<String> {
    if !version.is_empty()
        && let Some(m) = matches
            .iter()
            .find(|m| version_suffix(m, pattern) == version)
    {
        return Some(m.clone());
    }
    matches.into_iter().last()
}

fn find_boot_files(profile: &Profile, tree: &RootTree) -> Result<Found, BuildError> {
    let missing = |what, pattern: &str, hint: &str| BuildError::NotInRootfs {
        what,
        pattern: pattern.to_string(),
        rootfs: tree.path().to_path_buf(),
        hint: hint.to_string(),
    };
    let k = &profile.kernel;
    let kernels: Vec<String> = tree
        .glob(&k.path)?
        .into_iter()
        .filter(|p| tree.is_file(p).unwrap_or(false))
        .collect();
    let kernel_hint = if k.package.is_empty() {
        String::new()
    } else {
        format!("; install the kernel package ({}) into it", k.package)
    };
    let kernel_path = kernels
        .last()
        .cloned()
        .ok_or_else(|| missing("kernel", &k.path, &kernel_hint))?;
    let version = version_suffix(&kernel_path, &k.path).to_string();
    let kernel_data = tree
        .file_data(&kernel_path)?
        .ok_or_else(|| missing("kernel", &k.path, ""))?;
    let kernel = (
        kernel_path.clone(),
        kernel_for_boot(k.image, kernel_data)
            .map_err(io(format!("reading the kernel {kernel_path}")))?,
    );

    let initrd = match &k.initrd {
        None => None,
        Some(pat) => {
            let m: Vec<String> = tree
                .glob(pat)?
                .into_iter()
                .filter(|p| tree.is_file(p).unwrap_or(false))
                .collect();
            let p = pick(m, pat, &version).ok_or_else(|| {
                missing(
                    "initrd",
                    pat,
                    "; generate one (update-initramfs) or remove kernel.initrd from the profile",
                )
            })?;
            let d = tree
                .file_data(&p)?
                .ok_or_else(|| missing("initrd", pat, ""))?;
            Some((p, d))
        }
    };

    let dtb = match &k.dtb {
        None => None,
        Some(name) => {
            let dirs = tree.glob(&k.dtb_dir)?;
            let dir = pick(dirs, &k.dtb_dir, &version);
            let pattern = format!("{}/{name}", k.dtb_dir);
            let path = dir.map(|d| format!("{d}/{name}"));
            match path
                .as_deref()
                .map(|p| tree.file_data(p))
                .transpose()?
                .flatten()
            {
                Some(d) => Some((path.unwrap_or_default(), d)),
                None => {
                    return Err(missing(
                        "device tree",
                        &pattern,
                        "; the kernel package ships DTBs there",
                    ));
                }
            }
        }
    };

    let blob = match &profile.bootloader {
        None => None,
        Some(b) => {
            let hint = match &b.package {
                Some(p) => format!("; install the bootloader package ({p}) into it"),
                None => String::new(),
            };
            let data = tree
                .read(&b.path.value)?
                .ok_or_else(|| missing("bootloader blob", &b.path.value, &hint))?;
            if let Some(m) = &b.magic {
                let at = m.offset as usize;
                if data.get(at..at + m.text.len()) != Some(m.text.as_bytes()) {
                    return Err(BuildError::BadMagic {
                        path: b.path.value.clone(),
                        magic: m.text.clone(),
                        offset: m.offset,
                    });
                }
            }
            Some((b.path.value.clone(), data))
        }
    };

    let mut raw_sources = Vec::new();
    for (i, p) in profile.partitions.iter().enumerate() {
        if let Some(src) = &p.source {
            let d = tree.file_data(&src.value)?.ok_or_else(|| {
                missing(
                    "partition source",
                    &src.value,
                    &format!(" (named by partition `{}` at {})", p.name.value, src.at()),
                )
            })?;
            raw_sources.push((i, src.value.clone(), d));
        }
    }
    Ok(Found {
        kernel,
        initrd,
        dtb,
        blob,
        raw_sources,
    })
}

/// What the root filesystem's initramfs lacks of the modules derived for the board's root medium (see
/// `rootmods`), and providers nothing is known to drive.
fn initramfs_warnings(profile: &Profile, tree: &RootTree) -> Vec<String> {
    use crate::rootfs::initramfs as irf;
    let (Some(req), Some(pattern)) = (irf::request(profile), profile.kernel.initrd.as_deref())
    else {
        return Vec::new();
    };
    let files = irf::TreeFiles(tree);
    let report = match crate::rootmods::analyze(&files, &req) {
        Ok(r) => r,
        Err(e) => {
            return vec![format!(
                "cannot check the initramfs against the board's device tree: {e}"
            )];
        }
    };
    let mut out = Vec::new();
    let how = format!(
        "`boardsmith initramfs-modules {} --rootfs {}` shows why",
        profile.name,
        tree.path().display()
    );
    match irf::initrd_modules(&files, pattern, &report.kernel_version) {
        Ok(Some((path, present))) => {
            let lacking = irf::missing(&report, &present);
            if !lacking.is_empty() {
                out.push(format!(
                    "the initramfs {path} lacks modules the root device ({}) needs: {}; the board will likely stop at \"root not mounted\" ({how}; `boardsmith rootfs` builds an initramfs with them)",
                    report.derivation.medium.describe(),
                    lacking.join(", ")
                ));
            }
        }
        Ok(None) => {}
        Err(e) => out.push(format!("cannot check the initramfs: {e}")),
    }
    if !report.derivation.unresolved.is_empty() {
        out.push(format!(
            "{} providers in the root device's chain are unresolved: {} ({how})",
            report.derivation.unresolved.len(),
            report
                .derivation
                .unresolved
                .iter()
                .map(|u| u.what.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    out
}

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The kernel as the boot partition needs it. U-Boot's `booti` takes only an uncompressed arm64 `Image`,
/// while distributions may ship `vmlinuz` gzip-compressed (Ubuntu's is; Debian's is an uncompressed
/// EFI-stub Image): a gzip `Image` is decompressed. A `zImage` decompresses itself and is copied as is.
fn kernel_for_boot(image: KernelImage, data: FileData) -> std::io::Result<FileData> {
    if image != KernelImage::Image {
        return Ok(data);
    }
    let head: Vec<u8> = match &data {
        FileData::Bytes(b) => b.iter().take(2).copied().collect(),
        FileData::Path(p, _) => {
            let mut h = Vec::with_capacity(2);
            std::io::Read::take(std::fs::File::open(p)?, 2).read_to_end(&mut h)?;
            h
        }
    };
    if head != GZIP_MAGIC {
        return Ok(data);
    }
    let compressed = match data {
        FileData::Bytes(b) => b,
        FileData::Path(p, _) => std::fs::read(p)?,
    };
    let mut out = Vec::with_capacity(compressed.len() * 3);
    flate2::read::MultiGzDecoder::new(compressed.as_slice()).read_to_end(&mut out)?;
    Ok(FileData::Bytes(out))
}

/// A root filesystem whose fstab names a root partition must name this layout's (see `rootfs::fstab`).
fn check_fstab(text: &str, layout: &Layout) -> Result<(), BuildError> {
    use crate::rootfs::fstab;
    if fstab::root_matches(text, layout) == Some(false) {
        let found = fstab::parse(text)
            .into_iter()
            .find(|(_, m)| m == "/")
            .map(|(s, _)| s)
            .unwrap_or_default();
        let expected = layout
            .partition(Role::Root)
            .map(|p| {
                let label = p
                    .label
                    .as_ref()
                    .map(|l| format!(" or LABEL={l}"))
                    .unwrap_or_default();
                format!("PARTUUID={}{label}", p.partuuid)
            })
            .unwrap_or_default();
        return Err(BuildError::FstabMismatch { found, expected });
    }
    Ok(())
}

/// The kernel command line for this layout.
pub fn kernel_cmdline(profile: &Profile, layout: &Layout, append: Option<&str>) -> String {
    let root = layout
        .partition(Role::Root)
        .map(|p| format!("PARTUUID={}", p.partuuid))
        .unwrap_or_else(|| "/dev/root".into());
    let mut cmd = profile
        .kernel
        .cmdline
        .value
        .replace("{console}", &profile.console)
        .replace("{root}", &root);
    if let Some(v) = &profile.display.video {
        cmd.push_str(&format!(" video={v}"));
    }
    if let Some(a) = append
        && !a.trim().is_empty()
    {
        cmd.push(' ');
        cmd.push_str(a.trim());
    }
    cmd
}

/// The U-Boot environment file the profile asks for: the blob's default environment with `set` applied.
/// A blob without a recognisable default environment (compressed U-Boot, or not U-Boot) gets no file:
/// U-Boot then boots with its built-in environment, only slower; the build says so in a warning.
fn uboot_env_file(
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
        Err(e @ super::ubootenv::EnvError::NotFound) => {
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

fn boot_partition_files(
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

/// The FVP launch script's path for a board in a directory.
pub fn fvp_script_path(out_dir: &Path, board: &str) -> PathBuf {
    out_dir.join(format!("{board}.fvp.sh"))
}

/// Paths of the four outputs for a board in a directory.
pub fn output_paths(out_dir: &Path, board: &str) -> [PathBuf; 4] {
    let img = out_dir.join(format!("{board}.img"));
    [
        img.clone(),
        out_dir.join(format!("{board}.img.bmap")),
        out_dir.join(format!("{board}.img.sha256")),
        out_dir.join(format!("{board}.img.md5")),
    ]
}

pub fn build(
    profile: &Profile,
    req: &BuildRequest,
    on: &dyn Fn(BuildEvent<'_>),
) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    on(BuildEvent::Phase("reading the root filesystem"));
    let tree = RootTree::open(&req.rootfs)?;
    let found = find_boot_files(profile, &tree)?;
    let initramfs_warnings = initramfs_warnings(profile, &tree);
    let stats = tree.stats()?;
    if profile.partition(Role::Root).is_some() {
        ext4::check_mke2fs()?;
    }

    let layout = plan(
        profile,
        &PlanInput {
            image_size: req.image_size,
            fill_content: Some(ext4::auto_size(&stats)),
            blob_size: found.blob.as_ref().map(|(_, b)| b.len() as u64),
            epoch: req.epoch,
        },
    )?;
    let cmdline = kernel_cmdline(profile, &layout, req.cmdline_append.as_deref());
    // The profile's strings and --cmdline-append are checked where they are read; this guards
    // every other way a request can be made.
    if let Some((at, c)) = crate::profile::control_char(&cmdline) {
        return Err(BuildError::CmdlineControl { at, c });
    }
    if profile.boot.methods.contains(&BootMethod::BootScr) {
        let dtb = profile.kernel.dtb.as_deref().unwrap_or_default();
        for (what, value) in [
            ("the kernel command line", cmdline.as_str()),
            ("kernel.dtb", dtb),
        ] {
            if bootconfig::uboot_quote(value).is_none() {
                return Err(bootconfig::Unquotable {
                    what,
                    value: value.to_string(),
                }
                .into());
            }
        }
    }
    let vboot_keys = profile.vboot.as_ref().map(|v| {
        Keys::from_profile(
            v,
            req.vboot_keyblock.as_deref(),
            req.vboot_signprivate.as_deref(),
        )
    });
    if let Some(k) = &vboot_keys {
        k.check()?;
    }
    if let Some(fstab) = tree.read("etc/fstab")? {
        check_fstab(&String::from_utf8_lossy(&fstab), &layout)?;
    }

    let created = crate::signals::create_dir_all_tracked(&req.out_dir)
        .map_err(io(format!("creating {}", req.out_dir.display())))?;
    let [img_path, bmap_path, sha_path, md5_path] = output_paths(&req.out_dir, &profile.name);
    let (pending_img, file) =
        PendingFile::create_with_mode(&img_path, crate::output::artefact_mode(req.world_readable))
            .map_err(io(format!("creating {}", img_path.display())))?;
    let work = tempdir_in(&req.out_dir, &profile.name).map_err(io("creating a work directory"))?;
    let mut sink = ImageSink::new(file, layout.image_size).map_err(io("sizing the image file"))?;
    let needs_blob = layout.partitions.iter().any(|p| {
        p.role == Role::Kernel
            && !found
                .raw_sources
                .iter()
                .any(|(i, _, _)| *i == (p.number - 1) as usize)
    });
    let kernel_blob = match (&vboot_keys, needs_blob) {
        (Some(keys), true) => {
            on(BuildEvent::Phase(
                "signing the kernel partition (mkimage, vbutil_kernel)",
            ));
            Some(make_kernel_blob(
                profile,
                &found,
                &cmdline,
                keys,
                req.epoch,
                work.path(),
            )?)
        }
        _ => None,
    };

    on(BuildEvent::Phase("writing the partition table"));
    if let Some(mbr) = layout.mbr() {
        let mut sector = [0u8; 512];
        mbr.encode_into(&mut sector);
        sink.write_at(0, &sector).map_err(io("writing the MBR"))?;
    }
    if let Some(gpt) = layout.gpt() {
        for (off, bytes) in gpt.encode() {
            sink.write_at(off, &bytes).map_err(io("writing the GPT"))?;
        }
    }
    if let (Some((_, data)), Some(b)) = (&found.blob, &layout.bootloader) {
        on(BuildEvent::Phase("writing the bootloader"));
        sink.write_at(b.offset, data)
            .map_err(io("writing the bootloader blob"))?;
    }

    let mut fat_summary = None;
    let mut warnings = initramfs_warnings;
    for part in &layout.partitions {
        match (part.role, part.fs) {
            (Role::Boot, _) => {
                on(BuildEvent::Phase("writing the boot partition"));
                let files =
                    boot_partition_files(profile, &found, &cmdline, req.epoch, &mut warnings)?;
                fat_summary = Some(write_fat(&mut sink, part, req.epoch, &files)?);
            }
            (Role::Root, _) => {
                on(BuildEvent::Phase("writing the root filesystem (mke2fs -d)"));
                // mke2fs writes through its own descriptor; flush ours first.
                sink.file().sync_data().map_err(io("syncing the image"))?;
                Mke2fs {
                    image: pending_img.temp_path(),
                    offset: part.start,
                    size: part.size,
                    source: &req.rootfs,
                    label: part.label.as_deref(),
                    uuid: part.fs_uuid,
                    hash_seed: crate::ids::Ids::new(&profile.name, req.epoch)
                        .guid("ext4 hash seed"),
                    epoch: req.epoch,
                    partition: &part.name,
                    workdir: work.path(),
                    stats,
                }
                .run()?;
                sink.record_external(part.start, part.end())
                    .map_err(io("mapping the root filesystem"))?;
            }
            (_, Fs::Raw) => {
                let index = (part.number - 1) as usize;
                let (what, bytes) = match found.raw_sources.iter().find(|(i, _, _)| *i == index) {
                    Some((_, src, FileData::Bytes(b))) => {
                        (format!("{src} (from the root filesystem)"), b.clone())
                    }
                    Some((_, src, FileData::Path(p, _))) => (
                        format!("{src} (from the root filesystem)"),
                        std::fs::read(p).map_err(io(format!("reading {}", p.display())))?,
                    ),
                    None => match &kernel_blob {
                        Some(b) if part.role == Role::Kernel => {
                            ("the signed kernel blob".to_string(), b.clone())
                        }
                        _ => continue,
                    },
                };
                if bytes.len() as u64 > part.size {
                    return Err(BuildError::SourceTooLarge {
                        what,
                        partition: part.name.clone(),
                        size: bytes.len() as u64,
                        capacity: part.size,
                    });
                }
                on(BuildEvent::Phase("writing raw partitions"));
                sink.write_at(part.start, &bytes)
                    .map_err(io("writing a raw partition"))?;
            }
            (_, Fs::Vfat | Fs::Fat16 | Fs::Fat32) => {
                write_fat(&mut sink, part, req.epoch, &[])?;
            }
            (_, Fs::Ext4) => {
                let empty = work.path().join("empty");
                std::fs::create_dir_all(&empty).map_err(io("creating an empty directory"))?;
                Mke2fs {
                    image: pending_img.temp_path(),
                    offset: part.start,
                    size: part.size,
                    source: &empty,
                    label: part.label.as_deref(),
                    uuid: part.fs_uuid,
                    hash_seed: part.fs_uuid,
                    epoch: req.epoch,
                    partition: &part.name,
                    workdir: work.path(),
                    stats: ContentStats::default(),
                }
                .run()?;
                sink.record_external(part.start, part.end())
                    .map_err(io("mapping a filesystem"))?;
            }
            (_, Fs::None) => {}
        }
    }
    sink.file().sync_all().map_err(io("syncing the image"))?;

    on(BuildEvent::Phase("hashing (bmap, sha256, md5)"));
    let (file, written) = sink.into_parts();
    let blocks = written.to_blocks(BMAP_BLOCK, layout.image_size);
    let ranges: Vec<(u64, u64)> = blocks.iter().collect();
    let data = crate::sparse::data_extents(&file, 0, layout.image_size)
        .map_err(io("reading the image layout"))?;
    let digest: ImageDigest =
        digest_image(&file, layout.image_size, &data, &ranges).map_err(io("hashing the image"))?;
    let bmap = Bmap {
        image_size: layout.image_size,
        block_size: BMAP_BLOCK,
        checksum_type: ChecksumType::Sha256,
        ranges: ranges
            .iter()
            .zip(&digest.range_sha256)
            .map(|(&(s, e), h)| BmapRange {
                first: s / BMAP_BLOCK,
                last: e.div_ceil(BMAP_BLOCK) - 1,
                checksum: Some(h.clone()),
            })
            .collect(),
    };
    drop(file);

    on(BuildEvent::Phase("writing bmap and checksums"));
    let img_name = format!("{}.img", profile.name);
    let pending_bmap = write_atomic(&bmap_path, bmap.to_xml().as_bytes())
        .map_err(io(format!("writing {}", bmap_path.display())))?;
    let pending_sha = write_atomic(
        &sha_path,
        format!("{}  {img_name}\n", digest.sha256).as_bytes(),
    )
    .map_err(io(format!("writing {}", sha_path.display())))?;
    let pending_md5 = write_atomic(
        &md5_path,
        format!("{}  {img_name}\n", digest.md5).as_bytes(),
    )
    .map_err(io(format!("writing {}", md5_path.display())))?;
    // The image is renamed last: its presence under the final name means everything is there.
    let fvp_path = fvp_script_path(&req.out_dir, &profile.name);
    let fvp_pending = match &profile.fvp {
        None => None,
        Some(fvp) => {
            let kernel = profile.kernel.image.file_name();
            let dtb = found
                .dtb
                .as_ref()
                .and(profile.kernel.dtb.as_ref())
                .map(|d| format!("dtbs/{d}"));
            let script = super::fvp::launch_script(
                fvp,
                &super::fvp::FvpImage {
                    image: &img_name,
                    boot_offset: layout.partition(Role::Boot).map(|p| p.start),
                    kernel,
                    initrd: found.initrd.as_ref().map(|_| "initrd.img"),
                    dtb: dtb.as_deref(),
                    cmdline: &cmdline,
                },
            );
            let pending = write_atomic(&fvp_path, script.as_bytes())
                .map_err(io(format!("writing {}", fvp_path.display())))?;
            std::fs::set_permissions(
                pending.temp_path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )
            .map_err(io(format!("making {} executable", fvp_path.display())))?;
            Some(pending)
        }
    };
    let fvp_script = fvp_pending.as_ref().map(|p| p.dest().to_path_buf());
    let mut pending = vec![pending_bmap, pending_sha, pending_md5];
    pending.extend(fvp_pending);
    pending.push(pending_img);
    for p in pending {
        let dest = p.dest().display().to_string();
        p.commit().map_err(io(format!("renaming to {dest}")))?;
    }
    sync_dir(&req.out_dir).map_err(io("syncing the output directory"))?;
    created.keep();

    Ok(BuildReport {
        board: profile.name.clone(),
        image: img_path,
        bmap: bmap_path,
        sha256_file: sha_path,
        md5_file: md5_path,
        image_size: layout.image_size,
        mapped_bytes: bmap.mapped_blocks() * BMAP_BLOCK,
        sha256: digest.sha256,
        md5: digest.md5,
        kernel: found.kernel.0,
        cmdline,
        rootfs: stats,
        fat: fat_summary,
        kernel_blob_bytes: kernel_blob.as_ref().map(|b| b.len() as u64),
        fvp_script,
        warnings,
        seconds: started.elapsed().as_secs_f64(),
        layout,
    })
}

fn make_kernel_blob(
    profile: &Profile,
    found: &Found,
    cmdline: &str,
    keys: &Keys,
    epoch: u64,
    work: &Path,
) -> Result<Vec<u8>, BuildError> {
    let dtb = found
        .dtb
        .as_ref()
        .map(|(_, d)| (profile.kernel.dtb.as_deref().unwrap_or("board.dtb"), d));
    let blob = KernelBlob {
        kernel: &found.kernel.1,
        dtb,
        initrd: found.initrd.as_ref().map(|(_, d)| d),
        cmdline,
        description: &profile.description,
        arch: profile.arch.kernel_arch(),
        epoch,
    };
    Ok(vboot::build_blob(&blob, keys, work)?)
}

/// For `show --rootfs`: the signed kernel blob's size and the partition that holds it, if the board has one.
pub fn kernel_blob_size(
    profile: &Profile,
    rootfs: &Path,
    input: &PlanInput,
) -> Result<Option<(String, u64, u64)>, BuildError> {
    let Some(v) = &profile.vboot else {
        return Ok(None);
    };
    let Some(part) = profile
        .partitions
        .iter()
        .find(|p| p.role == Role::Kernel && p.source.is_none())
    else {
        return Ok(None);
    };
    let tree = RootTree::open(rootfs)?;
    let found = find_boot_files(profile, &tree)?;
    let layout = plan(profile, input)?;
    let cmdline = kernel_cmdline(profile, &layout, None);
    let keys = Keys::from_profile(v, None, None);
    let work = tempdir_in(&std::env::temp_dir(), &profile.name)
        .map_err(io("creating a work directory"))?;
    let blob = make_kernel_blob(profile, &found, &cmdline, &keys, input.epoch, work.path())?;
    let capacity = layout
        .partitions
        .iter()
        .find(|p| p.name == part.name.value)
        .map_or(0, |p| p.size);
    Ok(Some((part.name.value.clone(), blob.len() as u64, capacity)))
}

fn write_fat(
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

/// A private work directory next to the outputs (mode 0700), removed when dropped or on a stop signal.
struct WorkDir {
    path: PathBuf,
    _tracked: crate::signals::Tracked,
}

impl WorkDir {
    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn tempdir_in(dir: &Path, board: &str) -> std::io::Result<WorkDir> {
    use std::os::unix::fs::DirBuilderExt;
    let p = dir.join(format!(".{board}.work-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    let tracked = crate::signals::track_tree(&p);
    std::fs::DirBuilder::new().mode(0o700).create(&p)?;
    Ok(WorkDir {
        path: p,
        _tracked: tracked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn bytes(d: FileData) -> Vec<u8> {
        match d {
            FileData::Bytes(b) => b,
            FileData::Path(p, _) => std::fs::read(p).unwrap(),
        }
    }

    #[test]
    fn gzip_arm64_image_is_decompressed() {
        // An arm64 Image header carries "ARM\x64" at byte 56.
        let mut image = vec![0u8; 4096];
        image[56..60].copy_from_slice(b"ARM\x64");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(&image).unwrap();
        let packed = gz.finish().unwrap();
        assert_eq!(packed[..2], GZIP_MAGIC);

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vmlinuz");
        std::fs::write(&path, &packed).unwrap();
        let from_file = kernel_for_boot(
            KernelImage::Image,
            FileData::Path(path, packed.len() as u64),
        )
        .unwrap();
        assert_eq!(bytes(from_file), image);
        let from_bytes = kernel_for_boot(KernelImage::Image, FileData::Bytes(packed)).unwrap();
        assert_eq!(bytes(from_bytes), image);
    }

    #[test]
    fn uncompressed_image_and_zimage_are_kept() {
        let raw = b"MZ\x40\xfa not compressed".to_vec();
        assert_eq!(
            bytes(kernel_for_boot(KernelImage::Image, FileData::Bytes(raw.clone())).unwrap()),
            raw
        );
        // A zImage decompresses itself: never touched, even if it starts like gzip.
        let gz_like = vec![0x1f, 0x8b, 0, 0];
        assert_eq!(
            bytes(kernel_for_boot(KernelImage::ZImage, FileData::Bytes(gz_like.clone())).unwrap()),
            gz_like
        );
    }

    #[test]
    fn corrupt_gzip_image_is_an_error() {
        let bad = vec![0x1f, 0x8b, 8, 0, 1, 2, 3];
        assert!(kernel_for_boot(KernelImage::Image, FileData::Bytes(bad)).is_err());
    }
}
