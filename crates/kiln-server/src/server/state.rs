//! What every handler shares: the store, the log hub, the dispatcher and the server's
//! settings. Cheap to clone (handles and one `Arc`), as axum clones it per request.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::dispatch::Dispatcher;
use crate::log_hub::LogHub;
use crate::secret_box::SecretBox;
use crate::store::Store;
use kiln_api::uploads::ContextLimit;
use tokio::sync::Notify;

/// Settings handlers read; fixed for the server's lifetime.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where git hosts reach this server (the base of webhook URLs).
    pub public_url: String,
    pub data_dir: PathBuf,
    /// The registry tags without a host get, and `{{.Run.Registry}}` when validating.
    pub default_registry: Option<String>,
    /// Image aliases task files are validated with.
    pub images: BTreeMap<String, String>,
    /// `POST /uploads` larger than this is a 413.
    pub max_upload_bytes: u64,
    /// Uploads unpacking to more than this are a 413.
    pub max_context: ContextLimit,
}

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub hub: LogHub,
    /// Hands runs to agents (embedded and remote) and takes their reports.
    pub dispatch: Arc<Dispatcher>,
    /// Seals run requests and task definitions.
    pub secrets: Arc<SecretBox>,
    /// Notified when timers change, so the timer loop looks again.
    pub timers: Arc<Notify>,
    pub settings: Arc<Settings>,
}
