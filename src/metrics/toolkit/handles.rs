//! [`CodeCounters`]: the counters of one series by status, created on first use.

use std::{
    fmt,
    sync::{OnceLock, PoisonError, RwLock},
};

use metrics::Counter;

/// The handles (counters, histograms) of one series by a status key, each registered the first
/// time its status is seen.
///
/// The `N` statuses that have a slot (the common HTTP codes, every gRPC code, every job
/// status) are read without a lock; the others are in a short locked list.
///
/// ```
/// use metrics::{Histogram, Key};
/// use towerscope::metrics::toolkit::{RecorderRef, StatusHandles};
///
/// let durations: StatusHandles<u16, Histogram, 2> = StatusHandles::new();
/// let slot = |code: u16| [200, 404].iter().position(|c| *c == code);
/// let register = |code: u16| RecorderRef::Global.histogram(&Key::from_name(format!("d_{code}")));
/// durations.with(200, slot(200), register, |h| h.record(0.1));
/// durations.with(503, slot(503), register, |h| h.record(0.2));
/// ```
pub struct StatusHandles<C, H, const N: usize> {
    slots: [OnceLock<H>; N],
    others: RwLock<Vec<(C, H)>>,
}

impl<C, H, const N: usize> fmt::Debug for StatusHandles<C, H, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StatusHandles").finish_non_exhaustive()
    }
}

impl<C: Copy + PartialEq, H, const N: usize> Default for StatusHandles<C, H, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Copy + PartialEq, H, const N: usize> StatusHandles<C, H, N> {
    /// No handle registered yet.
    pub fn new() -> Self {
        Self {
            slots: std::array::from_fn(|_| OnceLock::new()),
            others: RwLock::new(Vec::new()),
        }
    }

    /// Calls `f` with the handle of `code`, registering it with `register` on first use.
    /// `slot` is the code's slot (`< N`), or `None` for a code without one.
    pub fn with(
        &self,
        code: C,
        slot: Option<usize>,
        register: impl FnOnce(C) -> H,
        f: impl FnOnce(&H),
    ) {
        if let Some(cell) = slot.and_then(|s| self.slots.get(s)) {
            return f(cell.get_or_init(|| register(code)));
        }
        fn find<C: PartialEq, H>(list: &[(C, H)], code: C) -> Option<&H> {
            list.iter().find(|(c, _)| *c == code).map(|(_, h)| h)
        }
        let others = self.others.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(handle) = find(&others, code) {
            return f(handle);
        }
        drop(others);
        let mut others = self.others.write().unwrap_or_else(PoisonError::into_inner);
        match find(&others, code) {
            Some(handle) => f(handle),
            None => {
                let handle = register(code);
                f(&handle);
                others.push((code, handle));
            }
        }
    }
}

/// The counters of one series by a status label (an HTTP code, a gRPC code, an outcome),
/// each registered the first time its status is counted: [`StatusHandles`] of counters.
///
/// ```
/// use metrics::Key;
/// use towerscope::metrics::toolkit::{CodeCounters, RecorderRef};
///
/// let counters: CodeCounters<u16, 2> = CodeCounters::new();
/// let slot = |code: u16| [200, 404].iter().position(|c| *c == code);
/// let register = |code: u16| RecorderRef::Global.counter(&Key::from_name(format!("c_{code}")));
/// counters.increment(200, slot(200), register);
/// counters.increment(503, slot(503), register);
/// ```
pub struct CodeCounters<C, const N: usize>(StatusHandles<C, Counter, N>);

impl<C, const N: usize> fmt::Debug for CodeCounters<C, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CodeCounters").finish_non_exhaustive()
    }
}

impl<C: Copy + PartialEq, const N: usize> Default for CodeCounters<C, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Copy + PartialEq, const N: usize> CodeCounters<C, N> {
    /// No counter registered yet.
    pub fn new() -> Self {
        Self(StatusHandles::new())
    }

    /// Adds one to the counter of `code`, registering it with `register` on first use.
    /// `slot` is the code's slot (`< N`), or `None` for a code without one.
    pub fn increment(&self, code: C, slot: Option<usize>, register: impl FnOnce(C) -> Counter) {
        self.0
            .with(code, slot, register, |counter| counter.increment(1));
    }
}

/// Status codes whose counters live in lock-free slots in the HTTP families.
const SLOTTED_HTTP_CODES: [u16; HTTP_SLOTS] = [
    200, 201, 202, 204, 206, 301, 302, 303, 304, 307, 308, 400, 401, 403, 404, 405, 406, 408, 409,
    410, 412, 413, 415, 416, 422, 429, 499, 500, 501, 502, 503, 504,
];

/// The number of HTTP status codes with a slot.
pub const HTTP_SLOTS: usize = 32;

/// `SLOT_OF[code]` = slot index + 1, or 0 for codes without a slot.
static SLOT_OF: [u8; 600] = {
    let mut table = [0u8; 600];
    let mut i = 0;
    while i < SLOTTED_HTTP_CODES.len() {
        table[SLOTTED_HTTP_CODES[i] as usize] = (i + 1) as u8;
        i += 1;
    }
    table
};

/// The slot of an HTTP status code in a `CodeCounters<_, HTTP_SLOTS>`: the common codes
/// (200, 404, 499, 503, ...) have one.
pub fn http_slot(code: u16) -> Option<usize> {
    match SLOT_OF.get(usize::from(code)) {
        Some(&slot) if slot > 0 => Some(usize::from(slot) - 1),
        _ => None,
    }
}

/// The label value of an HTTP status code, without formatting for the usual ones.
pub(crate) fn status_label(code: u16) -> metrics::SharedString {
    use metrics::SharedString;
    match code {
        200 => SharedString::const_str("200"),
        201 => SharedString::const_str("201"),
        204 => SharedString::const_str("204"),
        404 => SharedString::const_str("404"),
        499 => SharedString::const_str("499"),
        500 => SharedString::const_str("500"),
        other => SharedString::from(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    };

    use metrics::Key;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::*;
    use crate::metrics::toolkit::RecorderRef;

    #[test]
    fn each_code_is_registered_once_slotted_or_not() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let recorder = RecorderRef::Shared(Arc::new(recorder));
        let registered = AtomicUsize::new(0);
        let counters: CodeCounters<u16, HTTP_SLOTS> = CodeCounters::new();
        for code in [200, 200, 418, 418, 418, 503] {
            counters.increment(code, http_slot(code), |code| {
                registered.fetch_add(1, Ordering::Relaxed);
                recorder.counter(&Key::from_name(format!("c{code}")))
            });
        }
        assert_eq!(registered.load(Ordering::Relaxed), 3);
        let mut values: Vec<_> = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(k, _, _, v)| (k.key().name().to_owned(), v))
            .collect();
        values.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            values,
            vec![
                ("c200".to_owned(), DebugValue::Counter(2)),
                ("c418".to_owned(), DebugValue::Counter(3)),
                ("c503".to_owned(), DebugValue::Counter(1)),
            ]
        );
    }

    #[test]
    fn common_http_codes_have_slots() {
        assert_eq!(http_slot(200), Some(0));
        assert!(http_slot(499).is_some());
        assert_eq!(http_slot(418), None);
        assert_eq!(http_slot(9999), None);
        assert_eq!(status_label(302).as_ref(), "302");
        assert_eq!(status_label(499).as_ref(), "499");
    }
}
