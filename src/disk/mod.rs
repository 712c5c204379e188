//! On-disk formats every layer shares, with no knowledge of boards or images: MBR and GPT (encode and
//! parse), the reproducible identifiers put into them, and where a sparse file holds data.

pub mod gpt;
pub mod ids;
pub mod mbr;
pub mod sparse;
pub mod table;
