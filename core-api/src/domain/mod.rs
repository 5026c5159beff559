//! The service's own vocabulary, with no I/O: what an analysis is and shows
//! ([`analysis`]), the window of history it covers ([`window`]), the figures it ends with
//! ([`summary`]) and the events it streams ([`event`]). Every other layer builds on these
//! types; they depend on nothing else in the crate.

pub mod analysis;
pub mod event;
pub mod summary;
pub mod window;

pub use analysis::{PartnerState, PartnerStatus, Snapshot, Status};
pub use event::AnalysisEvent;
pub use summary::Summary;
pub use window::Window;
