//! GUID partition tables: primary header at LBA 1, entry array (movable and shortenable, for SoCs whose
//! boot ROM reads a loader from where the default array sits), backup array and header at the end.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::mbr::SECTOR;

/// A GUID in its textual (RFC 4122) byte order. On disk the first three fields are little-endian.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    pub const fn from_u128(v: u128) -> Guid {
        Guid(v.to_be_bytes())
    }

    pub fn to_disk(self) -> [u8; 16] {
        let b = self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }

    pub fn from_disk(d: &[u8]) -> Guid {
        Guid([
            d[3], d[2], d[1], d[0], d[5], d[4], d[7], d[6], d[8], d[9], d[10], d[11], d[12], d[13],
            d[14], d[15],
        ])
    }

    /// A random-looking (version 4 layout) GUID from 16 seed bytes: deterministic for the same seed.
    pub fn from_seed(seed: [u8; 16]) -> Guid {
        let mut b = seed;
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Guid(b)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
            b[0],
            b[1],
            b[2],
            b[3],
            b[4],
            b[5],
            b[6],
            b[7],
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Guid {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl FromStr for Guid {
    type Err = ();
    fn from_str(s: &str) -> Result<Guid, ()> {
        let groups: Vec<&str> = s.split('-').collect();
        if groups.iter().map(|g| g.len()).collect::<Vec<_>>() != [8, 4, 4, 4, 12] {
            return Err(());
        }
        let hex: String = groups.concat();
        let mut out = [0u8; 16];
        hex::decode_to_slice(hex, &mut out).map_err(|_| ())?;
        Ok(Guid(out))
    }
}

pub const LINUX_FS: Guid = Guid::from_u128(0x0FC63DAF_8483_4772_8E79_3D69D8477DE4);
pub const ESP: Guid = Guid::from_u128(0xC12A7328_F81F_11D2_BA4B_00A0C93EC93B);
pub const BASIC_DATA: Guid = Guid::from_u128(0xEBD0A0A2_B9E5_4433_87C0_68B6B72699C7);
pub const CHROMEOS_KERNEL: Guid = Guid::from_u128(0xFE3A2A5D_4F32_41A7_B725_ACCC3285A309);
pub const CHROMEOS_ROOT: Guid = Guid::from_u128(0x3CB8E202_3B7E_47DD_8A3C_7FF2A13CFCEC);
pub const CHROMEOS_RESERVED: Guid = Guid::from_u128(0x2E0A753D_9E48_43B0_8337_B15192CB1B5E);

/// Type GUID from a profile's `gpt_type`: a well-known name or a literal GUID.
pub fn type_guid_by_name(name: &str) -> Option<Guid> {
    match name {
        "linux" => Some(LINUX_FS),
        "esp" => Some(ESP),
        "basic-data" => Some(BASIC_DATA),
        "chromeos-kernel" => Some(CHROMEOS_KERNEL),
        "chromeos-root" => Some(CHROMEOS_ROOT),
        "chromeos-reserved" => Some(CHROMEOS_RESERVED),
        _ => name.parse().ok(),
    }
}

pub const ENTRY_SIZE: u64 = 128;
const HEADER_SIZE: u32 = 92;
const SIGNATURE: &[u8; 8] = b"EFI PART";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptEntry {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub first_lba: u64,
    /// Inclusive, as on disk.
    pub last_lba: u64,
    pub attributes: u64,
    pub name: String,
}

/// A whole GPT: geometry plus entries (empty slots are `None` so partition numbers keep their gaps).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub disk_guid: Guid,
    pub disk_sectors: u64,
    /// LBA of the primary entry array (2 by default).
    pub entries_lba: u64,
    pub num_entries: u32,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub entries: Vec<Option<GptEntry>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GptError {
    #[error("no GPT header at byte {offset} (signature \"EFI PART\" missing)")]
    NoHeader { offset: u64 },
    #[error("GPT header at byte {offset}: {reason}")]
    BadHeader { offset: u64, reason: String },
    #[error(
        "GPT entry array at byte {offset}: CRC32 mismatch (stored {stored:08x}, computed {computed:08x})"
    )]
    EntriesCrc {
        offset: u64,
        stored: u32,
        computed: u32,
    },
    #[error("GPT entry {index} at byte {offset}: {reason}")]
    BadEntry {
        index: usize,
        offset: u64,
        reason: String,
    },
}

/// Sectors needed for an entry array of `num_entries`.
pub fn array_sectors(num_entries: u32) -> u64 {
    (u64::from(num_entries) * ENTRY_SIZE).div_ceil(SECTOR)
}

/// Header fields read from disk, before the entry array is checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub num_entries: u32,
    pub entries_crc: u32,
}

impl GptHeader {
    /// Parses and checks a header sector found at byte `offset`.
    pub fn parse(sector: &[u8], offset: u64) -> Result<GptHeader, GptError> {
        if sector.len() < 512 || &sector[0..8] != SIGNATURE {
            return Err(GptError::NoHeader { offset });
        }
        let bad = |reason: String| GptError::BadHeader { offset, reason };
        let u32_at =
            |o: usize| u32::from_le_bytes([sector[o], sector[o + 1], sector[o + 2], sector[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&sector[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let header_size = u32_at(12);
        if !(92..=512).contains(&header_size) {
            return Err(bad(format!(
                "header size {header_size} is outside 92..=512"
            )));
        }
        let stored = u32_at(16);
        let mut copy = sector[..header_size as usize].to_vec();
        copy[16..20].fill(0);
        let computed = crc32fast::hash(&copy);
        if stored != computed {
            return Err(bad(format!(
                "header CRC32 mismatch (stored {stored:08x}, computed {computed:08x})"
            )));
        }
        let entry_size = u32_at(84);
        if u64::from(entry_size) != ENTRY_SIZE {
            return Err(bad(format!("entry size {entry_size} is not 128")));
        }
        let num_entries = u32_at(80);
        if num_entries == 0 || num_entries > 4096 {
            return Err(bad(format!("{num_entries} entries is outside 1..=4096")));
        }
        let h = GptHeader {
            my_lba: u64_at(24),
            alternate_lba: u64_at(32),
            first_usable_lba: u64_at(40),
            last_usable_lba: u64_at(48),
            disk_guid: Guid::from_disk(&sector[56..72]),
            entries_lba: u64_at(72),
            num_entries,
            entries_crc: u32_at(88),
        };
        if h.first_usable_lba > h.last_usable_lba.saturating_add(1) {
            return Err(bad("first usable LBA is after last usable LBA".into()));
        }
        Ok(h)
    }
}

impl Gpt {
    pub fn array_sectors(&self) -> u64 {
        array_sectors(self.num_entries)
    }

    pub fn backup_header_lba(&self) -> u64 {
        self.disk_sectors - 1
    }

    pub fn backup_entries_lba(&self) -> u64 {
        self.backup_header_lba() - self.array_sectors()
    }

    /// The entry array bytes (both copies are identical).
    pub fn encode_entries(&self) -> Vec<u8> {
        let mut out = vec![0u8; (self.array_sectors() * SECTOR) as usize];
        for (i, e) in self
            .entries
            .iter()
            .enumerate()
            .take(self.num_entries as usize)
        {
            let Some(e) = e else { continue };
            let b = &mut out[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            b[0..16].copy_from_slice(&e.type_guid.to_disk());
            b[16..32].copy_from_slice(&e.unique_guid.to_disk());
            b[32..40].copy_from_slice(&e.first_lba.to_le_bytes());
            b[40..48].copy_from_slice(&e.last_lba.to_le_bytes());
            b[48..56].copy_from_slice(&e.attributes.to_le_bytes());
            for (j, unit) in e.name.encode_utf16().take(36).enumerate() {
                b[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        out
    }

    fn entries_crc(&self) -> u32 {
        let bytes = self.encode_entries();
        crc32fast::hash(&bytes[..(u64::from(self.num_entries) * ENTRY_SIZE) as usize])
    }

    /// One header sector: primary (`backup == false`) or backup.
    pub fn encode_header(&self, backup: bool) -> [u8; 512] {
        let mut h = [0u8; 512];
        let (my_lba, alternate, entries_lba) = if backup {
            (self.backup_header_lba(), 1, self.backup_entries_lba())
        } else {
            (1, self.backup_header_lba(), self.entries_lba)
        };
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&HEADER_SIZE.to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&alternate.to_le_bytes());
        h[40..48].copy_from_slice(&self.first_usable_lba.to_le_bytes());
        h[48..56].copy_from_slice(&self.last_usable_lba.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.to_disk());
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&self.num_entries.to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&self.entries_crc().to_le_bytes());
        let crc = crc32fast::hash(&h[..HEADER_SIZE as usize]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// Every (byte offset, bytes) the table occupies: protective MBR, primary header and array,
    /// backup array and header.
    pub fn encode(&self) -> Vec<(u64, Vec<u8>)> {
        let mut mbr = [0u8; 512];
        super::mbr::Mbr::protective(self.disk_sectors).encode_into(&mut mbr);
        let entries = self.encode_entries();
        vec![
            (0, mbr.to_vec()),
            (SECTOR, self.encode_header(false).to_vec()),
            (self.entries_lba * SECTOR, entries.clone()),
            (self.backup_entries_lba() * SECTOR, entries),
            (
                self.backup_header_lba() * SECTOR,
                self.encode_header(true).to_vec(),
            ),
        ]
    }

    /// Rebuilds a table from a checked header and its entry array bytes.
    pub fn from_parts(
        header: &GptHeader,
        disk_sectors: u64,
        array: &[u8],
        array_offset: u64,
    ) -> Result<Gpt, GptError> {
        let len = (u64::from(header.num_entries) * ENTRY_SIZE) as usize;
        if array.len() < len {
            return Err(GptError::BadHeader {
                offset: header.my_lba * SECTOR,
                reason: format!(
                    "entry array needs {len} bytes, only {} available",
                    array.len()
                ),
            });
        }
        let computed = crc32fast::hash(&array[..len]);
        if computed != header.entries_crc {
            return Err(GptError::EntriesCrc {
                offset: array_offset,
                stored: header.entries_crc,
                computed,
            });
        }
        let mut entries = Vec::with_capacity(header.num_entries as usize);
        for i in 0..header.num_entries as usize {
            let b = &array[i * ENTRY_SIZE as usize..(i + 1) * ENTRY_SIZE as usize];
            let type_guid = Guid::from_disk(&b[0..16]);
            if type_guid.is_zero() {
                entries.push(None);
                continue;
            }
            let u64_at = |o: usize| {
                let mut x = [0u8; 8];
                x.copy_from_slice(&b[o..o + 8]);
                u64::from_le_bytes(x)
            };
            let first_lba = u64_at(32);
            let last_lba = u64_at(40);
            if last_lba < first_lba {
                return Err(GptError::BadEntry {
                    index: i + 1,
                    offset: array_offset + (i as u64) * ENTRY_SIZE,
                    reason: format!("ends (LBA {last_lba}) before it starts (LBA {first_lba})"),
                });
            }
            let units: Vec<u16> = b[56..128]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&u| u != 0)
                .collect();
            entries.push(Some(GptEntry {
                type_guid,
                unique_guid: Guid::from_disk(&b[16..32]),
                first_lba,
                last_lba,
                attributes: u64_at(48),
                name: String::from_utf16_lossy(&units),
            }));
        }
        Ok(Gpt {
            disk_guid: header.disk_guid,
            disk_sectors,
            entries_lba: header.entries_lba,
            num_entries: header.num_entries,
            first_usable_lba: header.first_usable_lba,
            last_usable_lba: header.last_usable_lba,
            entries,
        })
    }

    /// Reads the primary table from an image: `read(offset, len)` returns bytes at a byte offset.
    pub fn read<E>(
        disk_sectors: u64,
        mut read: impl FnMut(u64, usize) -> Result<Vec<u8>, E>,
    ) -> Result<Result<Gpt, GptError>, E> {
        let header_bytes = read(SECTOR, SECTOR as usize)?;
        let header = match GptHeader::parse(&header_bytes, SECTOR) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        let array_offset = header.entries_lba * SECTOR;
        let array = read(
            array_offset,
            (array_sectors(header.num_entries) * SECTOR) as usize,
        )?;
        Ok(Gpt::from_parts(&header, disk_sectors, &array, array_offset))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> Gpt {
        Gpt {
            disk_guid: Guid::from_seed([7; 16]),
            disk_sectors: 2 * 1024 * 1024,
            entries_lba: 2,
            num_entries: 128,
            first_usable_lba: 34,
            last_usable_lba: 2 * 1024 * 1024 - 34,
            entries: vec![Some(GptEntry {
                type_guid: CHROMEOS_KERNEL,
                unique_guid: Guid::from_seed([1; 16]),
                first_lba: 2048,
                last_lba: 34815,
                attributes: (10 << 48) | (5 << 52) | (1 << 56),
                name: "KERN-A".into(),
            })],
        }
    }

    #[test]
    fn guid_text_roundtrip() {
        let g: Guid = "FE3A2A5D-4F32-41A7-B725-ACCC3285A309".parse().unwrap();
        assert_eq!(g, CHROMEOS_KERNEL);
        assert_eq!(g.to_string(), "FE3A2A5D-4F32-41A7-B725-ACCC3285A309");
        assert_eq!(Guid::from_disk(&g.to_disk()), g);
        // On disk the first field is little-endian.
        assert_eq!(&g.to_disk()[..4], &[0x5d, 0x2a, 0x3a, 0xfe]);
    }

    #[test]
    fn encode_then_read_roundtrips() {
        let gpt = sample();
        let mut disk = vec![0u8; 40 * 512];
        for (off, bytes) in gpt.encode() {
            if off < disk.len() as u64 {
                disk[off as usize..off as usize + bytes.len()].copy_from_slice(&bytes);
            }
        }
        let back = Gpt::read(gpt.disk_sectors, |o, n| {
            Ok::<_, ()>(disk[o as usize..o as usize + n].to_vec())
        })
        .unwrap()
        .unwrap();
        let mut expected = gpt.clone();
        expected.entries.resize(128, None);
        assert_eq!(back, expected);
    }

    #[test]
    fn corrupted_header_crc_is_reported() {
        let mut h = sample().encode_header(false);
        h[40] ^= 1;
        assert!(matches!(
            GptHeader::parse(&h, 512),
            Err(GptError::BadHeader { .. })
        ));
    }

    proptest! {
        #[test]
        fn header_parse_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 512)) {
            bytes[0..8].copy_from_slice(SIGNATURE);
            let _ = GptHeader::parse(&bytes, 512);
        }

        #[test]
        fn entries_parse_never_panics(array in proptest::collection::vec(any::<u8>(), 0..4096), n in 1u32..40) {
            let h = GptHeader { my_lba: 1, alternate_lba: 100, first_usable_lba: 34, last_usable_lba: 60, disk_guid: Guid::default(), entries_lba: 2, num_entries: n, entries_crc: crc32fast::hash(&array[..array.len().min(n as usize * 128)]) };
            let _ = Gpt::from_parts(&h, 100, &array, 1024);
        }
    }
}
