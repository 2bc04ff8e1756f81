//! WeightedRoundRobin (stub: being written).

use super::{Strategy, View};
use crate::backend::BackendSet;

pub struct WeightedRoundRobin {
    n: usize,
}

impl WeightedRoundRobin {
    pub fn new(set: &BackendSet) -> WeightedRoundRobin {
        WeightedRoundRobin { n: set.len() }
    }
}

impl Strategy for WeightedRoundRobin {
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        (0..self.n).find(|&i| view.eligible(i))
    }
}
