//! One host's uplink shared fairly by its connections, as TCP shares it (`--fair-share`): every
//! connection with a chunk to send sends at once, each at the uplink's rate over their number.
//! A chunk wanted by many then reaches them all at the same late time, where the default model
//! (one chunk at a time, connections in turn) lets the first receivers pass it on early.

/// The chunks being sent: (link, chunk, bytes left), all progressing at rate / count.
#[derive(Default)]
pub struct FairUplink {
    active: Vec<(u32, u32, f64)>,
    /// Simulated time (ns) up to which `active` is brought up to date.
    updated: u64,
    /// Bumped whenever the next completion moves; a completion event of another generation is
    /// stale.
    pub generation: u32,
}

impl FairUplink {
    /// Whether any chunk is being sent.
    pub fn busy(&self) -> bool {
        !self.active.is_empty()
    }

    /// Whether `chunk` is being sent on `link`.
    pub fn sending(&self, link: u32, chunk: u32) -> bool {
        self.active.iter().any(|a| a.0 == link && a.1 == chunk)
    }

    /// Whether `link` has a chunk being sent now.
    pub fn sending_on(&self, link: u32) -> bool {
        self.active.iter().any(|a| a.0 == link)
    }

    /// Brings the bytes left up to `now`, at `rate` bytes/s shared by the active chunks.
    pub fn advance(&mut self, now: u64, rate: f64) {
        let k = self.active.len();
        if k > 0 {
            let sent = (now - self.updated) as f64 / 1e9 * rate / k as f64;
            for a in &mut self.active {
                a.2 -= sent;
            }
        }
        self.updated = now;
    }

    /// Starts sending `chunk` of `bytes` on `link` (after [`FairUplink::advance`] to now).
    pub fn start(&mut self, link: u32, chunk: u32, bytes: f64) {
        self.active.push((link, chunk, bytes));
    }

    /// The chunks done by now (after [`FairUplink::advance`]): (link, chunk).
    pub fn take_finished(&mut self) -> Vec<(u32, u32)> {
        let mut done = Vec::new();
        // Within a byte: float rounding.
        self.active.retain(|a| {
            let finished = a.2 <= 1.0;
            if finished {
                done.push((a.0, a.1));
            }
            !finished
        });
        done
    }

    /// When the next chunk will be done, at `rate` (ns), with a new generation; `None` if idle.
    pub fn next_done(&mut self, rate: f64) -> Option<u64> {
        self.generation = self.generation.wrapping_add(1);
        let least = self
            .active
            .iter()
            .map(|a| a.2)
            .fold(f64::INFINITY, f64::min);
        least.is_finite().then(|| {
            let secs = least.max(0.0) * self.active.len() as f64 / rate;
            self.updated + (secs * 1e9).ceil() as u64
        })
    }
}
