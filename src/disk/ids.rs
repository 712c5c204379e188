//! Reproducible identifiers: disk signature, GUIDs, filesystem UUIDs, volume ids and hash seeds all derive
//! from the board name and SOURCE_DATE_EPOCH, so the same inputs give the same bytes.

use sha2::{Digest, Sha256};

use crate::disk::gpt::Guid;

/// Used when SOURCE_DATE_EPOCH is not set: builds stay reproducible by default.
pub const DEFAULT_EPOCH: u64 = 1_700_000_000;

/// SOURCE_DATE_EPOCH from the environment, or the default. An unparsable value is an error, not ignored.
pub fn source_date_epoch() -> Result<u64, String> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse().map_err(|_| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a whole number of seconds since 1970; unset it or fix it")
        }),
        Err(_) => Ok(DEFAULT_EPOCH),
    }
}

#[derive(Debug, Clone)]
pub struct Ids {
    seed: [u8; 32],
}

impl Ids {
    pub fn new(board: &str, epoch: u64) -> Ids {
        let mut h = Sha256::new();
        h.update(b"boardsmith ids v1\0");
        h.update(board.as_bytes());
        h.update(b"\0");
        h.update(epoch.to_le_bytes());
        Ids {
            seed: h.finalize().into(),
        }
    }

    fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.seed);
        h.update(purpose.as_bytes());
        h.finalize().into()
    }

    pub fn guid(&self, purpose: &str) -> Guid {
        let d = self.derive(purpose);
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        Guid::from_seed(b)
    }

    pub fn u32(&self, purpose: &str) -> u32 {
        let d = self.derive(purpose);
        // A zero disk signature or volume id reads as "unset" to some tools.
        u32::from_le_bytes([d[0], d[1], d[2], d[3]]).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_distinct() {
        let a = Ids::new("cubieboard", 1);
        let b = Ids::new("cubieboard", 1);
        let c = Ids::new("cubieboard", 2);
        assert_eq!(a.guid("disk"), b.guid("disk"));
        assert_ne!(a.guid("disk"), c.guid("disk"));
        assert_ne!(a.guid("disk"), a.guid("part1"));
        assert_eq!(a.u32("sig"), b.u32("sig"));
    }
}
