//! boardsmith: bootable SD-card and disk images for ARM boards, from board profiles.
//!
//! The modules follow the data: [`profile`] → [`plan`] → ([`kconfig`], [`rootfs`]) → [`image`] → [`write`] →
//! [`boot`], over shared lower layers ([`disk`], [`device`], ...). A module uses only modules of lower layers
//! (the table in DEVELOPERS.md, enforced by tests/layering.rs). The library knows nothing of the command line:
//! the binary's src/cli/ turns arguments into validated requests for it and shows the events it reports.

pub mod boot;
pub mod checksum;
pub mod codec;
pub mod device;
pub mod disk;
pub mod embedded;
pub mod grow;
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
pub mod time;
pub mod tools;
pub mod write;

#[cfg(test)]
mod testutil;
