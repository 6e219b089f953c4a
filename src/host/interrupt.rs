//! Holding off SIGINT, SIGTERM and SIGHUP while `tre-spank image` must finish a step
//! (opening the store for jobs) even when the administrator interrupts it.
//!
//! A handler, not `SIG_IGN`: an ignored signal stays ignored in the runtime the tool
//! runs, a handled one is reset to its default there, so Ctrl-C still stops podman.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};

static CAUGHT: AtomicBool = AtomicBool::new(false);

extern "C" fn note(_: libc::c_int) {
    CAUGHT.store(true, Ordering::SeqCst);
}

const HELD: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The signals held while this lives; the previous handlers come back with
/// [`Held::release`] (or on drop).
pub struct Held {
    previous: Vec<(Signal, SigAction)>,
}

impl Held {
    pub fn new() -> Held {
        CAUGHT.store(false, Ordering::SeqCst);
        let action = SigAction::new(
            SigHandler::Handler(note),
            SaFlags::SA_RESTART,
            SigSet::empty(),
        );
        let mut previous = Vec::new();
        for sig in HELD {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe;
            // the previous action is restored by `restore`.
            if let Ok(old) = unsafe { sigaction(sig, &action) } {
                previous.push((sig, old));
            }
        }
        Held { previous }
    }

    /// Restores the previous handlers; whether one of the signals came meanwhile.
    pub fn release(mut self) -> bool {
        self.restore();
        CAUGHT.load(Ordering::SeqCst)
    }

    fn restore(&mut self) {
        for (sig, old) in self.previous.drain(..) {
            // SAFETY: puts back the action that was in place before `new`.
            let _ = unsafe { sigaction(sig, &old) };
        }
    }
}

impl Default for Held {
    fn default() -> Held {
        Held::new()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.restore();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The current action for `sig`, read by setting it to itself.
    fn current(sig: Signal) -> &'static str {
        let probe = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
        // SAFETY: installs the default for a moment and puts the old action straight back.
        let old = unsafe { sigaction(sig, &probe) }.unwrap();
        // SAFETY: restores the action read just above.
        unsafe { sigaction(sig, &old) }.unwrap();
        match old.handler() {
            SigHandler::SigDfl => "default",
            SigHandler::SigIgn => "ignored",
            _ => "a handler",
        }
    }

    #[test]
    fn a_held_signal_is_noted_not_fatal_and_the_old_handler_returns() {
        // What the test process started with (SIG_IGN under nohup, else the default).
        let before = current(Signal::SIGHUP);
        let held = Held::new();
        nix::sys::signal::raise(Signal::SIGHUP).unwrap();
        assert!(held.release(), "SIGHUP was noted");
        let held = Held::new();
        assert!(!held.release(), "nothing came the second time");
        assert_eq!(current(Signal::SIGHUP), before, "the old action came back");
    }
}
