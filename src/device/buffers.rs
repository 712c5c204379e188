//! A fixed pool of large, page-aligned buffers (aligned so they can be used for O_DIRECT I/O). The
//! pool is the writer's whole data memory: a stage that wants a buffer waits until one comes back,
//! so memory stays fixed whatever the image size.

use std::alloc::{Layout, alloc_zeroed, dealloc};
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Alignment of every buffer: enough for O_DIRECT on 4 KiB-sector devices.
pub const ALIGN: usize = 4096;

/// One heap allocation aligned to [`ALIGN`].
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: AlignedBuf owns its allocation exclusively, like a Box<[u8]>.
unsafe impl Send for AlignedBuf {}
// SAFETY: shared access only hands out &[u8].
unsafe impl Sync for AlignedBuf {}

impl AlignedBuf {
    /// A zeroed buffer of at least `len` bytes (rounded up to a non-zero multiple of [`ALIGN`]); an
    /// error if no allocation can be that large.
    pub fn new(len: usize) -> io::Result<AlignedBuf> {
        let too_large = || {
            io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!("a buffer of {len} bytes is larger than any allocation can be"),
            )
        };
        let len = len
            .max(ALIGN)
            .checked_next_multiple_of(ALIGN)
            .ok_or_else(too_large)?;
        let layout = Layout::from_size_align(len, ALIGN).map_err(|_| too_large())?;
        // SAFETY: layout has a non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(ptr) else {
            std::alloc::handle_alloc_error(layout)
        };
        Ok(AlignedBuf { ptr, len })
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if let Ok(layout) = Layout::from_size_align(self.len, ALIGN) {
            // SAFETY: allocated in `new` with this layout.
            unsafe { dealloc(self.ptr.as_ptr(), layout) }
        }
    }
}

impl Deref for AlignedBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is valid for len initialised bytes for as long as self lives.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self is unique.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

struct Shared {
    free: Mutex<Vec<AlignedBuf>>,
    available: Condvar,
}

/// A fixed set of buffers handed out one at a time and returned when their [`PoolBuf`] drops.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
    buf_size: usize,
    count: usize,
}

impl Pool {
    /// `count` buffers of `buf_size` bytes (each at least 1, sizes rounded up as [`AlignedBuf::new`]
    /// does); an error if a buffer cannot be that large.
    pub fn new(count: usize, buf_size: usize) -> io::Result<Pool> {
        let free = (0..count.max(1))
            .map(|_| AlignedBuf::new(buf_size))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Pool {
            shared: Arc::new(Shared {
                free: Mutex::new(free),
                available: Condvar::new(),
            }),
            buf_size: buf_size.max(ALIGN).next_multiple_of(ALIGN),
            count: count.max(1),
        })
    }

    /// How many buffers the pool owns.
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn buf_size(&self) -> usize {
        self.buf_size
    }

    /// Waits for a free buffer; gives up (None) as soon as `stop()` is true.
    pub fn take(&self, stop: &dyn Fn() -> bool) -> Option<PoolBuf> {
        self.take_reserving(stop, &|| 0)
    }

    /// Like [`Pool::take`], but only takes a buffer while more than `reserve()` are free (so
    /// work that is ahead of its turn cannot starve the work the consumers wait for).
    pub fn take_reserving(
        &self,
        stop: &dyn Fn() -> bool,
        reserve: &dyn Fn() -> usize,
    ) -> Option<PoolBuf> {
        let mut free = self.shared.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if stop() {
                return None;
            }
            if free.len() > reserve()
                && let Some(buf) = free.pop()
            {
                return Some(PoolBuf {
                    buf: Some(buf),
                    pool: self.shared.clone(),
                });
            }
            free = self
                .shared
                .available
                .wait_timeout(free, Duration::from_millis(50))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A buffer on loan from a [`Pool`].
pub struct PoolBuf {
    buf: Option<AlignedBuf>,
    pool: Arc<Shared>,
}

impl Deref for PoolBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.buf.as_deref().unwrap_or(&[])
    }
}

impl DerefMut for PoolBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        self.buf.as_deref_mut().unwrap_or(&mut [])
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            let mut free = self.pool.free.lock().unwrap_or_else(|e| e.into_inner());
            free.push(buf);
            self.pool.available.notify_all();
        }
    }
}

/// Makes the allocator map and unmap large blocks (liblzma's dictionaries, 8 MiB per decoder)
/// every time. By default glibc raises its mmap threshold after the first such free, after which
/// freed dictionaries can linger in per-thread arenas and the peak RSS drifts by one or two.
pub fn map_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes an allocator parameter; a failure leaves the default.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// A static run of zeros, page-aligned, for hashing and writing holes. It lives in .bss: reading it
/// maps the kernel's shared zero page and costs no memory.
#[repr(C, align(4096))]
pub struct Zeros(pub [u8; ZEROS_LEN]);
pub const ZEROS_LEN: usize = 1 << 20;
pub static ZEROS: Zeros = Zeros([0; ZEROS_LEN]);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_impossible_size_is_an_error_not_a_short_buffer() {
        let e = AlignedBuf::new(usize::MAX).err().expect("no buffer");
        assert_eq!(e.kind(), io::ErrorKind::OutOfMemory);
        assert!(e.to_string().contains(&usize::MAX.to_string()), "{e}");
        // Rounded up to a page, the largest valid layout size is still too large to round.
        assert!(AlignedBuf::new(isize::MAX as usize).is_err());
        assert!(Pool::new(2, usize::MAX - 1).is_err());
    }

    #[test]
    fn buffers_are_aligned_and_return_to_the_pool() {
        let pool = Pool::new(2, 10_000).unwrap();
        assert_eq!(pool.buf_size(), 12_288);
        let a = pool.take(&|| false).unwrap();
        let b = pool.take(&|| false).unwrap();
        assert_eq!(a.as_ptr() as usize % ALIGN, 0);
        assert_eq!(b.len(), 12_288);
        // Empty pool: a stop request ends the wait.
        assert!(pool.take(&|| true).is_none());
        drop(a);
        assert!(pool.take(&|| false).is_some());
        assert_eq!(ZEROS.0.as_ptr() as usize % ALIGN, 0);
    }
}
