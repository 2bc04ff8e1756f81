//! Random (stub: being written).

use super::{Strategy, View};
use crate::backend::BackendSet;

pub struct Random {
    n: usize,
}

impl Random {
    pub fn new(set: &BackendSet) -> Random {
        Random { n: set.len() }
    }
}

impl Strategy for Random {
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        (0..self.n).find(|&i| view.eligible(i))
    }
}
