//! A client's progress on disk, so a crashed client continues its session.
//!
//! The file holds the core's [`Snapshot`]: ids, token, counters, running sum
//! and CRC — never the numbers. It is replaced atomically (write a temporary
//! file, then rename over the old one), so a crash leaves either the old or
//! the new state, never a torn one.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use station_core::client::Snapshot;
use station_core::{ClientId, Secret};

/// Bumped when the layout changes; older files are refused, not misread.
const VERSION: u32 = 1;

/// Problems with a state file.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Reading or writing failed.
    #[error("state file {path}: {source}", path = .0.display(), source = .1)]
    Io(PathBuf, std::io::Error),
    /// The file is not a state file this version understands.
    #[error(
        "state file {path} is corrupt or from another version ({why}); remove it to start a new session",
        path = .0.display(),
        why = .1
    )]
    Corrupt(PathBuf, String),
}

#[derive(Serialize, Deserialize)]
struct OnDisk {
    version: u32,
    client_id: String,
    count: u32,
    nonce: String,
    token: Option<String>,
    next_index: u32,
    sum: u64,
    crc: u32,
    server_checksum: Option<u32>,
}

/// Reads `path`; `Ok(None)` if it does not exist.
pub fn load(path: &Path) -> Result<Option<Snapshot>, StateError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StateError::Io(path.into(), e)),
    };
    let corrupt = |why: String| StateError::Corrupt(path.into(), why);
    let d: OnDisk = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
    if d.version != VERSION {
        return Err(corrupt(format!(
            "version {}, expected {VERSION}",
            d.version
        )));
    }
    let secret = |hex: &str| parse_hex(hex).ok_or_else(|| corrupt(format!("bad secret {hex:?}")));
    let snapshot = Snapshot {
        client_id: ClientId::parse(&d.client_id).map_err(|e| corrupt(e.to_string()))?,
        count: d.count,
        nonce: secret(&d.nonce)?,
        token: d.token.as_deref().map(secret).transpose()?,
        next_index: d.next_index,
        sum: d.sum,
        crc: d.crc,
        server_checksum: d.server_checksum,
    };
    if !(1..=station_core::sequence::MAX_COUNT).contains(&snapshot.count)
        || snapshot.next_index > snapshot.count
    {
        return Err(corrupt(format!(
            "next_index {} / count {} out of range",
            snapshot.next_index, snapshot.count
        )));
    }
    Ok(Some(snapshot))
}

/// Replaces `path` with `snapshot`, atomically.
pub fn save(path: &Path, s: &Snapshot) -> Result<(), StateError> {
    let d = OnDisk {
        version: VERSION,
        client_id: s.client_id.to_string(),
        count: s.count,
        nonce: to_hex(&s.nonce),
        token: s.token.as_ref().map(to_hex),
        next_index: s.next_index,
        sum: s.sum,
        crc: s.crc,
        server_checksum: s.server_checksum,
    };
    let io = |e| StateError::Io(path.into(), e);
    let json = serde_json::to_vec_pretty(&d).expect("plain data always serializes");
    // A temporary file of its own in the same directory (so the rename is
    // atomic), created 0600: the file holds the resume token, a secret.
    // Its random name keeps two clients given one state file from writing
    // into each other's temporary file.
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let mut f = tempfile::Builder::new()
        .prefix(".station-state")
        .tempfile_in(dir)
        .map_err(io)?;
    f.write_all(&json).map_err(io)?;
    // Durable before the rename makes it visible.
    f.as_file().sync_all().map_err(io)?;
    f.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Removes `path` (after success); a missing file is fine.
pub fn remove(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StateError::Io(path.into(), e)),
        _ => Ok(()),
    }
}

fn to_hex(s: &Secret) -> String {
    s.as_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(hex: &str) -> Option<Secret> {
    if hex.len() != 32 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(Secret(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot() -> Snapshot {
        Snapshot {
            client_id: ClientId::parse("67e55044-10b1-426f-9247-bb680e5fe0c8").unwrap(),
            count: 10,
            nonce: Secret([1; 16]),
            token: Some(Secret([0xab; 16])),
            next_index: 4,
            sum: 12345,
            crc: 0xdead_beef,
            server_checksum: None,
        }
    }

    #[test]
    fn round_trip_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(load(&path).unwrap().is_none());
        save(&path, &snapshot()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(snapshot()));
        remove(&path).unwrap();
        assert!(load(&path).unwrap().is_none());
        remove(&path).unwrap();
    }

    #[test]
    fn corrupt_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for text in ["", "{", "[]", r#"{"version": 99}"#] {
            std::fs::write(&path, text).unwrap();
            assert!(
                matches!(load(&path), Err(StateError::Corrupt(..))),
                "{text:?}"
            );
        }
        save(&path, &snapshot()).unwrap();
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("\"next_index\": 4", "\"next_index\": 11");
        std::fs::write(&path, text).unwrap();
        assert!(matches!(load(&path), Err(StateError::Corrupt(..))));
    }

    /// The file holds the resume token, so only its owner may read it,
    /// whatever the umask; and an older, wider file is replaced.
    #[test]
    fn the_state_file_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        save(&path, &snapshot()).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{mode:o}");
    }

    /// Regression: two clients given one state file raced on the fixed
    /// `<path>.tmp`: one could rename the other's half-written file, or
    /// fail because it was gone. Each save now has a temporary file of its
    /// own; concurrent saves all succeed and the file is always whole.
    #[test]
    fn concurrent_saves_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::thread::scope(|scope| {
            for t in 0..4u32 {
                let path = &path;
                scope.spawn(move || {
                    for i in 0..50u32 {
                        let mut s = snapshot();
                        s.next_index = (t + i) % 10;
                        save(path, &s).unwrap();
                        assert!(load(path).unwrap().is_some());
                    }
                });
            }
        });
        assert!(load(&path).unwrap().is_some());
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"], "{names:?}");
    }
}
