//! The disk QEMU boots, never the image itself: either the image opened with `snapshot=on` (QEMU opens it
//! read-only and keeps writes in an unlinked temporary overlay), or, when the machine needs a disk size
//! the image does not have (QEMU's SD card: a power of two), a sparse copy padded with a hole in an
//! unnamed temporary file (O_TMPFILE) that QEMU inherits and that vanishes with the last descriptor —
//! nothing is left behind whatever way boardsmith or QEMU end.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// What QEMU gets as its drive.
#[derive(Debug)]
pub enum Disk {
    /// The image itself, read-only under `snapshot=on`.
    Snapshot(PathBuf),
    /// A padded private copy, passed to QEMU as an inherited descriptor.
    Copy { file: File, size: u64 },
}

impl Disk {
    /// Prepares the drive for `image`; `power_of_two` pads to the next power of two when needed.
    pub fn prepare(image: &Path, size: u64, power_of_two: bool) -> io::Result<Disk> {
        if !power_of_two || size.is_power_of_two() {
            return Ok(Disk::Snapshot(image.to_path_buf()));
        }
        let padded = size
            .checked_next_power_of_two()
            .ok_or_else(|| io::Error::other("image too large to pad to a power of two"))?;
        let src = File::open(image)?;
        let dst = tempfile::tempfile()?;
        dst.set_len(padded)?;
        for (start, end) in crate::disk::sparse::data_extents(&src, 0, size)? {
            copy_range(&src, &dst, start, end)?;
        }
        Ok(Disk::Copy {
            file: dst,
            size: padded,
        })
    }

    /// The descriptor the child must inherit, if any.
    pub fn inherited_fd(&self) -> Option<i32> {
        match self {
            Disk::Snapshot(_) => None,
            Disk::Copy { file, .. } => Some(file.as_raw_fd()),
        }
    }

    /// The `file=...` part of QEMU's `-drive` option (commas in paths doubled, as QEMU requires).
    pub fn drive_file(&self) -> String {
        match self {
            Disk::Snapshot(p) => format!(
                "file={},snapshot=on",
                p.to_string_lossy().replace(',', ",,")
            ),
            Disk::Copy { file, .. } => format!("file=/proc/self/fd/{}", file.as_raw_fd()),
        }
    }

    /// Size QEMU sees, if padded.
    pub fn padded_size(&self) -> Option<u64> {
        match self {
            Disk::Snapshot(_) => None,
            Disk::Copy { size, .. } => Some(*size),
        }
    }
}

/// Copies [start, end) between files at the same offsets: copy_file_range, or read/write where the
/// kernel cannot (different filesystems on old kernels, special files).
fn copy_range(src: &File, dst: &File, start: u64, end: u64) -> io::Result<()> {
    let mut pos = start;
    while pos < end {
        let mut off_in = pos as libc::loff_t;
        let mut off_out = pos as libc::loff_t;
        let len = (end - pos).min(1 << 30) as usize;
        // SAFETY: valid descriptors and offset pointers for the duration of the call.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                &mut off_in,
                dst.as_raw_fd(),
                &mut off_out,
                len,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP) => {
                    copy_plain(src, dst, pos, end)
                }
                Some(libc::EINTR) => continue,
                _ => Err(e),
            };
        }
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "image shrank while being copied",
            ));
        }
        pos += n as u64;
    }
    Ok(())
}

fn copy_plain(src: &File, dst: &File, mut pos: u64, end: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 1 << 20];
    while pos < end {
        let want = (end - pos).min(buf.len() as u64) as usize;
        let n = src.read_at(&mut buf[..want], pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "image shrank while being copied",
            ));
        }
        dst.write_all_at(&buf[..n], pos)?;
        pos += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::FileExt;

    #[test]
    fn power_of_two_images_are_booted_in_place_under_snapshot() {
        let (d, p) = crate::testutil::scratch("a,b.img");
        let disk = Disk::prepare(&p, 1 << 20, true).unwrap();
        assert_eq!(
            disk.drive_file(),
            format!("file={}/a,,b.img,snapshot=on", d.path().display())
        );
        assert!(disk.inherited_fd().is_none());
        let disk = Disk::prepare(&p, 3 << 20, false).unwrap();
        assert!(matches!(disk, Disk::Snapshot(_)));
    }

    #[test]
    fn other_sizes_get_a_padded_sparse_copy_that_leaves_the_image_alone() {
        let (d, p) = crate::testutil::scratch("x.img");
        let f = File::create(&p).unwrap();
        let size = 3 * 1024 * 1024 + 512;
        f.set_len(size).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", size - 4).unwrap();
        drop(f);
        let before = std::fs::read(&p).unwrap();

        let disk = Disk::prepare(&p, size, true).unwrap();
        assert_eq!(disk.padded_size(), Some(4 * 1024 * 1024));
        let Disk::Copy { file, .. } = &disk else {
            panic!("expected a copy")
        };
        assert_eq!(file.metadata().unwrap().len(), 4 * 1024 * 1024);
        // Reading through the path QEMU is given (here: our own /proc/self/fd) sees the copy.
        let path = disk.drive_file().trim_start_matches("file=").to_string();
        let mut copy = Vec::new();
        File::open(&path).unwrap().read_to_end(&mut copy).unwrap();
        assert_eq!(&copy[..size as usize], &before[..]);
        assert!(copy[size as usize..].iter().all(|&b| b == 0));
        // The copy has no name: nothing appeared next to the image, and the image is unchanged.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
        assert_eq!(std::fs::read(&p).unwrap(), before);
    }
}
