//! Image assembly: partition tables, raw blobs, filesystems, boot configuration, block map and sums.

pub mod batch;
pub mod bmap;
pub mod bootconfig;
pub mod build;
pub mod ext4;
pub mod fat;
pub mod fvp;
pub mod sink;
pub mod ubootenv;
pub mod vboot;
pub mod xml;
