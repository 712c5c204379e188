//! Where an image file's partitions are, read from its own MBR or GPT (what `release` inspects and
//! `boot`'s direct kernel start reads its boot partition from).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::gpt::Gpt;
use super::mbr::{Mbr, SECTOR};

#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} has no readable partition table ({reason}); is it an image built by boardsmith?"
    )]
    Table { path: String, reason: String },
}

/// Byte offsets of partitions (1-based numbers) from the image's table.
pub fn partition_offsets(image: &Path) -> Result<Vec<(u32, u64, u64)>, TableError> {
    let path = image.display().to_string();
    let io = |source| TableError::Io {
        path: path.clone(),
        source,
    };
    let f = File::open(image).map_err(io)?;
    let size = f.metadata().map_err(io)?.len();
    let mut sector = [0u8; 512];
    f.read_exact_at(&mut sector, 0).map_err(io)?;
    let mbr = Mbr::parse(&sector).map_err(|e| TableError::Table {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if mbr.is_protective() {
        let gpt = Gpt::read(size / SECTOR, |off, len| {
            let mut buf = vec![0u8; len];
            f.read_exact_at(&mut buf, off).map(|_| buf)
        })
        .map_err(io)?
        .map_err(|e| TableError::Table {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        Ok(gpt
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                e.as_ref().map(|e| {
                    (
                        i as u32 + 1,
                        e.first_lba * SECTOR,
                        (e.last_lba + 1 - e.first_lba) * SECTOR,
                    )
                })
            })
            .collect())
    } else {
        Ok(mbr
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                e.map(|e| {
                    (
                        i as u32 + 1,
                        u64::from(e.start_lba) * SECTOR,
                        u64::from(e.sectors) * SECTOR,
                    )
                })
            })
            .collect())
    }
}
