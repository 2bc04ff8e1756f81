//! Sticky (stub: being written).

use super::{Strategy, View};
use crate::backend::BackendSet;

pub struct Sticky {
    n: usize,
}

impl Sticky {
    pub fn new(set: &BackendSet) -> Sticky {
        Sticky { n: set.len() }
    }
}

impl Strategy for Sticky {
    fn pick(&self, view: &View<'_>) -> Option<usize> {
        (0..self.n).find(|&i| view.eligible(i))
    }
}

impl Sticky {
    pub fn pick_sticky(&self, view: &View<'_>) -> Option<super::Pick> {
        self.pick(view).map(|index| super::Pick {
            index,
            set_cookie: true,
        })
    }
}
