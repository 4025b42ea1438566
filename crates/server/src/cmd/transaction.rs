//! The transaction command family.

use super::CommandSpec;

/// The transaction commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[];
