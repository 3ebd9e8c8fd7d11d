//! The plug-ins `server.rs` builds beside the broker and hands out.
//!
//! Owns: nothing but the handles. The broker sees the cluster and the push
//! only through its own traits (`broker::Backplane`, `broker::DeliveryWatch`);
//! the listeners get the files they serve, the admin API all three for their
//! status and metrics. Must never: be reached through the broker.

use std::sync::Arc;

#[derive(Clone, Default)]
pub struct Plugins {
    /// This node's cluster membership, when `[cluster]` is set.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// The offline push, when `[push] webhook` is set.
    pub push: Option<Arc<crate::push::Push>>,
    /// Uploaded files, when `[files]` is enabled.
    pub files: Option<Arc<crate::files::Files>>,
}
