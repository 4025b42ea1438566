//! The command catalog: what the services below the command layer (ACL,
//! metrics, command statistics) know of commands — how many there are, each
//! one's name and ACL categories, by the index of the command table.
//!
//! The table itself (`cmd::registry`) lives in the command layer above, with
//! the handlers. It installs itself here when the server starts
//! ([`install`]), so the services see commands without importing the layer
//! above them (docs/architecture.md, the direction rule).
//!
//! **Owns:** the [`Catalog`] view. **Must not touch:** handlers, `Ctx`.

use std::sync::OnceLock;

/// The command table as the services see it; indexes are the table's.
pub(crate) trait Catalog: Send + Sync {
    /// Number of commands.
    fn len(&self) -> usize;
    /// Name of command `index`, lower case.
    fn name(&self, index: usize) -> &'static str;
    /// ACL categories of command `index`, without the `@`.
    fn categories(&self, index: usize) -> &'static [&'static str];
    /// Index of the command called `name` (any case).
    fn index_of(&self, name: &[u8]) -> Option<usize>;
}

static CATALOG: OnceLock<&'static dyn Catalog> = OnceLock::new();

/// Installs the command table; later calls keep the first (there is one table per process).
pub(crate) fn install(catalog: &'static dyn Catalog) {
    let _ = CATALOG.set(catalog);
}

/// The installed command table.
///
/// # Panics
///
/// Before [`install`]: the server installs the table before it builds anything that needs it.
pub(crate) fn commands() -> &'static dyn Catalog {
    *CATALOG
        .get()
        .expect("the command table is installed (catalog::install) before use")
}
