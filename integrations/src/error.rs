//! The integrations error type. Messages never carry a CPF or a token.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    /// Bad configuration; the message names the key.
    #[error("configuration: {0}")]
    Config(String),
    /// Redis could not be reached or answered unexpectedly.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The retry queue is full.
    #[error("the retry queue is full ({0} jobs)")]
    QueueFull(u64),
    /// A partner name no configuration knows.
    #[error("unknown partner `{0}`")]
    UnknownPartner(String),
    /// A stored job could not be read back.
    #[error("corrupt queue entry: {0}")]
    CorruptJob(String),
}
