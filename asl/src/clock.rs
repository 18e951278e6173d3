//! Time sources. The engine reads the time and sleeps only through a
//! [`Clock`], so a whole canary with minute-long Waits runs in microseconds
//! on [`VirtualClock`] and in real time on [`WallClock`].
//!
//! ```
//! use cutover_asl::{Clock, VirtualClock};
//! use std::time::Duration;
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let clock = VirtualClock::new();
//! let t0 = clock.now();
//! clock.sleep(Duration::from_secs(60)).await;
//! assert_eq!(clock.now().duration_since(t0).unwrap(), Duration::from_secs(60));
//! # });
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A source of time the engine can sleep on.
pub trait Clock: Send + Sync + Debug {
    /// The current time.
    fn now(&self) -> SystemTime;
    /// Wait for `d` (as this clock measures time).
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// Real time: `SystemTime::now` and `tokio::time::sleep`.
#[derive(Debug, Default, Clone, Copy)]
pub struct WallClock;

impl Clock for WallClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep(d))
    }
}

/// Deterministic virtual time. `now()` starts at a fixed instant (or the one
/// given) and only moves when someone sleeps.
///
/// Concurrent sleepers (Parallel branches, Map iterations, a Task racing its
/// timeout) wake in order of their deadlines: a sleeper whose deadline is the
/// earliest pending one advances the clock to it and returns, the others
/// yield to the executor until their turn. Work that does not sleep on the
/// clock takes no virtual time.
#[derive(Debug)]
pub struct VirtualClock {
    inner: Mutex<VirtualInner>,
}

#[derive(Debug)]
struct VirtualInner {
    now: Duration,
    pending: Vec<(Duration, u64)>,
    seq: u64,
}

impl Default for VirtualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl VirtualClock {
    /// Start at 2024-01-01T00:00:00Z.
    pub fn new() -> VirtualClock {
        VirtualClock::starting_at(UNIX_EPOCH + Duration::from_secs(1_704_067_200))
    }

    /// Start at `t`.
    pub fn starting_at(t: SystemTime) -> VirtualClock {
        VirtualClock {
            inner: Mutex::new(VirtualInner {
                now: t.duration_since(UNIX_EPOCH).unwrap_or_default(),
                pending: Vec::new(),
                seq: 0,
            }),
        }
    }

    /// Move time forward by `d` without sleeping.
    pub fn advance(&self, d: Duration) {
        let mut g = self.lock();
        g.now = g.now.saturating_add(d);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VirtualInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + self.lock().now
    }

    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            let id = {
                let mut g = self.lock();
                g.seq += 1;
                let id = g.seq;
                let deadline = g.now.saturating_add(d);
                g.pending.push((deadline, id));
                id
            };
            // A sleeper dropped early (a Task that beat its timeout) must not
            // hold the clock back.
            let _guard = PendingGuard { clock: self, id };
            // Let every other ready future run (and register its own sleep)
            // before deciding who wakes first.
            let mut polls = 0u32;
            loop {
                tokio::task::yield_now().await;
                polls += 1;
                let mut g = self.lock();
                let min = g.pending.iter().min().copied();
                let Some(pos) = g.pending.iter().position(|(_, i)| *i == id) else {
                    return;
                };
                let mine = g.pending[pos];
                if polls >= 2 && min == Some(mine) {
                    g.pending.swap_remove(pos);
                    if mine.0 > g.now {
                        g.now = mine.0;
                    }
                    return;
                }
            }
        })
    }
}

struct PendingGuard<'a> {
    clock: &'a VirtualClock,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let mut g = self.clock.lock();
        g.pending.retain(|(_, i)| *i != self.id);
    }
}

/// Real sleeping, sped up: sleeping `d` really waits `d / speed`, but
/// `now()` reports time as if the full `d` had passed (measured from the
/// first time any `ScaledClock` was read). Useful to watch a long canary in
/// a demo: `ScaledClock { speed: 60.0 }` turns minutes into seconds.
#[derive(Debug, Clone, Copy)]
pub struct ScaledClock {
    /// How many times faster than real time (values <= 0 count as 1).
    pub speed: f64,
}

impl ScaledClock {
    /// A clock running `speed` times faster than real time.
    pub fn new(speed: f64) -> ScaledClock {
        ScaledClock { speed }
    }

    fn factor(&self) -> f64 {
        if self.speed.is_finite() && self.speed > 0.0 {
            self.speed
        } else {
            1.0
        }
    }
}

fn scaled_origin() -> (SystemTime, Instant) {
    static ORIGIN: std::sync::OnceLock<(SystemTime, Instant)> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(|| (SystemTime::now(), Instant::now()))
}

impl Clock for ScaledClock {
    fn now(&self) -> SystemTime {
        let (wall, origin) = scaled_origin();
        let scaled = Duration::try_from_secs_f64(origin.elapsed().as_secs_f64() * self.factor())
            .unwrap_or(Duration::MAX);
        wall.checked_add(scaled).unwrap_or(wall)
    }
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let real = Duration::try_from_secs_f64(d.as_secs_f64() / self.factor()).unwrap_or(Duration::MAX);
        Box::pin(tokio::time::sleep(real))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scaled_reports_sped_up_time() {
        let c = ScaledClock { speed: 1000.0 };
        let t0 = c.now();
        c.sleep(Duration::from_secs(2)).await;
        let passed = c.now().duration_since(t0).unwrap();
        assert!(passed >= Duration::from_millis(1900), "{passed:?}");
    }

    #[tokio::test]
    async fn virtual_concurrent_sleeps_take_the_max() {
        let c = VirtualClock::new();
        let t0 = c.now();
        let order = Mutex::new(Vec::new());
        let a = async {
            c.sleep(Duration::from_secs(60)).await;
            order.lock().unwrap().push(60);
        };
        let b = async {
            c.sleep(Duration::from_secs(30)).await;
            order.lock().unwrap().push(30);
        };
        futures_util::future::join(a, b).await;
        assert_eq!(c.now().duration_since(t0).unwrap(), Duration::from_secs(60));
        assert_eq!(*order.lock().unwrap(), vec![30, 60]);
    }
}
