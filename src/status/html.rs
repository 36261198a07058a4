//! (being written)

use super::model::Page;
use super::snapshot::Snapshot;

pub fn render(_page: &Page, _snap: &mut Snapshot) {}
