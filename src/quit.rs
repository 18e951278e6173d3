//! Ending the process early without leaving its helper processes behind: `outln!` ends the
//! process when stdout is closed (`cutover demo | head`), which runs no destructors, so children
//! a command owns (the demo's Prometheus) are registered here and killed first.

use std::io;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex, PoisonError, Weak};

type Slot = Arc<Mutex<Option<Child>>>;

static OWNED: Mutex<Vec<Weak<Mutex<Option<Child>>>>> = Mutex::new(Vec::new());

/// A child process killed when this is dropped, and when the process ends through [`exit`].
#[derive(Debug)]
pub(crate) struct OwnedChild(Slot);

impl OwnedChild {
    /// Spawns `command` as an owned child.
    pub(crate) fn spawn(command: &mut Command) -> io::Result<OwnedChild> {
        let slot: Slot = Arc::new(Mutex::new(Some(command.spawn()?)));
        let mut owned = OWNED.lock().unwrap_or_else(PoisonError::into_inner);
        owned.retain(|w| w.strong_count() > 0);
        owned.push(Arc::downgrade(&slot));
        Ok(OwnedChild(slot))
    }

    /// Its exit status, if it has exited.
    pub(crate) fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        match self.0.lock().unwrap_or_else(PoisonError::into_inner).as_mut() {
            Some(child) => child.try_wait(),
            None => Ok(None),
        }
    }
}

fn kill(slot: &Mutex<Option<Child>>) {
    if let Some(mut child) = slot.lock().unwrap_or_else(PoisonError::into_inner).take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for OwnedChild {
    fn drop(&mut self) {
        kill(&self.0);
    }
}

/// Kills every owned child, then ends the process with `code`.
pub(crate) fn exit(code: i32) -> ! {
    let owned = std::mem::take(&mut *OWNED.lock().unwrap_or_else(PoisonError::into_inner));
    for slot in owned.iter().filter_map(Weak::upgrade) {
        kill(&slot);
    }
    std::process::exit(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_child_is_killed_when_dropped() {
        let child = OwnedChild::spawn(Command::new("sleep").arg("30")).unwrap();
        let pid = child.0.lock().unwrap().as_ref().unwrap().id();
        assert!(child.try_wait().unwrap().is_none());
        drop(child);
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read(format!("/proc/{pid}/cmdline")).unwrap().is_empty(),
            "the child is gone"
        );
    }
}
