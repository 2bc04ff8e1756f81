//! RoundRobin (stub: being written).

use super::{Strategy, View};
use crate::backend::BackendSet;

pub struct RoundRobin {
    n: usize,
}

impl RoundRobin {
    pub fn new(set: &BackendSet) -> RoundRobin {
        RoundRobin { n: set.len() }
    }
}

impl Strategy for RoundRobin {
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        (0..self.n).find(|&i| view.eligible(i))
    }
}
