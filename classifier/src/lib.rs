//! Transaction classifier for credit analysis.
//!
//! Labels each bank movement with one of the 19 transaction categories of
//! `docs/taxonomy.md` (Plaid PFC codes). The pieces, in the order data flows through them:
//!
//! - [`data`] reads and writes the CSV format every command uses, naming the line of any
//!   malformed row;
//! - [`normalize`] and [`features`] turn a movement into namespaced, signed hashed features;
//! - [`train`] fits `linfa_logistic::MultiLogisticRegression` on those features and
//!   produces a [`model::ModelFile`];
//! - [`model`] loads a model file into a sparse [`model::Scorer`] that predicts without linfa
//!   in the hot path;
//! - [`metrics`] computes precision, recall, F1 and the confusion matrix;
//! - [`corpus`] builds the labelled training corpus and the evaluation set.
//!
//! The feature settings are stored inside the model file, so the code that trains a model and
//! the code that serves it cannot featurise differently.
//!
//! [`train`], [`corpus`] and [`card`] (and the `classifier` binary) need the `train` feature,
//! on by default; a service that only scores depends on this crate without it.

#[cfg(feature = "train")]
pub mod card;
#[cfg(feature = "train")]
pub mod corpus;
pub mod data;
pub mod error;
pub mod features;
pub mod labels;
pub mod metrics;
pub mod model;
pub mod normalize;
#[cfg(feature = "train")]
pub mod train;

pub use data::{Transaction, TransactionReader};
pub use error::ClassifierError;
pub use features::{FeatureSettings, Featurizer};
pub use labels::{Confidence, Label};
pub use model::{ModelFile, Prediction, Scorer};
