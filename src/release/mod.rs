//! `boardsmith release`: a built image → compressed artefacts (xz in independent blocks, zstd, 7z),
//! `SHA256SUMS`/`MD5SUMS` over them, the `.bmap` beside them, `BOARD-release.json` and `BOARD-release.md`
//! release notes computed from what is really in the image. Reproducible for the same image and
//! SOURCE_DATE_EPOCH; nothing appears under a final name until complete.

pub mod compress;
pub mod inspect;
mod notes;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::output::{PendingFile, sync_dir, write_atomic};
use crate::profile::{Profile, Role};
use compress::{CompressError, Digested};
pub use compress::{Format, Settings};
use inspect::{ImageFacts, InspectError};

#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(
        "image {path} not found; build it first (boardsmith build {board} -o DIR) or pass --image"
    )]
    NoImage { path: PathBuf, board: String },
    #[error(
        "block map {path} not found next to the image; rebuild the image (boardsmith build writes it)"
    )]
    NoBmap { path: PathBuf },
    #[error(
        "{path} says the image's SHA-256 is {expected}, but the image now hashes to {actual}: it changed after the build; rebuild it"
    )]
    ImageChanged {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(transparent)]
    Compress(#[from] CompressError),
    #[error(transparent)]
    Inspect(#[from] InspectError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl ReleaseError {
    pub fn is_input_error(&self) -> bool {
        matches!(
            self,
            ReleaseError::NoImage { .. }
                | ReleaseError::NoBmap { .. }
                | ReleaseError::ImageChanged { .. }
        ) || matches!(self, ReleaseError::Inspect(e) if e.is_input_error())
    }
}

#[derive(Debug, Clone)]
pub struct ReleaseRequest {
    pub image: PathBuf,
    pub out_dir: PathBuf,
    pub formats: Vec<Format>,
    pub settings: Settings,
}

#[derive(Debug, Clone, Serialize)]
pub struct Artefact {
    pub name: String,
    pub kind: String,
    #[serde(flatten)]
    pub digest: Digested,
}

/// The release manifest (`BOARD-release.json`).
#[derive(Debug, Clone, Serialize)]
pub struct ReleaseManifest {
    pub board: String,
    pub description: String,
    pub arch: String,
    pub source_date_epoch: u64,
    pub image: Artefact,
    pub artefacts: Vec<Artefact>,
    pub profile_files: Vec<String>,
    pub facts: ImageFacts,
    pub kernel_fragments: Vec<notes::FragmentReport>,
    pub features: Vec<String>,
    pub changelog: Vec<String>,
    pub known_issues: Vec<String>,
}

#[derive(Debug, Clone)]
pub enum ReleaseEvent<'a> {
    Artefact(&'a str),
    Bytes { done: u64, total: u64 },
}

/// The image hashed once, and checked against the sum written beside it at build time.
fn hash_image(image: &Path, total: u64) -> Result<crate::checksum::ImageDigest, ReleaseError> {
    let io = |context: String| move |source| ReleaseError::Io { context, source };
    let open = || std::fs::File::open(image).map_err(io(format!("opening {}", image.display())));
    let extents = crate::disk::sparse::data_extents(&open()?, 0, total)
        .map_err(io("reading the image's extents".into()))?;
    let digest = crate::checksum::digest_image(&open()?, total, &extents, &[])
        .map_err(io(format!("hashing {}", image.display())))?;
    let sum_file = PathBuf::from(format!("{}.sha256", image.display()));
    if let Ok(text) = std::fs::read_to_string(&sum_file) {
        let expected = text
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        if expected != digest.sha256 {
            return Err(ReleaseError::ImageChanged {
                path: sum_file,
                expected,
                actual: digest.sha256,
            });
        }
    }
    Ok(digest)
}

/// The bootloader's package, offset and the end of the area it may fill (up to the first partition),
/// for the release notes' check of the blob in the image.
fn bootloader_span(profile: &Profile, total: u64, epoch: u64) -> Option<(String, u64, u64)> {
    let b = profile.bootloader.as_ref()?;
    let pkg = b.package.clone()?;
    let first = crate::plan::plan(
        profile,
        &crate::plan::PlanInput {
            image_size: Some(total),
            epoch,
            ..Default::default()
        },
    )
    .ok()
    .and_then(|l| l.bootloader.map(|b| b.limit))
    .unwrap_or(b.offset.value.saturating_add(1 << 20));
    Some((pkg, b.offset.value, first.min(total)))
}

pub fn release(
    profile: &Profile,
    req: &ReleaseRequest,
    on: &dyn Fn(ReleaseEvent<'_>),
) -> Result<ReleaseManifest, ReleaseError> {
    let io = |context: String| move |source| ReleaseError::Io { context, source };
    if !req.image.is_file() {
        return Err(ReleaseError::NoImage {
            path: req.image.clone(),
            board: profile.name.clone(),
        });
    }
    let image_name = req
        .image
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bmap_src = PathBuf::from(format!("{}.bmap", req.image.display()));
    if !bmap_src.is_file() {
        return Err(ReleaseError::NoBmap { path: bmap_src });
    }
    let total = std::fs::metadata(&req.image)
        .map_err(io(format!("reading {}", req.image.display())))?
        .len();

    let image_digest = hash_image(&req.image, total)?;
    // What the notes will say, read (and checked: the image's files are untrusted) before anything
    // is written.
    let root_number = profile.partition(Role::Root).map(|(i, _)| i as u32 + 1);
    let bootloader = bootloader_span(profile, total, req.settings.epoch);
    let facts = inspect::inspect(
        &req.image,
        root_number,
        &profile.kernel.package,
        bootloader.as_ref().map(|(p, o, l)| (p.as_str(), *o, *l)),
    )?;
    let created = crate::signals::create_dir_all_tracked(&req.out_dir)
        .map_err(io(format!("creating {}", req.out_dir.display())))?;

    let mut pending: Vec<PendingFile> = Vec::new();
    let mut artefacts = Vec::new();
    for &format in &req.formats {
        let name = format!("{image_name}.{}", format.extension());
        on(ReleaseEvent::Artefact(&name));
        let (p, digest) = compress::compress(
            &req.image,
            &image_name,
            &req.out_dir.join(&name),
            format,
            &req.settings,
            &|done| on(ReleaseEvent::Bytes { done, total }),
        )?;
        pending.push(p);
        artefacts.push(Artefact {
            name,
            kind: format.extension().to_string(),
            digest,
        });
    }
    let bmap_name = format!("{image_name}.bmap");
    let bmap_bytes =
        std::fs::read(&bmap_src).map_err(io(format!("reading {}", bmap_src.display())))?;
    pending.push(
        write_atomic(&req.out_dir.join(&bmap_name), &bmap_bytes)
            .map_err(io(format!("writing {bmap_name}")))?,
    );
    artefacts.push(Artefact {
        name: bmap_name,
        kind: "bmap".into(),
        digest: digest_bytes(&bmap_bytes),
    });

    on(ReleaseEvent::Artefact("release notes"));
    let features: Vec<String> = facts
        .manifest
        .as_ref()
        .map(|m| m.features.clone())
        .unwrap_or_default();
    let kernel_fragments =
        notes::fragment_reports(profile, &features, facts.kernel_config.as_deref());
    let manifest = ReleaseManifest {
        board: profile.name.clone(),
        description: profile.description.clone(),
        arch: profile.arch.debian().to_string(),
        source_date_epoch: req.settings.epoch,
        image: Artefact {
            name: image_name.clone(),
            kind: "raw image".into(),
            digest: Digested {
                size: total,
                sha256: image_digest.sha256.clone(),
                md5: image_digest.md5.clone(),
            },
        },
        artefacts,
        profile_files: profile.sources.iter().map(|s| s.name.clone()).collect(),
        facts,
        kernel_fragments,
        features,
        changelog: profile.release.changelog.clone(),
        known_issues: profile.release.known_issues.clone(),
    };

    let mut sha = String::new();
    let mut md5 = String::new();
    for a in &manifest.artefacts {
        sha.push_str(&format!("{}  {}\n", a.digest.sha256, a.name));
        md5.push_str(&format!("{}  {}\n", a.digest.md5, a.name));
    }
    let w = |name: &str, data: &[u8]| {
        write_atomic(&req.out_dir.join(name), data).map_err(io(format!("writing {name}")))
    };
    pending.push(w("SHA256SUMS", sha.as_bytes())?);
    pending.push(w("MD5SUMS", md5.as_bytes())?);
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| ReleaseError::Io {
        context: "encoding JSON".into(),
        source: e.into(),
    })?;
    pending.push(w(
        &format!("{}-release.json", profile.name),
        format!("{json}\n").as_bytes(),
    )?);
    pending.push(w(
        &format!("{}-release.md", profile.name),
        notes::markdown(profile, &manifest).as_bytes(),
    )?);
    for p in pending {
        let dest = p.dest().display().to_string();
        p.commit().map_err(io(format!("renaming to {dest}")))?;
    }
    sync_dir(&req.out_dir).map_err(io("syncing the release directory".into()))?;
    created.keep();
    Ok(manifest)
}

fn digest_bytes(b: &[u8]) -> Digested {
    use sha2::Digest;
    Digested {
        size: b.len() as u64,
        sha256: hex::encode(sha2::Sha256::digest(b)),
        md5: hex::encode(md5::Md5::digest(b)),
    }
}

/// Default image path for a board built into `dir`.
pub fn default_image(dir: &Path, board: &str) -> PathBuf {
    dir.join(format!("{board}.img"))
}
