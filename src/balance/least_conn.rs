//! LeastConnections (stub: being written).

use super::{Strategy, View};
use crate::backend::BackendSet;

pub struct LeastConnections {
    n: usize,
}

impl LeastConnections {
    pub fn new(set: &BackendSet) -> LeastConnections {
        LeastConnections { n: set.len() }
    }
}

impl Strategy for LeastConnections {
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        (0..self.n).find(|&i| view.eligible(i))
    }
}
