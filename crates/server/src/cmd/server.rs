//! The server command family.

use super::CommandSpec;

/// The server commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[];
