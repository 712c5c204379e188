//! The default user and root: password hashes (given, or hashed here from a prompted or piped password
//! that is never printed or logged), and the edits to /etc/passwd, /etc/shadow, /etc/group and
//! /etc/gshadow that `useradd` and `passwd -l` would make.

use std::io::{BufRead, IsTerminal, Write};

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error(
        "{what} is not a crypt(3) password hash (expected one starting with $y$, $gy$, $7$, $6$, $5$ or $2b$, such as `mkpasswd -m yescrypt` prints, or `!`/`*` for a locked password)"
    )]
    BadHash { what: String },
    #[error(
        "no password for the default user `{user}` and no terminal to ask on: give --password-hash HASH (e.g. from `mkpasswd -m yescrypt`) or set the environment variable BOARDSMITH_PASSWORD_HASH, pipe the password with --password-stdin, or generate one with --random-password (written beside the output, mode 0600); there is no default password"
    )]
    NoPassword { user: String },
    #[error("{what}: {reason}")]
    Rejected { what: String, reason: String },
    #[error("reading the password: {0}")]
    Io(#[from] std::io::Error),
    #[error("hashing the password: {0}")]
    Hash(String),
    #[error("{file} in the root filesystem {problem}")]
    Database { file: String, problem: String },
}

/// Accepts what `crypt(3)` on Debian understands, or a locked/disabled marker.
pub fn validate_hash(hash: &str, what: &str) -> Result<(), UserError> {
    let ok_prefix = ["$y$", "$gy$", "$7$", "$6$", "$5$", "$2b$", "$2y$"];
    let bad = || UserError::BadHash {
        what: what.to_string(),
    };
    if hash.contains([':', '\n', '\r', ' ']) || hash.is_empty() {
        return Err(bad());
    }
    if hash.starts_with('!') || hash == "*" {
        return Ok(());
    }
    if ok_prefix.iter().any(|p| hash.starts_with(p)) && hash.matches('$').count() >= 3 {
        return Ok(());
    }
    Err(bad())
}

/// yescrypt (`$y$`), Debian's default since bullseye, with the cost libxcrypt's `crypt_gensalt` picks
/// by default (`j9T`: N=4096, r=32, 16 MiB, as `mkpasswd -m yescrypt` and `passwd` write) and a random
/// 16-byte salt from the OS generator. RustCrypto's `yescrypt` crate is a port of the reference code;
/// the tests check its hashes against the system's libxcrypt.
pub fn hash_password(password: &str) -> Result<String, UserError> {
    use yescrypt::{PasswordHasher, Yescrypt};
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| UserError::Hash(e.to_string()))?;
    let h = Yescrypt::default()
        .hash_password_with_salt(password.as_bytes(), &salt)
        .map_err(|e| UserError::Hash(e.to_string()))?;
    Ok(h.as_str().to_string())
}

/// Letters and digits that cannot be mistaken for one another when read off a file or typed on a
/// phone (no 0/O/o, 1/l/I).
const RANDOM_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
/// 22 characters of a 56-symbol alphabet: about 127 bits.
const RANDOM_LEN: usize = 22;

/// A strong random password from the OS generator (getrandom), without modulo bias.
pub fn random_password() -> Result<String, UserError> {
    let n = RANDOM_ALPHABET.len();
    // Largest multiple of n that fits a byte: bytes at or above it are drawn again.
    let limit = 256 - 256 % n;
    let mut out = String::with_capacity(RANDOM_LEN);
    let mut buf = [0u8; 64];
    while out.len() < RANDOM_LEN {
        getrandom::fill(&mut buf).map_err(|e| UserError::Hash(e.to_string()))?;
        for &b in &buf {
            if (b as usize) < limit && out.len() < RANDOM_LEN {
                out.push(RANDOM_ALPHABET[b as usize % n] as char);
            }
        }
    }
    Ok(out)
}

/// Rejects passwords that cannot be stored or typed reliably.
pub fn check_password(password: &str, what: &str) -> Result<(), UserError> {
    let rejected = |reason: &str| UserError::Rejected {
        what: what.to_string(),
        reason: reason.to_string(),
    };
    if password.is_empty() {
        return Err(rejected("is empty"));
    }
    if password.chars().any(|c| c.is_control()) {
        return Err(rejected("contains control characters (newline, tab, ...)"));
    }
    Ok(())
}

/// Reads one line from standard input (for `--password-stdin`), without the line ending.
pub fn read_stdin_line() -> Result<String, UserError> {
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// True when a password can be asked for: standard input and standard error are terminals.
pub fn can_prompt() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

/// Asks on the terminal with echo off, twice; the answer is never echoed or returned in errors.
pub fn prompt_password(label: &str) -> Result<String, UserError> {
    loop {
        let first = prompt_hidden(&format!("{label}: "))?;
        if let Err(e) = check_password(&first, label) {
            eprintln!("{e}; try again");
            continue;
        }
        let second = prompt_hidden(&format!("{label} (again): "))?;
        if first == second {
            return Ok(first);
        }
        eprintln!("the two entries differ; try again");
    }
}

fn prompt_hidden(text: &str) -> Result<String, UserError> {
    let mut err = std::io::stderr();
    err.write_all(text.as_bytes())?;
    err.flush()?;
    use rustix::termios::{LocalModes, OptionalActions, tcgetattr, tcsetattr};
    let stdin = std::io::stdin();
    // Not a terminal (a pipe): nothing to hide.
    let saved = tcgetattr(&stdin).ok();
    // A stop signal during the prompt must give the terminal its echo back.
    let _restore = saved.clone().map(crate::signals::remember_terminal);
    if let Some(saved) = &saved {
        let mut term = saved.clone();
        term.local_modes &= !LocalModes::ECHO;
        term.local_modes |= LocalModes::ECHONL;
        let _ = tcsetattr(&stdin, OptionalActions::Now, &term);
    }
    let mut line = String::new();
    let res = stdin.lock().read_line(&mut line);
    if let Some(saved) = &saved {
        let _ = tcsetattr(&stdin, OptionalActions::Now, saved);
    }
    res?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// One `name:field:...` database (passwd, shadow, group, gshadow), keeping unknown lines as they are.
#[derive(Debug, Clone)]
pub struct Db {
    pub lines: Vec<Vec<String>>,
}

impl Db {
    pub fn parse(text: &str) -> Db {
        Db {
            lines: text
                .lines()
                .filter(|l| !l.is_empty())
                .map(|l| l.split(':').map(str::to_string).collect())
                .collect(),
        }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(&l.join(":"));
            s.push('\n');
        }
        s
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|l| l.first().map(String::as_str) == Some(name))
    }

    pub fn get_mut(&mut self, name: &str) -> Option<&mut Vec<String>> {
        let i = self.find(name)?;
        self.lines.get_mut(i)
    }

    /// Numeric ids in column `col` (2 for passwd/group).
    fn ids(&self, col: usize) -> Vec<u32> {
        self.lines
            .iter()
            .filter_map(|l| l.get(col)?.parse().ok())
            .collect()
    }
}

/// The four account databases of a tree.
#[derive(Debug, Clone)]
pub struct Accounts {
    pub passwd: Db,
    pub shadow: Db,
    pub group: Db,
    pub gshadow: Option<Db>,
}

/// What was done for the default user.
#[derive(Debug, Clone, serde::Serialize)]
pub struct UserReport {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    pub groups: Vec<String>,
    /// Requested groups that the system does not have (their packages are not installed).
    pub missing_groups: Vec<String>,
    pub created: bool,
    /// The password must be changed at the first login.
    pub password_expired: bool,
}

fn first_free(used: &[u32], from: u32, to: u32) -> Option<u32> {
    (from..=to).find(|i| !used.contains(i))
}

impl Accounts {
    /// Locks root's password (`*`: no password login; su/sudo from the default user still work).
    pub fn lock_root(&mut self, days: u64) -> Result<(), UserError> {
        let Some(l) = self.shadow.get_mut("root") else {
            self.shadow.lines.insert(
                0,
                [
                    "root",
                    "*",
                    &days.to_string(),
                    "0",
                    "99999",
                    "7",
                    "",
                    "",
                    "",
                ]
                .map(str::to_string)
                .to_vec(),
            );
            return Ok(());
        };
        while l.len() < 9 {
            l.push(String::new());
        }
        l[1] = "*".into();
        Ok(())
    }

    /// Creates the user (or updates it when it exists) with its own group, the hash and the
    /// supplementary groups the system has.
    /// `expire`: the password must be changed at the first login (shadow's last-change day 0, as
    /// `passwd --expire` sets it).
    pub fn ensure_user(
        &mut self,
        name: &str,
        hash: &str,
        shell: &str,
        groups: &[String],
        days: u64,
        expire: bool,
    ) -> Result<UserReport, UserError> {
        let home = format!("/home/{name}");
        let (uid, gid, created) = match self.passwd.find(name) {
            Some(i) => {
                let l = &self.passwd.lines[i];
                let uid =
                    l.get(2)
                        .and_then(|v| v.parse().ok())
                        .ok_or_else(|| UserError::Database {
                            file: "/etc/passwd".into(),
                            problem: format!("has a malformed line for `{name}`"),
                        })?;
                let gid = l.get(3).and_then(|v| v.parse().ok()).unwrap_or(uid);
                (uid, gid, false)
            }
            None => {
                let used_uids = self.passwd.ids(2);
                let used_gids = self.group.ids(2);
                let uid = (1000..60000)
                    .find(|i| !used_uids.contains(i) && !used_gids.contains(i))
                    .or_else(|| first_free(&used_uids, 1000, 59999))
                    .ok_or_else(|| UserError::Database {
                        file: "/etc/passwd".into(),
                        problem: "has no free user id between 1000 and 59999".into(),
                    })?;
                let gid = match self.group.find(name) {
                    Some(i) => self.group.lines[i]
                        .get(2)
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(uid),
                    None => {
                        let gid = if used_gids.contains(&uid) {
                            first_free(&used_gids, 1000, 59999).unwrap_or(uid)
                        } else {
                            uid
                        };
                        self.group.lines.push(vec![
                            name.into(),
                            "x".into(),
                            gid.to_string(),
                            String::new(),
                        ]);
                        if let Some(gs) = &mut self.gshadow
                            && gs.find(name).is_none()
                        {
                            gs.lines.push(vec![
                                name.into(),
                                "!".into(),
                                String::new(),
                                String::new(),
                            ]);
                        }
                        gid
                    }
                };
                self.passwd.lines.push(vec![
                    name.into(),
                    "x".into(),
                    uid.to_string(),
                    gid.to_string(),
                    ",,,".into(),
                    home.clone(),
                    shell.into(),
                ]);
                (uid, gid, true)
            }
        };
        let shadow_line = vec![
            name.to_string(),
            hash.to_string(),
            if expire { 0 } else { days }.to_string(),
            "0".into(),
            "99999".into(),
            "7".into(),
            String::new(),
            String::new(),
            String::new(),
        ];
        match self.shadow.get_mut(name) {
            Some(l) => *l = shadow_line,
            None => self.shadow.lines.push(shadow_line),
        }
        let mut added = Vec::new();
        let mut missing = Vec::new();
        for g in groups {
            if g == name {
                continue;
            }
            let Some(line) = self.group.get_mut(g) else {
                missing.push(g.clone());
                continue;
            };
            while line.len() < 4 {
                line.push(String::new());
            }
            add_member(&mut line[3], name);
            if let Some(gs) = &mut self.gshadow
                && let Some(sl) = gs.get_mut(g)
            {
                while sl.len() < 4 {
                    sl.push(String::new());
                }
                add_member(&mut sl[3], name);
            }
            added.push(g.clone());
        }
        Ok(UserReport {
            name: name.into(),
            uid,
            gid,
            home,
            shell: shell.into(),
            groups: added,
            missing_groups: missing,
            created,
            password_expired: expire,
        })
    }

    /// Numeric id of a group, if the system has it.
    pub fn gid_of(&self, group: &str) -> Option<u64> {
        let i = self.group.find(group)?;
        self.group.lines[i].get(2)?.parse().ok()
    }
}

fn add_member(field: &mut String, name: &str) {
    let mut members: Vec<&str> = field.split(',').filter(|m| !m.is_empty()).collect();
    if !members.contains(&name) {
        members.push(name);
    }
    *field = members.join(",");
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
    const SHADOW: &str = "root:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:\naudio:x:29:pulse\nnogroup:x:65534:\n";
    const GSHADOW: &str = "root:*::\nsudo:*::\naudio:*::pulse\nnogroup:*::\n";

    fn accounts() -> Accounts {
        Accounts {
            passwd: Db::parse(PASSWD),
            shadow: Db::parse(SHADOW),
            group: Db::parse(GROUP),
            gshadow: Some(Db::parse(GSHADOW)),
        }
    }

    #[test]
    fn creates_user_like_useradd() {
        let mut a = accounts();
        let groups = ["sudo", "audio", "bluetooth"].map(String::from);
        let r = a
            .ensure_user("debian", "$6$abc$def", "/bin/bash", &groups, 19675, false)
            .unwrap();
        assert_eq!((r.uid, r.gid), (1000, 1000));
        assert_eq!(r.missing_groups, ["bluetooth"]);
        let pw = a.passwd.render();
        assert!(
            pw.contains("debian:x:1000:1000:,,,:/home/debian:/bin/bash\n"),
            "{pw}"
        );
        assert!(
            a.shadow
                .render()
                .contains("debian:$6$abc$def:19675:0:99999:7:::\n")
        );
        let g = a.group.render();
        assert!(
            g.contains("sudo:x:27:debian\n") && g.contains("audio:x:29:pulse,debian\n"),
            "{g}"
        );
        assert!(g.contains("debian:x:1000:\n"), "{g}");
        let gs = a.gshadow.as_ref().unwrap().render();
        assert!(
            gs.contains("audio:*::pulse,debian\n") && gs.contains("debian:!::\n"),
            "{gs}"
        );
        // Again: nothing duplicated.
        let r2 = a
            .ensure_user("debian", "$6$x$y", "/bin/bash", &groups, 1, true)
            .unwrap();
        assert!(!r2.created && r2.password_expired);
        // Expired: last change on day 0, so the first login must set a new password.
        assert!(
            a.shadow.render().contains("debian:$6$x$y:0:0:99999:7:::\n"),
            "{}",
            a.shadow.render()
        );
        assert_eq!(a.group.render().matches("debian").count(), 3);
    }

    #[test]
    fn root_is_locked() {
        let mut a = Accounts {
            shadow: Db::parse("root:$6$x$y:1:0:99999:7:::\n"),
            ..accounts()
        };
        a.lock_root(5).unwrap();
        assert!(a.shadow.render().starts_with("root:*:"));
    }

    #[test]
    fn hashes_are_yescrypt_verify_and_are_salted() {
        use yescrypt::{PasswordVerifier, Yescrypt};
        let h1 = hash_password("correct horse").unwrap();
        let h2 = hash_password("correct horse").unwrap();
        assert!(h1.starts_with("$y$j9T$"), "{h1}");
        assert_ne!(h1, h2);
        validate_hash(&h1, "x").unwrap();
        Yescrypt::default()
            .verify_password(b"correct horse", h1.as_str())
            .unwrap();
        assert!(
            Yescrypt::default()
                .verify_password(b"wrong", h1.as_str())
                .is_err()
        );
    }

    #[test]
    fn libxcrypt_yescrypt_vector() {
        // From the system's libxcrypt: perl -e 'print crypt("pw", q($y$j9T$abcdefghijklmnop$))'.
        use yescrypt::{PasswordVerifier, Yescrypt};
        Yescrypt::default()
            .verify_password(
                b"pw",
                "$y$j9T$abcdefghijklmnop$wRwvHNqzMkHLG74uLLCRVTwaZ.a1aIothEUeYGf9oED",
            )
            .unwrap();
    }

    #[test]
    fn random_passwords_are_long_and_differ() {
        let a = random_password().unwrap();
        let b = random_password().unwrap();
        assert_eq!(a.len(), RANDOM_LEN);
        assert_ne!(a, b);
        assert!(a.bytes().all(|c| RANDOM_ALPHABET.contains(&c)), "{a}");
        check_password(&a, "x").unwrap();
        // Every symbol turns up: no part of the alphabet is unreachable.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..200 {
            seen.extend(random_password().unwrap().bytes());
        }
        assert_eq!(seen.len(), RANDOM_ALPHABET.len());
    }

    #[test]
    fn hash_validation() {
        for ok in ["$y$j9T$abc$def", "$6$salt$hash", "!", "*", "!$6$a$b"] {
            validate_hash(ok, "t").unwrap();
        }
        for bad in ["", "hunter2", "$6$a:b$c", "$6$", "$1$a$b"] {
            assert!(validate_hash(bad, "t").is_err(), "{bad}");
        }
        assert!(check_password("a\nb", "p").is_err());
        assert!(check_password("", "p").is_err());
        check_password("pässwörd 1!", "p").unwrap();
    }
}
