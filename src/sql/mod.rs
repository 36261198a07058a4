//! SQL and database URLs as text, below everything that runs them: the SQL scanner and
//! statement splitter, quoting for shell words and SQL, database URLs, and the migrations
//! directory (file names, versions, checksums). No I/O but reading a migrations directory.

pub mod migrations;
pub mod quote;
pub mod split;
pub mod url;

pub use url::{Engine, engine};
