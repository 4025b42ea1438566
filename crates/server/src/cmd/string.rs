//! The string command family (owned by the second server engineer).

use super::CommandSpec;

/// The string commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[];
