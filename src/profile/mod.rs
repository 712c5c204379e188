//! Board profiles: `boards/*.toml` (embedded in the binary, or given by path), resolved through their
//! `extends` chain into one validated [`Profile`]. Every error names file, line, column and field.
//!
//! - `model`: the validated profile's types;
//! - `catalog`: where profiles are found (embedded set, the user's directory, paths);
//! - `resolve`: reading a file (one-line strings) and merging its `extends` chain;
//! - `validate`: the merged raw profile checked into a [`Profile`], section by section, with the
//!   partitions in `partition` and the emulators in `emulator`.

mod catalog;
mod emulator;
mod model;
mod partition;
mod raw;
mod resolve;
pub mod source;
mod validate;

use std::path::PathBuf;

pub use crate::rootmods::Medium;
pub use catalog::{BoardEntry, Catalog};
pub use model::*;
pub use partition::attribute_bits;
pub use raw::RawRootfs;
pub use resolve::{control_char, describe_control};
pub use source::{Loc, LocError, Origin, SourceFile};

/// Why a profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "no board profile named `{name}`; known boards: {known}. Pass a path to a .toml file for your own profile"
    )]
    UnknownBoard { name: String, known: String },
    #[error("cannot read profile {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    At(#[from] LocError),
    #[error(
        "{file}: `{field}` is required but neither this profile nor the profiles it extends set it"
    )]
    Missing { file: String, field: String },
    #[error("{at}: `extends` forms a cycle: {chain}")]
    Cycle { at: String, chain: String },
}

impl ProfileError {
    fn invalid<T>(loc: &Loc<T>, field: impl Into<String>, message: impl Into<String>) -> Self {
        LocError::invalid(loc, field, message).into()
    }
}

/// Profiles the unit tests of the submodules load.
#[cfg(test)]
mod test_profiles {
    use super::*;

    pub(super) fn load_text(text: &str) -> Result<Profile, ProfileError> {
        let (_dir, p) = crate::testutil::scratch("t.toml");
        std::fs::write(&p, text).unwrap();
        Catalog::default().load(p.to_str().unwrap())
    }

    pub(super) const MINIMAL: &str = "arch = \"armhf\"\nconsole = \"ttyS0\"\n[kernel]\nimage = \"zImage\"\npath = \"boot/vmlinuz-*\"\n[table]\ntype = \"mbr\"\n";

    pub(super) const WITH_INITRD: &str = "arch = \"armhf\"\nconsole = \"ttyS0\"\nMEDIUM[kernel]\nimage = \"zImage\"\npath = \"boot/vmlinuz-*\"\ninitrd = \"boot/initrd.img-*\"\ndtb_dir = \"usr/lib/linux-image-*\"\ndtb = \"x.dtb\"\nEXTRA\n[table]\ntype = \"mbr\"\n[[partition]]\nname = \"root\"\nrole = \"root\"\nsize = \"fill\"\nEMU";
}
