//! U-Boot environment files (`uboot.env`, CONFIG_ENV_IS_IN_FAT): the default environment found inside a
//! U-Boot binary, changed by the profile's `[bootloader.env] set`, and encoded as U-Boot reads it: a
//! little-endian CRC32 of the data area, then `name=value` entries separated by NUL, ended by an empty
//! entry, zero-filled to CONFIG_ENV_SIZE (the same bytes as `mkenvimage -s SIZE -p 0`).

/// Why no environment file could be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EnvError {
    #[error(
        "no default environment (a NUL-separated `bootcmd=…` / `bootdelay=…` block) found in the U-Boot binary; \
         is it compressed? Remove [bootloader.env] from the profile to boot with U-Boot's built-in environment"
    )]
    NotFound,
    #[error(
        "the environment needs {needed} bytes but CONFIG_ENV_SIZE ([bootloader.env] size) is {size}"
    )]
    TooLarge { needed: usize, size: usize },
}

/// One environment: ordered `name=value` pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env(pub Vec<(String, String)>);

fn valid_name(name: &[u8]) -> bool {
    !name.is_empty()
        && name
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'#' | b'-'))
}

/// A `name=value` entry as U-Boot's default environment holds it: a plausible name, printable text.
fn parse_entry(e: &[u8]) -> Option<(String, String)> {
    let eq = e.iter().position(|&c| c == b'=')?;
    let (name, value) = (&e[..eq], &e[eq + 1..]);
    if !valid_name(name)
        || !value
            .iter()
            .all(|&c| (0x20..0x7f).contains(&c) || c == b'\t' || c == b'\n')
    {
        return None;
    }
    Some((
        String::from_utf8_lossy(name).into_owned(),
        String::from_utf8_lossy(value).into_owned(),
    ))
}

impl Env {
    /// Finds U-Boot's default environment in a binary (SPL+U-Boot blob or u-boot.bin). U-Boot keeps it as
    /// one NUL-separated block in read-only data, ending with an empty entry; it holds `bootcmd` and
    /// `bootdelay`. One pass over the NUL-separated strings: a block is a run of valid entries that an
    /// empty entry ends (a string that is not an entry starts a new run); the first block with a
    /// `bootcmd=` entry after a NUL and a `bootdelay` entry is the one. Linear in the binary's size,
    /// whatever it holds.
    pub fn find_default(binary: &[u8]) -> Result<Env, EnvError> {
        let mut run: Vec<(String, String)> = Vec::new();
        // Whether the run holds a `bootcmd` entry that a NUL precedes (not the binary's first string).
        let mut has_bootcmd = false;
        let mut at = 0;
        while at < binary.len() {
            let Some(len) = binary[at..].iter().position(|&c| c == 0) else {
                break; // the last string has no NUL: no block ends in it
            };
            let segment = &binary[at..at + len];
            if len == 0 {
                if has_bootcmd && run.iter().any(|(n, _)| n == "bootdelay") {
                    return Ok(Env(run));
                }
                run.clear();
                has_bootcmd = false;
            } else if let Some(entry) = parse_entry(segment) {
                has_bootcmd |= at > 0 && entry.0 == "bootcmd";
                run.push(entry);
            } else {
                run.clear();
                has_bootcmd = false;
            }
            at += len + 1;
        }
        Err(EnvError::NotFound)
    }

    /// The environment block starting at `start`: valid entries up to an empty one.
    fn block_at(binary: &[u8], start: usize) -> Option<Env> {
        let mut entries = Vec::new();
        let mut at = start;
        loop {
            let len = binary.get(at..)?.iter().position(|&c| c == 0)?;
            if len == 0 {
                break;
            }
            entries.push(parse_entry(&binary[at..at + len])?);
            at += len + 1;
        }
        (!entries.is_empty()).then_some(Env(entries))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Sets a variable (keeping its place if it exists); an empty value removes it, as `setenv name` does.
    pub fn set(&mut self, name: &str, value: &str) {
        if value.is_empty() {
            self.0.retain(|(n, _)| n != name);
        } else if let Some(e) = self.0.iter_mut().find(|(n, _)| n == name) {
            e.1 = value.to_string();
        } else {
            self.0.push((name.to_string(), value.to_string()));
        }
    }

    /// The environment file: CRC32 (little-endian) of the data area, then the data area of `size - 4` bytes.
    pub fn encode(&self, size: usize) -> Result<Vec<u8>, EnvError> {
        let mut data = Vec::with_capacity(size);
        for (n, v) in &self.0 {
            data.extend_from_slice(n.as_bytes());
            data.push(b'=');
            data.extend_from_slice(v.as_bytes());
            data.push(0);
        }
        data.push(0);
        let needed = data.len() + 4;
        if needed > size {
            return Err(EnvError::TooLarge { needed, size });
        }
        data.resize(size - 4, 0);
        let mut out = crc32fast::hash(&data).to_le_bytes().to_vec();
        out.extend_from_slice(&data);
        Ok(out)
    }

    /// Decodes an environment file, checking its CRC.
    pub fn decode(file: &[u8]) -> Option<Env> {
        let (crc, data) = file.split_first_chunk::<4>()?;
        if u32::from_le_bytes(*crc) != crc32fast::hash(data) {
            return None;
        }
        Self::block_at(data, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What U-Boot's read-only data looks like around the default environment: other strings before (one
    /// with '=' inside text), the block, the terminating empty entry, more strings after.
    fn binary() -> Vec<u8> {
        let mut b = vec![0x13, 0x37, 0];
        b.extend_from_slice(b"cyclic function %s took too long\n\0");
        b.extend_from_slice(b"bootcmd=run distro_bootcmd\0bootdelay=2\0preboot=usb start\0");
        b.extend_from_slice(b"boot_targets=fel mmc0 usb0 \0\0");
        b.extend_from_slice(b"%s: null device\n\0bootcmd=not an env\0");
        b
    }

    #[test]
    fn finds_the_default_block_between_other_strings() {
        let env = Env::find_default(&binary()).unwrap();
        assert_eq!(
            env.0.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["bootcmd", "bootdelay", "preboot", "boot_targets"]
        );
        assert_eq!(env.get("boot_targets"), Some("fel mmc0 usb0 "));
    }

    #[test]
    fn entries_before_bootcmd_belong_to_the_block() {
        let mut b = b"\xff\xfe\0.flags=ethaddr:mc\0bootcmd=boot\0bootdelay=1\0\0".to_vec();
        b.extend_from_slice(b"tail");
        let env = Env::find_default(&b).unwrap();
        assert_eq!(env.0[0], (".flags".into(), "ethaddr:mc".into()));
    }

    #[test]
    fn no_block_is_an_error() {
        assert_eq!(
            Env::find_default(b"bootcmd=x\0no delay here\0\0"),
            Err(EnvError::NotFound)
        );
        assert_eq!(Env::find_default(b""), Err(EnvError::NotFound));
    }

    /// 160 KB of `bootcmd=` entries that no empty entry ends (a string that is not an entry breaks
    /// the run), then the real block. Each `bootcmd=` used to be tried by walking back over all the
    /// entries before it and forward over all after it: quadratic, 40 s for this blob. One pass now.
    #[test]
    fn crafted_run_of_bootcmd_entries_is_scanned_once() {
        let mut b = vec![0xffu8];
        for _ in 0..16_000 {
            b.extend_from_slice(b"\0bootcmd=x");
        }
        b.extend_from_slice(b"\0\xff\0");
        assert!(b.len() > 160_000);
        assert_eq!(Env::find_default(&b), Err(EnvError::NotFound));
        b.extend_from_slice(b"bootcmd=boot\0bootdelay=3\0\0");
        assert_eq!(
            Env::find_default(&b).unwrap().0,
            [
                ("bootcmd".to_string(), "boot".to_string()),
                ("bootdelay".to_string(), "3".to_string())
            ]
        );
    }

    #[test]
    fn a_block_needs_bootcmd_after_a_nul_and_an_end() {
        // `bootcmd` as the binary's very first string does not count (U-Boot's block follows other
        // data); a block that the binary's end cuts off is no block.
        assert_eq!(
            Env::find_default(b"bootcmd=x\0bootdelay=1\0\0"),
            Err(EnvError::NotFound)
        );
        assert_eq!(
            Env::find_default(b"\0bootcmd=x\0bootdelay=1\0"),
            Err(EnvError::NotFound)
        );
        assert_eq!(
            Env::find_default(b"\0bootcmd=x\0bootdelay=1\0\0")
                .unwrap()
                .get("bootdelay"),
            Some("1")
        );
    }

    #[test]
    fn set_changes_adds_and_removes() {
        let mut env = Env::find_default(&binary()).unwrap();
        env.set("bootdelay", "0");
        env.set("preboot", "");
        env.set("stdin", "serial");
        assert_eq!(env.get("bootdelay"), Some("0"));
        assert_eq!(env.get("preboot"), None);
        assert_eq!(env.0.last().unwrap(), &("stdin".into(), "serial".into()));
        assert_eq!(
            env.0[1].0, "bootdelay",
            "a changed variable keeps its place"
        );
    }

    #[test]
    fn encode_has_crc_size_and_round_trips() {
        let env = Env(vec![
            ("bootdelay".into(), "0".into()),
            ("a".into(), "b c".into()),
        ]);
        let f = env.encode(0x10000).unwrap();
        assert_eq!(f.len(), 0x10000);
        assert_eq!(&f[4..20], b"bootdelay=0\0a=b ");
        assert_eq!(
            u32::from_le_bytes(f[..4].try_into().unwrap()),
            crc32fast::hash(&f[4..])
        );
        assert_eq!(Env::decode(&f), Some(env));
        let mut bad = f.clone();
        bad[10] ^= 1;
        assert_eq!(Env::decode(&bad), None);
    }

    #[test]
    fn too_small_is_an_error() {
        let env = Env(vec![("x".into(), "y".repeat(100))]);
        assert!(matches!(env.encode(64), Err(EnvError::TooLarge { .. })));
    }
}
