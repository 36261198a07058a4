//! The public status page: a projection of the journal ([`model`]), rendered once per
//! change into bytes ([`snapshot`]) by [`html`], [`api`] and [`feed`], and served from
//! memory by [`server`]; [`follow`] watches the store for new events.

pub mod api;
pub mod command;
pub mod deliveries;
pub mod feed;
pub mod follow;
pub mod html;
pub mod manual;
pub mod metrics;
pub mod model;
pub mod schedule;
pub mod server;
pub mod snapshot;
pub mod subscribe;

use model::Page;
use snapshot::Snapshot;

/// Renders every public response of `page`.
pub fn render(page: &Page, version: u64) -> Snapshot {
    let mut snap = Snapshot {
        version,
        page: Some(std::sync::Arc::new(page.clone())),
        ..Snapshot::default()
    };
    html::render(page, &mut snap);
    api::render(page, &mut snap);
    feed::render(page, &mut snap);
    snap
}
