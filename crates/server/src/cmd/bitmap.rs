//! The bitmap command family (owned by the second server engineer).

use super::CommandSpec;

/// The bitmap commands.
pub(crate) const COMMANDS: &[CommandSpec] = &[];
