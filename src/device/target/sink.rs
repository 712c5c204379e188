//! The target opened for writing and reading back: aligned direct writes where possible, writeback
//! kicked in windows, the page cache dropped behind.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use super::super::blockdev;
use super::super::buffers::{ALIGN, ZEROS, ZEROS_LEN};

/// The target opened for writing and reading back.
pub struct Sink {
    pub(super) plain: File,
    pub(super) direct: Option<File>,
    pub(super) direct_writes: bool,
    pub(super) sector: u64,
    pub is_device: bool,
}

/// Bytes between writeback kicks (files) or waits (buffered device writes), so dirty data never
/// piles up and Ctrl-C never waits minutes for a flush.
pub const FLUSH_WINDOW: u64 = 64 << 20;

impl Sink {
    fn aligned(&self, offset: u64, data: &[u8]) -> bool {
        offset.is_multiple_of(self.sector)
            && (data.len() as u64).is_multiple_of(self.sector)
            && (data.as_ptr() as u64).is_multiple_of(self.sector)
    }

    /// Writes `data` at `offset`: O_DIRECT on a device when aligned, buffered otherwise.
    pub fn write_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        match &self.direct {
            Some(d) if self.direct_writes && self.aligned(offset, data) => {
                d.write_all_at(data, offset)
            }
            _ => self.plain.write_all_at(data, offset),
        }
    }

    /// Writes `len` zero bytes at `offset` (devices, where skipping would leave stale data).
    pub fn write_zeros(&self, mut offset: u64, len: u64) -> io::Result<()> {
        let end = offset + len;
        while offset < end {
            // Stay on ZEROS_LEN boundaries so pieces remain aligned.
            let n = (end - offset).min(ZEROS_LEN as u64 - offset % ZEROS_LEN as u64);
            self.write_at(&ZEROS.0[..n as usize], offset)?;
            offset += n;
        }
        Ok(())
    }

    /// Starts (files) or completes (buffered device writes) writeback of `[start, end)`.
    pub fn kick_writeback(&self, start: u64, end: u64) {
        let flags = if self.is_device {
            libc::SYNC_FILE_RANGE_WAIT_BEFORE
                | libc::SYNC_FILE_RANGE_WRITE
                | libc::SYNC_FILE_RANGE_WAIT_AFTER
        } else {
            libc::SYNC_FILE_RANGE_WRITE
        };
        // SAFETY: sync_file_range on a valid descriptor; a failure only loses the hint.
        unsafe {
            libc::sync_file_range(
                self.plain.as_raw_fd(),
                start as libc::off64_t,
                (end - start) as libc::off64_t,
                flags,
            );
        }
    }

    /// Everything written so far reaches the medium (device caches included).
    pub fn flush(&self) -> io::Result<()> {
        self.plain.sync_data()?;
        if let Some(d) = &self.direct {
            d.sync_data()?;
        }
        Ok(())
    }

    /// Sets a file target's final length (streams of unknown size; never below what was written).
    pub fn set_file_len(&self, len: u64) -> io::Result<()> {
        if !self.is_device {
            self.plain.set_len(len)?;
        }
        Ok(())
    }

    /// Drops cached pages of `[start, end)` so the next read comes from the medium.
    pub fn drop_cache(&self, start: u64, end: u64) {
        // Only a hint: a failure leaves pages cached, and the read-back then reads them.
        // A zero length (None) means "to the end of the file", as for posix_fadvise.
        let len = std::num::NonZeroU64::new(end.saturating_sub(start));
        let _ = rustix::fs::fadvise(&self.plain, start, len, rustix::fs::Advice::DontNeed);
    }

    /// Reads back with the page cache bypassed: O_DIRECT when aligned, otherwise a read after the
    /// range's cached pages were dropped (the caller flushed first).
    pub fn read_back(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match &self.direct {
            Some(d) if self.aligned(offset, buf) => d.read_exact_at(buf, offset),
            _ => {
                self.drop_cache(offset, offset + buf.len() as u64);
                self.plain.read_exact_at(buf, offset)
            }
        }
    }

    /// Whether reads bypass the cache with O_DIRECT (else fdatasync + POSIX_FADV_DONTNEED).
    pub fn direct_reads(&self) -> bool {
        self.direct.is_some()
    }

    /// Whether reading `len` bytes at `offset` into an aligned buffer goes through O_DIRECT.
    pub fn reads_direct(&self, offset: u64, len: usize) -> bool {
        self.direct.is_some()
            && offset.is_multiple_of(self.sector)
            && (len as u64).is_multiple_of(self.sector)
    }

    /// Data extents of a file target within `[start, end)` (holes read as zeros and are not read);
    /// a device is all data.
    pub fn data_extents(&self, start: u64, end: u64) -> io::Result<Vec<(u64, u64)>> {
        if self.is_device {
            Ok(vec![(start, end)])
        } else {
            crate::disk::sparse::data_extents(&self.plain, start, end)
        }
    }

    /// The exclusively opened device, for the partition table re-read.
    pub fn reread_partitions(&self) -> io::Result<()> {
        blockdev::reread_partitions(&self.plain)
    }

    pub fn alignment(&self) -> u64 {
        self.sector.max(ALIGN as u64)
    }
}
