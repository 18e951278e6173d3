//! The one way cutover replaces a file: a crash leaves the old file or the new one, never a
//! torn one. Every file-backed store of the stages and hosts writes through here (the
//! `cutover-asl` engine, which depends on no cutover crate, keeps its own copy of the rule).

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to a temporary file beside `path` (a name no other thread or process uses),
/// syncs it, renames it over `path` and syncs the directory, creating the directory first.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomically_with(path, bytes, true)
}

/// [`write_atomically`], with the syncs only if `synced`: without them readers still see the
/// old file or the new one, but a crash may lose either — for files in a scratch data
/// directory ([`crate::BuildContext::is_scratch_path`]), which outlive neither the process nor
/// a crash.
pub fn write_atomically_with(path: &Path, bytes: &[u8], synced: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        if synced {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        // The rename itself must survive a crash.
        if synced {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_whole_file_and_leaves_no_temporary_behind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/state.json");
        write_atomically(&path, b"first, and longer").unwrap();
        write_atomically(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"], "no temporary file is left");
        // A path under a file cannot be written: an error, and the file is unchanged.
        assert!(write_atomically(&dir.path().join("nested/state.json/x"), b"x").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
    }
}
