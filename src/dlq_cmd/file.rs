//! Redriving the daemon's dead-letter file: run each line's event, then rewrite the file
//! without the lines whose events settled.
//!
//! The rewrite is atomic — the kept lines go to a temporary file beside it, synced, then
//! renamed over it — and safe while the daemon appends: the daemon holds an exclusive lock on
//! the file around each record it writes (`src/serve/dead_letter.rs`), and the rewrite holds
//! the same lock from reading what was appended since the run began until the rename. The
//! daemon, waiting for the lock meanwhile, then finds its path naming a new file and reopens
//! it. A file moved away during the run (rotated) is left alone: nothing is rewritten, and a
//! second run redrives only duplicates, which `dedup` drops.

use std::fs::File;
use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;

use super::Redrive;
use super::letter;

/// The file as it was read: its bytes and identity.
struct Snapshot {
    bytes: Vec<u8>,
    identity: Identity,
}

/// Which file a path names (device and inode on Unix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity(u64, u64);

#[cfg(unix)]
fn identity(file: &File) -> std::io::Result<Identity> {
    use std::os::unix::fs::MetadataExt as _;
    let m = file.metadata()?;
    Ok(Identity(m.dev(), m.ino()))
}

/// Elsewhere a file is never replaced under a reader this way; every file is the same one.
#[cfg(not(unix))]
fn identity(_file: &File) -> std::io::Result<Identity> {
    Ok(Identity(0, 0))
}

/// Opens `path` and takes its lock, making sure the path still names the locked file (the
/// daemon or an earlier rewrite may have replaced it meanwhile).
fn open_locked(path: &Path) -> anyhow::Result<File> {
    loop {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        let named = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        if identity(&named)? == identity(&file)? {
            return Ok(file);
        }
    }
}

fn read_snapshot(path: &Path) -> anyhow::Result<Snapshot> {
    let mut file = open_locked(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(Snapshot {
        identity: identity(&file)?,
        bytes,
    })
}

/// Redrives every line of the dead-letter file at `path`.
pub(crate) async fn redrive(path: &Path, redrive: &mut Redrive) -> anyhow::Result<()> {
    let snapshot = read_snapshot(path)?;
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = 0usize;
    for (number, line) in snapshot.bytes.split(|&b| b == b'\n').enumerate() {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let letter = letter::read(line);
        let origin = format!("{}:{}", path.display(), number + 1);
        if redrive.letter(&origin, &letter, None).await {
            removed += 1;
        } else {
            kept.push(line);
        }
    }
    if removed == 0 {
        return Ok(());
    }
    rewrite(path, &snapshot, &kept)
}

/// Replaces the file with `kept` and whatever was appended since `snapshot`, atomically and
/// under the file's lock.
fn rewrite(path: &Path, snapshot: &Snapshot, kept: &[&[u8]]) -> anyhow::Result<()> {
    let mut file = open_locked(path)?;
    if identity(&file)? != snapshot.identity {
        anyhow::bail!(
            "{} was moved away (rotated) during the redrive; it is left as it is \
             (a second redrive finds the redriven events to be duplicates)",
            path.display()
        );
    }
    let mut now = Vec::new();
    file.read_to_end(&mut now)
        .with_context(|| format!("reading {}", path.display()))?;
    let Some(appended) = now.strip_prefix(snapshot.bytes.as_slice()) else {
        anyhow::bail!(
            "{} changed other than by appending during the redrive; it is left as it is",
            path.display()
        );
    };
    let mut replacement = Vec::with_capacity(now.len());
    for line in kept {
        replacement.extend_from_slice(line);
        replacement.push(b'\n');
    }
    replacement.extend_from_slice(appended);
    cutover_core::fs::write_atomically(path, &replacement)
        .with_context(|| format!("rewriting {}", path.display()))?;
    // Dropping `file` releases the lock; a daemon waiting for it reopens the new file.
    drop(file);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    #[test]
    fn the_rewrite_keeps_the_kept_lines_and_what_was_appended_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        let snapshot = read_snapshot(&path).unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap()
            .write_all(b"d\n")
            .unwrap();
        rewrite(&path, &snapshot, &[b"b"]).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "b\nd\n");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn a_file_rotated_during_the_run_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dl.jsonl");
        std::fs::write(&path, "a\n").unwrap();
        let snapshot = read_snapshot(&path).unwrap();
        std::fs::rename(&path, dir.path().join("dl.jsonl.1")).unwrap();
        std::fs::write(&path, "new\n").unwrap();
        let err = rewrite(&path, &snapshot, &[]).unwrap_err();
        assert!(err.to_string().contains("rotated"), "{err}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "new\n");
    }
}
