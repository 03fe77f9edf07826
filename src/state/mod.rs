//! The cluster view: a synchronous index of GPU nodes and pods, fed by watch events.
//!
//! Kubernetes objects are translated into core types once, here (`translate`), and applied to a
//! [`ClusterSnapshot`] behind a read-write lock. Readers take a consistent snapshot with
//! [`ClusterView::read`]; each change bumps a generation on a `tokio::sync::watch` channel.
//! Must not: talk to the API server (that is `controller`), or make policy decisions (`core`).

pub mod translate;

use crate::config::ValidConfig;
use crate::core::ClusterSnapshot;

/// What the translation needs from the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewSettings {
    /// Managed GPU resource names.
    pub gpu_resources: Vec<String>,
    /// Pod label naming the tenant.
    pub tenant_label: String,
}

impl ViewSettings {
    /// Takes the relevant fields of the config.
    pub fn from_config(config: &ValidConfig) -> Self {
        Self {
            gpu_resources: config.gpu_resources.clone(),
            tenant_label: config.tenant_label.clone(),
        }
    }
}

/// The live cluster view shared by the extender, the controller and the metrics.
#[derive(Debug)]
pub struct ClusterView {
    settings: ViewSettings,
    snapshot: parking_lot::RwLock<ClusterSnapshot>,
}

impl ClusterView {
    /// An empty, not yet synced view.
    pub fn new(settings: ViewSettings) -> Self {
        Self {
            settings,
            snapshot: parking_lot::RwLock::new(ClusterSnapshot::new()),
        }
    }

    /// The translation settings.
    pub fn settings(&self) -> &ViewSettings {
        &self.settings
    }

    /// A consistent read-only snapshot; hold it only for the length of one decision.
    pub fn read(&self) -> parking_lot::RwLockReadGuard<'_, ClusterSnapshot> {
        self.snapshot.read()
    }
}
