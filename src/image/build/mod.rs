//! `boardsmith build`: profile + root filesystem tree → `BOARD.img`, `.bmap`, `.sha256`, `.md5`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

mod bootpart;
mod kernel;
mod rootfiles;

use bootpart::{boot_partition_files, write_fat};
use kernel::make_kernel_blob;
pub use kernel::{kernel_blob_size, kernel_cmdline};
use rootfiles::{Found, check_fstab, find_boot_files, initramfs_warnings};

use super::bmap::{Bmap, BmapRange, ChecksumType};
use super::bootconfig;
use super::ext4::{self, Ext4Error, Mke2fs};
use super::fat::{FatError, FatSummary};
use super::sink::ImageSink;
use super::vboot::{Keys, VbootError};
use crate::checksum::{ImageDigest, digest_image};
use crate::disk::gpt::Guid;
use crate::output::{PendingFile, sync_dir, write_atomic};
use crate::plan::{Layout, PlanError, PlanInput, PlannedPartition, plan};
use crate::profile::{BootMethod, Fs, Profile, Role};
use crate::rootfs::tree::{ContentStats, FileData, RootTree, TreeError};
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

/// Builds the image and its side files (bmap, sums, FVP script) for `profile` from the root
/// filesystem `req.rootfs`, in stages: the inputs read and checked (boot files, layout, command line,
/// signing keys, fstab), the outputs opened, the partition table and bootloader, each partition, the
/// hashing pass, the side files; everything renamed into place last, the image after the rest.
pub fn build(
    profile: &Profile,
    req: &BuildRequest,
    on: &dyn Fn(BuildEvent<'_>),
) -> Result<BuildReport, BuildError> {
    let started = Instant::now();
    on(BuildEvent::Phase("reading the root filesystem"));
    let tree = RootTree::open(&req.rootfs)?;
    let found = find_boot_files(profile, &tree)?;
    let mut warnings = initramfs_warnings(profile, &tree);
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
    check_cmdline(profile, &cmdline)?;
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
    let a = Assembly {
        profile,
        req,
        found: &found,
        layout: &layout,
        cmdline: &cmdline,
        image: pending_img.temp_path(),
        work: &work,
        on,
    };
    let kernel_blob = match &vboot_keys {
        Some(keys) if a.needs_kernel_blob() => Some(a.kernel_blob(keys)?),
        _ => None,
    };
    a.write_table_and_bootloader(&mut sink)?;
    let fat_summary =
        a.write_partitions(&mut sink, stats, kernel_blob.as_deref(), &mut warnings)?;
    sink.file().sync_all().map_err(io("syncing the image"))?;

    on(BuildEvent::Phase("hashing (bmap, sha256, md5)"));
    let (bmap, digest) = hash_image(sink, layout.image_size)?;

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
    let fvp_pending = a.fvp_script(&img_name)?;
    let fvp_script = fvp_pending.as_ref().map(|p| p.dest().to_path_buf());
    // The image is renamed last: its presence under the final name means everything is there.
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

/// The kernel command line goes into boot files: no control character (the profile's strings and
/// `--cmdline-append` are checked where they are read; this guards every other way a request can be
/// made), and for boot.scr it and the device tree's name must be quotable for U-Boot's shell.
fn check_cmdline(profile: &Profile, cmdline: &str) -> Result<(), BuildError> {
    if let Some((at, c)) = crate::profile::control_char(cmdline) {
        return Err(BuildError::CmdlineControl { at, c });
    }
    if profile.boot.methods.contains(&BootMethod::BootScr) {
        let dtb = profile.kernel.dtb.as_deref().unwrap_or_default();
        for (what, value) in [("the kernel command line", cmdline), ("kernel.dtb", dtb)] {
            if bootconfig::uboot_quote(value).is_none() {
                return Err(bootconfig::Unquotable {
                    what,
                    value: value.to_string(),
                }
                .into());
            }
        }
    }
    Ok(())
}

/// What the stages that write the image share.
struct Assembly<'a> {
    profile: &'a Profile,
    req: &'a BuildRequest,
    found: &'a Found,
    layout: &'a Layout,
    cmdline: &'a str,
    /// The image file under its temporary name (mke2fs writes into it through its own descriptor).
    image: &'a Path,
    work: &'a WorkDir,
    on: &'a dyn Fn(BuildEvent<'_>),
}

impl Assembly<'_> {
    /// A kernel partition not filled from the root filesystem gets the signed kernel blob.
    fn needs_kernel_blob(&self) -> bool {
        self.layout.partitions.iter().any(|p| {
            p.role == Role::Kernel
                && !self
                    .found
                    .raw_sources
                    .iter()
                    .any(|(i, _, _)| *i == (p.number - 1) as usize)
        })
    }

    fn kernel_blob(&self, keys: &Keys) -> Result<Vec<u8>, BuildError> {
        (self.on)(BuildEvent::Phase(
            "signing the kernel partition (mkimage, vbutil_kernel)",
        ));
        make_kernel_blob(
            self.profile,
            self.found,
            self.cmdline,
            keys,
            self.req.epoch,
            self.work.path(),
        )
    }

    fn write_table_and_bootloader(&self, sink: &mut ImageSink) -> Result<(), BuildError> {
        (self.on)(BuildEvent::Phase("writing the partition table"));
        if let Some(mbr) = self.layout.mbr() {
            let mut sector = [0u8; 512];
            mbr.encode_into(&mut sector);
            sink.write_at(0, &sector).map_err(io("writing the MBR"))?;
        }
        if let Some(gpt) = self.layout.gpt() {
            for (off, bytes) in gpt.encode() {
                sink.write_at(off, &bytes).map_err(io("writing the GPT"))?;
            }
        }
        if let (Some((_, data)), Some(b)) = (&self.found.blob, &self.layout.bootloader) {
            (self.on)(BuildEvent::Phase("writing the bootloader"));
            sink.write_at(b.offset, data)
                .map_err(io("writing the bootloader blob"))?;
        }
        Ok(())
    }

    /// Every partition by role and filesystem; the boot partition's FAT summary.
    fn write_partitions(
        &self,
        sink: &mut ImageSink,
        stats: ContentStats,
        kernel_blob: Option<&[u8]>,
        warnings: &mut Vec<String>,
    ) -> Result<Option<FatSummary>, BuildError> {
        let epoch = self.req.epoch;
        let mut fat_summary = None;
        for part in &self.layout.partitions {
            match (part.role, part.fs) {
                (Role::Boot, _) => {
                    (self.on)(BuildEvent::Phase("writing the boot partition"));
                    let files = boot_partition_files(
                        self.profile,
                        self.found,
                        self.cmdline,
                        epoch,
                        warnings,
                    )?;
                    fat_summary = Some(write_fat(sink, part, epoch, &files)?);
                }
                (Role::Root, _) => {
                    (self.on)(BuildEvent::Phase("writing the root filesystem (mke2fs -d)"));
                    let seed = crate::disk::ids::Ids::new(&self.profile.name, epoch)
                        .guid("ext4 hash seed");
                    self.mke2fs(
                        sink,
                        part,
                        &self.req.rootfs,
                        seed,
                        stats,
                        "the root filesystem",
                    )?;
                }
                (_, Fs::Raw) => {
                    let Some((what, bytes)) = self.raw_contents(part, kernel_blob)? else {
                        continue;
                    };
                    if bytes.len() as u64 > part.size {
                        return Err(BuildError::SourceTooLarge {
                            what,
                            partition: part.name.clone(),
                            size: bytes.len() as u64,
                            capacity: part.size,
                        });
                    }
                    (self.on)(BuildEvent::Phase("writing raw partitions"));
                    sink.write_at(part.start, &bytes)
                        .map_err(io("writing a raw partition"))?;
                }
                (_, Fs::Vfat | Fs::Fat16 | Fs::Fat32) => {
                    write_fat(sink, part, epoch, &[])?;
                }
                (_, Fs::Ext4) => {
                    let empty = self.work.path().join("empty");
                    std::fs::create_dir_all(&empty).map_err(io("creating an empty directory"))?;
                    let stats = ContentStats::default();
                    self.mke2fs(sink, part, &empty, part.fs_uuid, stats, "a filesystem")?;
                }
                (_, Fs::None) => {}
            }
        }
        Ok(fat_summary)
    }

    /// An ext4 filesystem from `source` into `part`, by mke2fs through its own descriptor (`what`
    /// names it in an error).
    fn mke2fs(
        &self,
        sink: &mut ImageSink,
        part: &PlannedPartition,
        source: &Path,
        hash_seed: Guid,
        stats: ContentStats,
        what: &str,
    ) -> Result<(), BuildError> {
        // mke2fs writes through its own descriptor; flush ours first.
        sink.file().sync_data().map_err(io("syncing the image"))?;
        Mke2fs {
            image: self.image,
            offset: part.start,
            size: part.size,
            source,
            label: part.label.as_deref(),
            uuid: part.fs_uuid,
            hash_seed,
            epoch: self.req.epoch,
            partition: &part.name,
            workdir: self.work.path(),
            stats,
        }
        .run()?;
        sink.record_external(part.start, part.end())
            .map_err(io(format!("mapping {what}")))
    }

    /// What a raw partition holds: a file of the root filesystem, or the signed kernel blob for a
    /// kernel partition; None when neither (left empty).
    fn raw_contents(
        &self,
        part: &PlannedPartition,
        kernel_blob: Option<&[u8]>,
    ) -> Result<Option<(String, Vec<u8>)>, BuildError> {
        let index = (part.number - 1) as usize;
        Ok(
            match self.found.raw_sources.iter().find(|(i, _, _)| *i == index) {
                Some((_, src, FileData::Bytes(b))) => {
                    Some((format!("{src} (from the root filesystem)"), b.clone()))
                }
                Some((_, src, FileData::Path(p, _))) => Some((
                    format!("{src} (from the root filesystem)"),
                    std::fs::read(p).map_err(io(format!("reading {}", p.display())))?,
                )),
                None => match kernel_blob {
                    Some(b) if part.role == Role::Kernel => {
                        Some(("the signed kernel blob".to_string(), b.to_vec()))
                    }
                    _ => None,
                },
            },
        )
    }

    /// `[fvp]`: the launch script, executable, under a temporary name.
    fn fvp_script(&self, img_name: &str) -> Result<Option<PendingFile>, BuildError> {
        let Some(fvp) = &self.profile.fvp else {
            return Ok(None);
        };
        let fvp_path = fvp_script_path(&self.req.out_dir, &self.profile.name);
        let kernel = self.profile.kernel.image.file_name();
        let dtb = self
            .found
            .dtb
            .as_ref()
            .and(self.profile.kernel.dtb.as_ref())
            .map(|d| format!("dtbs/{d}"));
        let script = super::fvp::launch_script(
            fvp,
            &super::fvp::FvpImage {
                image: img_name,
                boot_offset: self.layout.partition(Role::Boot).map(|p| p.start),
                kernel,
                initrd: self.found.initrd.as_ref().map(|_| "initrd.img"),
                dtb: dtb.as_deref(),
                cmdline: self.cmdline,
            },
        );
        let pending = write_atomic(&fvp_path, script.as_bytes())
            .map_err(io(format!("writing {}", fvp_path.display())))?;
        std::fs::set_permissions(
            pending.temp_path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(io(format!("making {} executable", fvp_path.display())))?;
        Ok(Some(pending))
    }
}

/// The hashing pass over the finished image: the bmap of the written ranges (each with its sha256)
/// and the whole image's sha256 and md5.
fn hash_image(sink: ImageSink, image_size: u64) -> Result<(Bmap, ImageDigest), BuildError> {
    let (file, written) = sink.into_parts();
    let blocks = written.to_blocks(BMAP_BLOCK, image_size);
    let ranges = fit_ranges(blocks.iter().collect(), crate::image::bmap::MAX_RANGES);
    let data = crate::disk::sparse::data_extents(&file, 0, image_size)
        .map_err(io("reading the image layout"))?;
    let digest: ImageDigest =
        digest_image(&file, image_size, &data, &ranges).map_err(io("hashing the image"))?;
    let bmap = Bmap {
        image_size,
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
    Ok((bmap, digest))
}

/// `ranges` (sorted, disjoint byte ranges) in at most `max` ranges, so that `write` (which accepts
/// at most [`crate::image::bmap::MAX_RANGES`]) takes the bmap: the narrowest gaps are mapped too,
/// doubling the gap allowed until the count fits. A mapped gap is only written zeros, checked like
/// any other range.
fn fit_ranges(ranges: Vec<(u64, u64)>, max: usize) -> Vec<(u64, u64)> {
    let mut out = ranges;
    let mut gap = BMAP_BLOCK;
    while out.len() > max.max(1) {
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(out.len());
        for (s, e) in out {
            match merged.last_mut() {
                Some(last) if s.saturating_sub(last.1) <= gap => last.1 = e,
                _ => merged.push((s, e)),
            }
        }
        out = merged;
        gap = gap.saturating_mul(2);
    }
    out
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

    /// Ranges beyond the limit are merged across their narrowest gaps, never dropped: everything
    /// mapped before is still mapped, and the count fits.
    #[test]
    fn too_many_ranges_are_merged_across_the_narrowest_gaps() {
        let b = BMAP_BLOCK;
        // Pairs one block apart, the pairs 8 blocks apart.
        let ranges: Vec<(u64, u64)> = (0..8)
            .flat_map(|i| {
                [
                    (i * 10 * b, (i * 10 + 1) * b),
                    ((i * 10 + 2) * b, (i * 10 + 3) * b),
                ]
            })
            .collect();
        assert_eq!(fit_ranges(ranges.clone(), 16), ranges);
        let fitted = fit_ranges(ranges.clone(), 8);
        assert_eq!(fitted.len(), 8);
        assert_eq!(fitted[0], (0, 3 * b));
        for (s, e) in &ranges {
            assert!(
                fitted.iter().any(|(fs, fe)| fs <= s && e <= fe),
                "{s}..{e} lost"
            );
        }
        assert_eq!(fit_ranges(ranges, 1), vec![(0, 73 * b)]);
    }
}
