//! boardsmith: bootable SD-card and disk images for ARM boards, from board profiles.
//!
//! The modules follow the data: [`profile`] → [`plan`] → [`image`] → [`boot`]. The library knows nothing of the
//! command line; [`cli`] turns arguments into validated requests for it.

pub mod boot;
pub mod cachedir;
pub mod checksum;
pub mod cli;
pub mod codec;
pub mod embedded;
pub mod grow;
pub mod ids;
pub mod image;
pub mod kconfig;
pub mod net;
pub mod output;
pub mod plan;
pub mod profile;
pub mod release;
pub mod rootfs;
pub mod rootmods;
pub mod signals;
pub mod size;
pub mod sparse;
pub mod time;
pub mod write;
