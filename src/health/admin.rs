//! What the admin API sets on a backend at run time: drained, and a weight override.
//!
//! It lives in the backend's shared slot (one `AtomicU64`, [`AdminState::pack`]), beside
//! its breaker, so a write by the admin listener (prober thread or process) is seen by
//! every worker thread or process at its next pick, with no lock and no message. The
//! request path reads it with one `Relaxed` load per candidate. Slots are found by
//! backend id and kept across reloads, so the state holds for as long as the backend
//! stays configured; the admin listener clears it for a backend a reload adds (a slot
//! remembered from an earlier config starts clean), and a slot claimed for a new id is
//! all zeros, which means "nothing set".

/// Bit 0: drained (no new requests). Bits 32..64: weight override, 0 = none.
const DRAINED: u64 = 1;

/// One backend's admin state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AdminState {
    /// No new requests go to it (in-flight ones finish).
    pub drained: bool,
    /// Replaces the configured weight while set (always >= 1).
    pub weight: Option<u32>,
}

impl AdminState {
    pub fn pack(self) -> u64 {
        u64::from(self.drained) | u64::from(self.weight.unwrap_or(0)) << 32
    }

    pub fn unpack(v: u64) -> AdminState {
        let w = (v >> 32) as u32;
        AdminState {
            drained: v & DRAINED != 0,
            weight: (w != 0).then_some(w),
        }
    }

    /// Whether a packed word says drained (the request path's test).
    #[inline]
    pub fn drained_in(v: u64) -> bool {
        v & DRAINED != 0
    }

    /// The weight override of a packed word, 0 = none.
    #[inline]
    pub fn weight_in(v: u64) -> u32 {
        (v >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_is_nothing_set_and_every_state_survives_its_word() {
        assert_eq!(AdminState::unpack(0), AdminState::default());
        for drained in [false, true] {
            for weight in [None, Some(1), Some(7), Some(u32::MAX)] {
                let s = AdminState { drained, weight };
                let v = s.pack();
                assert_eq!(AdminState::unpack(v), s);
                assert_eq!(AdminState::drained_in(v), drained);
                assert_eq!(AdminState::weight_in(v), weight.unwrap_or(0));
            }
        }
    }
}
