//! The DOS/MBR partition table in sector 0: parse and encode. Only the table fields are owned here;
//! the boot code area (bytes 0..440) is preserved when a table is rewritten in place.

pub const SECTOR: u64 = 512;
const TABLE_OFFSET: usize = 446;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    pub bootable: bool,
    pub type_byte: u8,
    pub start_lba: u32,
    pub sectors: u32,
}

impl MbrEntry {
    pub fn end_lba(&self) -> u64 {
        u64::from(self.start_lba) + u64::from(self.sectors)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    pub disk_signature: u32,
    pub entries: [Option<MbrEntry>; 4],
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MbrError {
    #[error(
        "sector 0 has no MBR boot signature (0x55AA at byte 510); the target holds no DOS partition table"
    )]
    NoSignature,
    #[error("MBR partition {index} (byte {offset}): {reason}")]
    BadEntry {
        index: usize,
        offset: usize,
        reason: &'static str,
    },
}

/// CHS address for an LBA in the conventional 255-head, 63-sector geometry; beyond reach it saturates.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cyl = lba / (HEADS * SECTORS);
    if cyl > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    [
        head as u8,
        (sector as u8) | (((cyl >> 8) as u8 & 0x3) << 6),
        cyl as u8,
    ]
}

impl Mbr {
    /// Parses sector 0. Entries that are all zero are empty; others must be self-consistent.
    pub fn parse(sector: &[u8; 512]) -> Result<Mbr, MbrError> {
        if sector[510] != 0x55 || sector[511] != 0xaa {
            return Err(MbrError::NoSignature);
        }
        let disk_signature =
            u32::from_le_bytes([sector[440], sector[441], sector[442], sector[443]]);
        let mut entries = [None; 4];
        for (i, slot) in entries.iter_mut().enumerate() {
            let off = TABLE_OFFSET + i * 16;
            let e = &sector[off..off + 16];
            let type_byte = e[4];
            let start_lba = u32::from_le_bytes([e[8], e[9], e[10], e[11]]);
            let sectors = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
            if type_byte == 0 && sectors == 0 {
                continue;
            }
            if e[0] != 0 && e[0] != 0x80 {
                return Err(MbrError::BadEntry {
                    index: i + 1,
                    offset: off,
                    reason: "boot indicator is neither 0x00 nor 0x80",
                });
            }
            if sectors == 0 || type_byte == 0 {
                return Err(MbrError::BadEntry {
                    index: i + 1,
                    offset: off,
                    reason: "entry has a type but no size, or a size but no type",
                });
            }
            *slot = Some(MbrEntry {
                bootable: e[0] == 0x80,
                type_byte,
                start_lba,
                sectors,
            });
        }
        Ok(Mbr {
            disk_signature,
            entries,
        })
    }

    /// Writes signature, table and boot signature into `sector`, keeping its boot code.
    pub fn encode_into(&self, sector: &mut [u8; 512]) {
        sector[440..444].copy_from_slice(&self.disk_signature.to_le_bytes());
        sector[444] = 0;
        sector[445] = 0;
        for (i, entry) in self.entries.iter().enumerate() {
            let off = TABLE_OFFSET + i * 16;
            let e = &mut sector[off..off + 16];
            e.fill(0);
            if let Some(p) = entry {
                e[0] = if p.bootable { 0x80 } else { 0 };
                e[1..4].copy_from_slice(&chs(u64::from(p.start_lba)));
                e[4] = p.type_byte;
                e[5..8].copy_from_slice(&chs(p.end_lba().saturating_sub(1)));
                e[8..12].copy_from_slice(&p.start_lba.to_le_bytes());
                e[12..16].copy_from_slice(&p.sectors.to_le_bytes());
            }
        }
        sector[510] = 0x55;
        sector[511] = 0xaa;
    }

    /// A protective MBR for a GPT disk of `disk_sectors` sectors.
    pub fn protective(disk_sectors: u64) -> Mbr {
        let sectors = u32::try_from(disk_sectors.saturating_sub(1)).unwrap_or(u32::MAX);
        Mbr {
            disk_signature: 0,
            entries: [
                Some(MbrEntry {
                    bootable: false,
                    type_byte: 0xee,
                    start_lba: 1,
                    sectors,
                }),
                None,
                None,
                None,
            ],
        }
    }

    /// Whether any entry is of type 0xEE: the disk announces a GPT (a protective or a hybrid MBR).
    pub fn is_protective(&self) -> bool {
        self.entries.iter().flatten().any(|e| e.type_byte == 0xee)
    }

    /// Why this MBR, which announces a GPT, is a hybrid MBR, whose entries rewriting it as a
    /// protective MBR would lose: entries besides the 0xEE one, or more than one 0xEE entry. None
    /// for a protective MBR, also one whose single 0xEE entry is sized wrongly (as the kernel, which
    /// only warns about it; rewriting it loses nothing).
    pub fn hybrid(&self) -> Option<String> {
        let describe = |i: usize, e: &MbrEntry| {
            format!(
                "entry {} (byte {}) of type 0x{:02x} covers sectors {}..{}",
                i + 1,
                TABLE_OFFSET + 16 * i,
                e.type_byte,
                e.start_lba,
                e.end_lba()
            )
        };
        let used: Vec<(usize, &MbrEntry)> = self
            .entries
            .iter()
            .enumerate()
            .filter_map(|(i, e)| e.as_ref().map(|e| (i, e)))
            .collect();
        let others: Vec<String> = used
            .iter()
            .filter(|(_, e)| e.type_byte != 0xee)
            .map(|&(i, e)| describe(i, e))
            .collect();
        if !others.is_empty() {
            return Some(format!(
                "a hybrid MBR: besides the GPT's 0xEE entry, {}",
                others.join("; ")
            ));
        }
        let gpt: Vec<&(usize, &MbrEntry)> =
            used.iter().filter(|(_, e)| e.type_byte == 0xee).collect();
        if gpt.len() > 1 {
            return Some(format!("a hybrid MBR: {} entries of type 0xEE", gpt.len()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip() {
        let m = Mbr {
            disk_signature: 0x5d3b0c1a,
            entries: [
                Some(MbrEntry {
                    bootable: true,
                    type_byte: 0x0c,
                    start_lba: 2048,
                    sectors: 131072,
                }),
                Some(MbrEntry {
                    bootable: false,
                    type_byte: 0x83,
                    start_lba: 133120,
                    sectors: 1_000_000,
                }),
                None,
                None,
            ],
        };
        let mut s = [0u8; 512];
        s[0] = 0xfa;
        m.encode_into(&mut s);
        assert_eq!(s[0], 0xfa, "boot code kept");
        assert_eq!(Mbr::parse(&s).unwrap(), m);
    }

    /// What `sgdisk -h 1` makes of a GPT with two partitions on 16384 sectors: a 0xEE entry over
    /// the sectors before partition 1, then partition 1 as type 0x07. Any entry besides the 0xEE
    /// one, or a second 0xEE entry, makes a hybrid MBR.
    #[test]
    fn hybrid_mbrs_are_not_protective() {
        let entry = |type_byte, start_lba, sectors| {
            Some(MbrEntry {
                bootable: false,
                type_byte,
                start_lba,
                sectors,
            })
        };
        let hybrid = Mbr {
            disk_signature: 0,
            entries: [entry(0xee, 1, 2047), entry(0x07, 2048, 2048), None, None],
        };
        assert!(hybrid.is_protective(), "it announces a GPT");
        assert_eq!(
            hybrid.hybrid().as_deref(),
            Some(
                "a hybrid MBR: besides the GPT's 0xEE entry, entry 2 (byte 462) of type 0x07 covers sectors 2048..4096"
            )
        );
        // A single 0xEE entry, sized wrongly or not at LBA 1: protective (nothing to lose).
        for e in [entry(0xee, 1, 2047), entry(0xee, 2, 16382)] {
            let lone = Mbr {
                entries: [e, None, None, None],
                ..hybrid.clone()
            };
            assert_eq!(lone.hybrid(), None);
        }
        let two = Mbr {
            entries: [entry(0xee, 1, 16383), entry(0xee, 1, 16383), None, None],
            ..hybrid.clone()
        };
        assert_eq!(
            two.hybrid().as_deref(),
            Some("a hybrid MBR: 2 entries of type 0xEE")
        );
        // Protective: its own disk, one written for a larger disk, the 32-bit limit.
        assert_eq!(Mbr::protective(16384).hybrid(), None);
        assert_eq!(Mbr::protective(1 << 40).hybrid(), None);
        // A DOS entry beside a whole-disk 0xEE entry is still hybrid.
        let mut both = Mbr::protective(16384);
        both.entries[3] = entry(0x83, 2048, 100);
        assert!(both.hybrid().is_some());
    }

    #[test]
    fn chs_of_first_mib() {
        // 2048 = cylinder 0, head 32, sector 33: what fdisk writes.
        assert_eq!(chs(2048), [32, 33, 0]);
    }

    #[test]
    fn rejects_missing_signature() {
        assert_eq!(Mbr::parse(&[0u8; 512]), Err(MbrError::NoSignature));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 512)) {
            let mut s = [0u8; 512];
            s.copy_from_slice(&bytes);
            s[510] = 0x55; s[511] = 0xaa;
            let _ = Mbr::parse(&s);
        }
    }
}
