//! Values current while a request's future is polled on this thread (its request id, its
//! operation): moved into a thread-local slot for each poll and back out after it, never
//! cloned on the way, so that code called from the handler (an HTTP client, a log line) can
//! read them.

use std::{cell::Cell, thread::LocalKey};

/// Runs `f` (one poll of a request's future) with the value in `slot` current in `key`. The
/// value is moved into the thread's slot and back, and the previous one is restored after
/// `f`, even when it panics: requests polled inside another's poll nest.
pub(crate) fn scope<T: 'static, R>(
    key: &'static LocalKey<Cell<Option<T>>>,
    slot: &mut Option<T>,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore<'a, T: 'static> {
        key: &'static LocalKey<Cell<Option<T>>>,
        slot: &'a mut Option<T>,
        previous: Option<T>,
    }
    impl<T: 'static> Drop for Restore<'_, T> {
        fn drop(&mut self) {
            let previous = self.previous.take();
            if let Ok(value) = self.key.try_with(|current| current.replace(previous)) {
                *self.slot = value;
            }
        }
    }
    let previous = key
        .try_with(|current| current.replace(slot.take()))
        .unwrap_or_default();
    let _restore = Restore {
        key,
        slot,
        previous,
    };
    f()
}

/// A clone of the value current in `key`, if any.
pub(crate) fn get<T: Clone + 'static>(key: &'static LocalKey<Cell<Option<T>>>) -> Option<T> {
    key.try_with(|current| {
        let value = current.take();
        let copy = value.clone();
        current.set(value);
        copy
    })
    .ok()
    .flatten()
}
