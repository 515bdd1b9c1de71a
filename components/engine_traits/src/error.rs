/// Engine errors. All of them are fatal to the operation that hit them; the
/// caller decides whether the process can go on.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("invalid column family {0:?}")]
    InvalidCf(String),
    #[error("engine: {0}")]
    Engine(String),
    #[error("corrupted data: {0}")]
    Corruption(String),
}

pub type Result<T> = std::result::Result<T, Error>;
